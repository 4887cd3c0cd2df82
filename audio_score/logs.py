"""Structured logs: one line per event, ``key=value`` pairs after the message, so a log search for
``model=whisper-small clip=u1/c2`` finds what happened to that model and clip."""

from __future__ import annotations

import json
import logging
import sys
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class KeyValueFormatter(logging.Formatter):
    """``time level logger message k=v ...``; values with spaces are JSON-quoted."""

    def format(self, record: logging.LogRecord) -> str:
        base = (
            f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name} {record.getMessage()}"
        )
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
        if extras:
            base += " " + " ".join(f"{k}={_fmt(v)}" for k, v in extras.items())
        if record.exc_info:
            base += "\n" + self.formatException(record.exc_info)
        return base


def _fmt(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return json.dumps(text) if (" " in text or "=" in text or not text) else text


def configure_logging(level: str | int = "INFO") -> None:
    """Install the key=value formatter on the root logger once (idempotent)."""
    root = logging.getLogger()
    if not any(getattr(h, "_audio_score", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(KeyValueFormatter())
        handler._audio_score = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # httpx logs every request at INFO: the router's own lines already say what happened to each one.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Whisper's generate() warns about its own internal arguments on every call (every batch in a predictor).
    logging.getLogger("transformers.generation.utils").setLevel(logging.ERROR)
