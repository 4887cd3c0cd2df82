"""Structured logs: one line per event, ``key=value`` pairs after the message, so a log search for
``model=whisper-small clip=u1/c2`` finds what happened to that model and clip.

Values and messages often carry what a caller sent (a uid, a path, an error that quotes them), so the formatter
never lets them shape the log: control characters (newlines included) are escaped in the message and in every
value, a value is JSON-quoted whenever it holds anything that could read as another field, and long values and
messages are cut (a megabyte uid must not become a megabyte log line). A traceback is the one multi-line part;
its lines are indented, so no line of it can pass for an event.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}

#: Longest value and message kept whole; the rest is cut with "…(N chars)".
VALUE_LIMIT = 256
MESSAGE_LIMIT = 2048
#: C0/C1 control characters, Unicode line/paragraph separators and bidi overrides: whatever can break a line
#: or make a terminal show something other than what was logged.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: Characters that make a value ambiguous unless quoted.
_NEEDS_QUOTES = re.compile(r'[\s="\\]')


def escape_control(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return _CONTROL.sub(lambda m: _NAMED.get(m.group(), m.group().encode("unicode_escape").decode("ascii")), text)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


class KeyValueFormatter(logging.Formatter):
    """``time level logger message k=v ...`` on one line; values with spaces, quotes or control characters are
    JSON-quoted, every control character is escaped."""

    def format(self, record: logging.LogRecord) -> str:
        message = escape_control(_cut(record.getMessage(), MESSAGE_LIMIT))
        base = f"{self.formatTime(record, '%Y-%m-%dT%H:%M:%S')} {record.levelname:<7} {record.name} {message}"
        extras = {k: v for k, v in record.__dict__.items() if k not in _RESERVED and not k.startswith("_")}
        if extras:
            base += " " + " ".join(f"{escape_control(k)}={_fmt(v)}" for k, v in extras.items())
        if record.exc_info:
            trace = self.formatException(record.exc_info)
            base += "\n" + "\n".join("    " + escape_control(line) for line in trace.splitlines())
        return base


def _fmt(value: Any) -> str:
    text = _cut(value if isinstance(value, str) else json.dumps(value, default=str), VALUE_LIMIT)
    if not text or _NEEDS_QUOTES.search(text) or _CONTROL.search(text):
        return json.dumps(text)  # escapes quotes, backslashes, control and non-ASCII characters
    return text


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
