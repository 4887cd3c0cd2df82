"""Where each word of a reference clip starts and ends: the timeline that per-word feedback maps onto a take.

A cache entry holds one :class:`WordTimes` per reference, computed when the entry is built, with the words the
word marks use (the reference text's words as written, :func:`audio_score.textnorm.units`' ``surface``; the
reference transcript's when the clip has no text) and the source the times came from, so a change of source can
be seen in the entry's fingerprint and nothing stale is served.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal, get_args

#: Where the times came from, best first: a per-word subtitle file beside the clip, the transcribing model's own
#: word timing (Whisper's cross-attention alignment), or words spread over the voiced regions by length.
WordTimeSource = Literal["subtitles", "model", "voiced"]
WORD_TIME_SOURCES: tuple[str, ...] = get_args(WordTimeSource)


@dataclass(frozen=True)
class WordTime:
    """One reference word as written, and its span in the reference clip in seconds (``start <= end``)."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class WordTimes:
    """Every reference word in reading order, and where their times came from."""

    words: tuple[WordTime, ...]
    source: WordTimeSource

    def __post_init__(self) -> None:
        if self.source not in WORD_TIME_SOURCES:
            raise ValueError(f"word time source {self.source!r}: one of {', '.join(WORD_TIME_SOURCES)}")
        for w in self.words:
            if not (0.0 <= w.start <= w.end):
                raise ValueError(f"word {w.word!r}: span {w.start}-{w.end} s is not 0 <= start <= end")

    def as_dict(self) -> dict[str, Any]:
        return {"source": self.source, "words": [[w.word, round(w.start, 4), round(w.end, 4)] for w in self.words]}

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WordTimes:
        """The inverse of :meth:`as_dict`; ``ValueError`` on anything else (a damaged entry is rebuilt, not served)."""
        try:
            words = tuple(WordTime(str(w), float(s), float(e)) for w, s, e in data["words"])
            return cls(words=words, source=data["source"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"word times: {exc}") from exc

    @classmethod
    def from_json(cls, text: str) -> WordTimes:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"word times: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("word times: not a JSON object")
        return cls.from_dict(data)
