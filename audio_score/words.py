"""Word-level feedback: the reference's words aligned to the learner's, and the word accuracy (1 - WER).

Both texts go through the same Whisper-style normaliser as text similarity, are split on spaces, and are aligned
by rapidfuzz's Levenshtein opcodes over the word lists (a maintained, C++ edit distance; no new dependency).
Each reference word comes out as a ``match``, a ``substitution`` (with what was said instead) or a ``deletion``
(missed); words the learner added are ``insertion``s, in the order they were said.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal

from rapidfuzz.distance import Levenshtein

from audio_score.similarity import normalize_text

WordOp = Literal["match", "substitution", "deletion", "insertion"]


@dataclass(frozen=True)
class WordMark:
    """One step of the alignment: ``word`` is the reference word (None for an insertion), ``said`` what the
    learner said there (None for a deletion)."""

    op: WordOp
    word: str | None
    said: str | None


@dataclass(frozen=True)
class WordAlignment:
    marks: tuple[WordMark, ...]
    reference_words: int

    @property
    def errors(self) -> int:
        return sum(1 for m in self.marks if m.op != "match")

    @property
    def wer(self) -> float:
        """(substitutions + deletions + insertions) / reference words; with no reference words, 0.0 when
        nothing was said either and 1.0 otherwise."""
        if self.reference_words == 0:
            return 0.0 if not self.marks else 1.0
        return self.errors / self.reference_words

    @property
    def word_accuracy(self) -> float:
        """max(0, 1 - WER), in [0, 1]."""
        return max(0.0, 1.0 - self.wer)

    def as_list(self) -> list[dict[str, str | None]]:
        return [asdict(m) for m in self.marks]

    def to_json(self) -> str:
        return json.dumps(self.as_list(), ensure_ascii=False, separators=(",", ":"))


def words_of(text: str) -> list[str]:
    """The normalised words of a text (the same normaliser as text similarity)."""
    return normalize_text(text).split()


def align_words(hypothesis: str, reference: str) -> WordAlignment:
    """Align what was said (``hypothesis``) to the reference text, word by word."""
    said, ref = words_of(hypothesis), words_of(reference)
    marks: list[WordMark] = []
    for op in Levenshtein.opcodes(ref, said):
        ref_part, said_part = ref[op.src_start : op.src_end], said[op.dest_start : op.dest_end]
        if op.tag == "equal":
            marks += [WordMark("match", w, w) for w in ref_part]
        elif op.tag == "delete":
            marks += [WordMark("deletion", w, None) for w in ref_part]
        elif op.tag == "insert":
            marks += [WordMark("insertion", None, w) for w in said_part]
        else:  # replace: pair word for word; any surplus on one side is a deletion or an insertion
            marks += [WordMark("substitution", r, s) for r, s in zip(ref_part, said_part, strict=False)]
            marks += [WordMark("deletion", r, None) for r in ref_part[len(said_part) :]]
            marks += [WordMark("insertion", None, s) for s in said_part[len(ref_part) :]]
    return WordAlignment(marks=tuple(marks), reference_words=len(ref))
