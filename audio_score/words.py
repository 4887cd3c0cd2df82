"""Word-level feedback: the reference's words aligned to the learner's, and the word accuracy (1 - WER).

Both texts are split into words as written, each with its Whisper-normalised tokens (:func:`audio_score.textnorm.
units`: "it's" -> it is, "5" -> 5, "five" -> 5), and aligned token by token by RapidFuzz's Levenshtein opcodes
(a maintained C++ edit distance). The marks are then per reference word as written: a ``match`` when all its
tokens were said (so "5" read as "five", "we're" heard as "we are" match), a ``substitution`` (with what was said
instead, as the transcript wrote it) or a ``deletion`` (missed); words the learner added are ``insertion``\\ s, in
the order they were said. Word accuracy counts marks, not tokens: a perfect reading of "it's" is one right word.

Heard like the reference (``reference_transcript``): the recogniser may write the reference clip itself
differently from its text file (a name it spells otherwise, a word it always mishears, a word the speaker in the
clip skipped). The reference transcript is aligned to the reference text once; a learner's substitution, deletion
or insertion that the reference's own transcript makes at the same place (the same reference word, or the same
gap between two, with the same normalised words said) counts as a match. So a clip scored against itself matches
every word, and a learner heard the way the reference was heard is not marked down for the recogniser's habits.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from rapidfuzz.distance import Levenshtein

from audio_score.contract import WordOp
from audio_score.textnorm import Unit, units


@dataclass(frozen=True)
class WordMark:
    """One step of the alignment: ``word`` is the reference word as written (None for an insertion), ``said``
    what the learner said there as the transcript wrote it (None for a deletion, and for a reference word the
    reference's own transcript also lacks)."""

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


@dataclass(frozen=True)
class _Step:
    """A mark before forgiveness: ``place`` is the reference word's index, or for an insertion the index of the
    next reference word (the gap it falls in); ``said`` the normalised tokens said there."""

    op: WordOp
    place: int
    word: str | None
    said_as_written: str | None
    said: tuple[str, ...]

    @property
    def key(self) -> tuple[str, int, tuple[str, ...]]:
        return (self.op, self.place, self.said)


def _join(parts: list[str]) -> str | None:
    out: list[str] = []
    for p in parts:
        if not out or out[-1] != p:
            out.append(p)
    return " ".join(out) or None


def _steps(ref: tuple[Unit, ...], hyp: tuple[Unit, ...]) -> list[_Step]:
    """Token-level alignment of ``hyp`` to ``ref``, read back as one step per reference word and insertion."""
    ref_of = [i for i, u in enumerate(ref) for _ in u.tokens]
    hyp_of = [j for j, u in enumerate(hyp) for _ in u.tokens]
    ref_tok = [t for u in ref for t in u.tokens]
    hyp_tok = [t for u in hyp for t in u.tokens]
    # (reference token, hypothesis token, equal) in reading order
    pairs: list[tuple[int | None, int | None, bool]] = []
    for op in Levenshtein.opcodes(ref_tok, hyp_tok):
        rs, hs = list(range(op.src_start, op.src_end)), list(range(op.dest_start, op.dest_end))
        if op.tag == "equal":
            pairs += [(a, b, True) for a, b in zip(rs, hs, strict=True)]
        else:
            n = min(len(rs), len(hs))
            pairs += [(a, b, False) for a, b in zip(rs[:n], hs[:n], strict=True)]
            pairs += [(a, None, False) for a in rs[n:]]
            pairs += [(None, b, False) for b in hs[n:]]
    # Which reference word each pair belongs to: an inserted token inside a word's tokens belongs to that word.
    owner: list[int | None] = [ref_of[r] if r is not None else None for r, _, _ in pairs]
    for k, (ref_token, _, _) in enumerate(pairs):
        if ref_token is None:
            before = next((owner[i] for i in range(k - 1, -1, -1) if pairs[i][0] is not None), None)
            after = next((ref_of[p[0]] for p in pairs[k + 1 :] if p[0] is not None), None)
            owner[k] = before if before is not None and before == after else None
    steps: list[_Step] = []
    k = 0
    while k < len(pairs):
        end = k + 1
        while end < len(pairs) and owner[end] == owner[k] and (owner[k] is not None or pairs[end][0] is None):
            end += 1
        chunk = pairs[k:end]
        said_tok = tuple(hyp_tok[h] for _, h, _ in chunk if h is not None)
        said_units = [hyp_of[h] for _, h, _ in chunk if h is not None]
        unit = owner[k]
        if unit is None:  # an insertion between reference words: one step per word said
            gap = next((ref_of[p[0]] for p in pairs[end:] if p[0] is not None), len(ref))
            for j in dict.fromkeys(said_units):
                toks = tuple(hyp_tok[h] for _, h, _ in chunk if h is not None and hyp_of[h] == j)
                written = hyp[j].surface if toks == hyp[j].tokens else " ".join(toks)
                steps.append(_Step("insertion", gap, None, written, toks))
        else:
            said = _join([hyp[j].surface for j in said_units])
            if all(eq for _, _, eq in chunk):
                kind: WordOp = "match"
            elif not said_tok:
                kind = "deletion"
            else:
                kind = "substitution"
            steps.append(_Step(kind, unit, ref[unit].surface, said, said_tok))
        k = end
    return steps


def align_words(
    hypothesis: str, reference: str, *, reference_transcript: str | None = None, language: str | None = None
) -> WordAlignment:
    """Align what was said (``hypothesis``) to the reference text, word by word, normalised for ``language``
    (None: English). With ``reference_transcript`` (what the recogniser heard in the reference clip), a
    difference the reference's own transcript makes at the same place is a match (see the module docstring)."""
    ref = units(reference, language)
    steps = _steps(ref, units(hypothesis, language))
    forgiven: set[tuple[str, int, tuple[str, ...]]] = set()
    if reference_transcript is not None:
        forgiven = {s.key for s in _steps(ref, units(reference_transcript, language)) if s.op != "match"}
    marks: list[WordMark] = []
    for s in steps:
        if s.op != "match" and s.key in forgiven:
            # Heard as the reference was heard: right. A forgiven insertion is a word of the reference clip.
            marks.append(WordMark("match", s.word if s.word is not None else s.said_as_written, s.said_as_written))
        else:
            marks.append(WordMark(s.op, s.word, s.said_as_written))
    return WordAlignment(marks=tuple(marks), reference_words=sum(1 for m in marks if m.word is not None))
