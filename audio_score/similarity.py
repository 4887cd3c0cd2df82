"""How close an upload is to a reference: by sound (encoder features) and by words (transcripts).

Audio similarity is the cosine of the two pooled embeddings clipped to [0, 1]. Text similarity compares the
transcripts after Whisper's normalisation (:mod:`audio_score.textnorm`: English rules for English, the basic
normaliser for other languages), in one of two kinds, ``text_similarity`` in config.json:

- ``"word"``: 1 - (word-level Levenshtein distance) / (length of the longer token list), over the normalised
  tokens (RapidFuzz ``Levenshtein.normalized_similarity`` on token lists). Unrelated sentences share few words, so
  they score near 0 (only common words like "the" count).
- ``"char"``: the seed's RapidFuzz ``fuzz.ratio`` / 100 of the normalised strings (an InDel ratio of characters).
  It gives partial credit to a near miss ("wold" for "world") but also about 0.4 to an unrelated sentence, since
  any two English sentences share many letters in order.

The default is the kind that separates right from wrong readings best on the committed speech
(``bench/bench_quality.py``; figures in docs/architecture.md "Scores").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from rapidfuzz import fuzz
from rapidfuzz.distance import Levenshtein

from audio_score.textnorm import normalize_text, tokens

__all__ = [
    "DEFAULT_TEXT_SIMILARITY",
    "TEXT_SIMILARITIES",
    "Scores",
    "TextSimilarity",
    "audio_similarity",
    "normalize_text",
    "score",
    "text_similarity",
]

TextSimilarity = Literal["word", "char"]
TEXT_SIMILARITIES: tuple[TextSimilarity, ...] = ("word", "char")
DEFAULT_TEXT_SIMILARITY: TextSimilarity = "word"


def text_similarity(
    hypothesis: str, reference: str, kind: TextSimilarity = DEFAULT_TEXT_SIMILARITY, language: str | None = None
) -> float:
    """How close two transcripts are, in [0, 1], after normalisation for ``language`` (None: English).

    Two empty transcripts (both clips without words) are identical: 1.0. One empty and one not: 0.0.
    """
    if kind not in TEXT_SIMILARITIES:
        raise ValueError(f"text_similarity {kind!r}: use 'word' or 'char'")
    a, b = tokens(hypothesis, language), tokens(reference, language)
    if not a and not b:
        return 1.0
    if kind == "char":
        return float(fuzz.ratio(" ".join(a), " ".join(b))) / 100.0
    return float(Levenshtein.normalized_similarity(a, b))


def audio_similarity(embedding: np.ndarray, reference: np.ndarray) -> float:
    """Cosine of two pooled embeddings, clipped to [0, 1]; a zero vector gives 0.0.

    Written as ``a.b / sqrt((a.a)(b.b))`` rather than ``a.b / (|a| |b|)``: for identical vectors the second
    rounds to 1 - 2**-53 for about a quarter of all vectors, while ``sqrt(x*x) == x`` exactly in IEEE arithmetic,
    so equal embeddings give exactly 1.0. A clip scored against its own cache entry is therefore exactly 1.0 when
    the two embeddings are bit-identical (batch and single calls are, on the CPU) and within 1e-6 on any machine.
    """
    a = np.asarray(embedding, dtype=np.float64).ravel()
    b = np.asarray(reference, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"embedding sizes differ: {a.shape[0]} vs {b.shape[0]} (different models?)")
    denom = float(np.sqrt(np.dot(a, a) * np.dot(b, b)))
    if denom == 0.0 or not np.isfinite(denom):
        return 0.0
    return float(np.clip(np.dot(a, b) / denom, 0.0, 1.0))


@dataclass(frozen=True)
class Scores:
    """The three numbers of the /score contract."""

    audio_sim_score: float
    text_sim_score: float

    @property
    def sim_score(self) -> float:
        return (self.audio_sim_score + self.text_sim_score) / 2.0

    def as_dict(self) -> dict[str, float]:
        return {
            "sim_score": self.sim_score,
            "audio_sim_score": self.audio_sim_score,
            "text_sim_score": self.text_sim_score,
        }


def score(embedding: np.ndarray, transcript: str, reference_embedding: np.ndarray, reference_transcript: str) -> Scores:
    """Both similarities of an upload against a reference."""
    return Scores(
        audio_sim_score=audio_similarity(embedding, reference_embedding),
        text_sim_score=text_similarity(transcript, reference_transcript),
    )
