"""Everything /score returns about one upload against one reference: the three contract scores, both audio
similarities, and the word-level feedback.

Which audio similarity feeds ``audio_sim_score`` (and so ``sim_score``) is ``audio_similarity`` in config.json:
``"aligned"`` (default: frames aligned in time, :mod:`audio_score.alignment`) or ``"pooled"`` (cosine of the
mean frames). Text similarity and the word marks compare the upload's transcript with the clip's reference text
when it has one (the words actually spoken, from a file beside the clip), else with the reference's transcript.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from audio_score.alignment import POOL, PreparedFrames, aligned_similarity
from audio_score.similarity import audio_similarity, text_similarity
from audio_score.words import WordAlignment, align_words

AudioSimilarity = Literal["aligned", "pooled"]
AUDIO_SIMILARITIES: tuple[AudioSimilarity, ...] = ("aligned", "pooled")
DEFAULT_AUDIO_SIMILARITY: AudioSimilarity = "aligned"


@dataclass(frozen=True)
class Comparison:
    """An upload compared with a reference; every score in [0, 1]."""

    audio_pooled_sim_score: float
    audio_aligned_sim_score: float
    text_sim_score: float
    audio_similarity: AudioSimilarity
    words: WordAlignment

    @property
    def audio_sim_score(self) -> float:
        """The configured audio similarity."""
        if self.audio_similarity == "pooled":
            return self.audio_pooled_sim_score
        return self.audio_aligned_sim_score

    @property
    def sim_score(self) -> float:
        return (self.audio_sim_score + self.text_sim_score) / 2.0

    @property
    def word_accuracy(self) -> float:
        return self.words.word_accuracy

    @property
    def text_similarity(self) -> str:
        """The text similarity kind behind text_sim_score (only the seed's character ratio here)."""
        return "char"

    def scores(self) -> dict[str, float]:
        return {
            "sim_score": self.sim_score,
            "audio_sim_score": self.audio_sim_score,
            "text_sim_score": self.text_sim_score,
            "audio_pooled_sim_score": self.audio_pooled_sim_score,
            "audio_aligned_sim_score": self.audio_aligned_sim_score,
            "word_accuracy": self.word_accuracy,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.scores(), "audio_similarity": self.audio_similarity, "words": self.words.as_list()}


def compare(
    *,
    embedding: np.ndarray,
    frames: np.ndarray | PreparedFrames,
    transcript: str,
    reference_embedding: np.ndarray,
    reference_frames: np.ndarray | PreparedFrames,
    reference_text: str | None,
    reference_transcript: str = "",
    audio_similarity_kind: AudioSimilarity = DEFAULT_AUDIO_SIMILARITY,
    pool: int = POOL,
    language: str | None = None,
    no_speech: bool = False,
    looped: bool = False,
) -> Comparison:
    """Compare an upload (pooled ``embedding``, ``frames``, ``transcript``) with a reference; ``reference_text``
    is the clip's text file when it has one, else its transcript. ``pool``: frames averaged before alignment
    (:func:`audio_score.alignment.pool_for` of the backend's frame length)."""
    if audio_similarity_kind not in AUDIO_SIMILARITIES:
        raise ValueError(f"audio_similarity {audio_similarity_kind!r}: use 'aligned' or 'pooled'")
    # language, no_speech and looped are taken for the scoring policy of issue 15 (text helper's compare).
    if reference_text is None:
        reference_text = reference_transcript
    return Comparison(
        audio_pooled_sim_score=audio_similarity(embedding, reference_embedding),
        audio_aligned_sim_score=aligned_similarity(frames, reference_frames, pool),
        text_sim_score=text_similarity(transcript, reference_text),
        audio_similarity=audio_similarity_kind,
        words=align_words(transcript, reference_text),
    )
