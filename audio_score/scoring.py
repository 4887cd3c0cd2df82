"""Everything /score returns about one upload against one reference: the three contract scores, both audio
similarities, the word-level feedback, and how they were combined.

Which audio similarity feeds ``audio_sim_score`` (and so ``sim_score``) is ``audio_similarity`` in config.json:
``aligned`` (default: frames aligned in time, :mod:`audio_score.alignment`) or ``pooled`` (cosine of the mean
frames, :func:`audio_score.similarity.pooled_cosine`). Which text similarity feeds ``text_sim_score`` is
``text_similarity`` (:mod:`audio_score.similarity`). Both vocabularies are :mod:`audio_score.contract`'s.

How the reference's two texts combine. A clip may have a reference text (a file beside it: the words actually
spoken) and always has its own transcript (what the recogniser heard in it). A learner heard the way the reference
itself was heard is credited: ``text_sim_score`` is the larger of the similarity to the reference text and to the
reference transcript; the word marks are against the reference text, where a difference the reference's own
transcript makes at the same place counts as a match (:mod:`audio_score.words`). Without a reference text both are
against the reference transcript. So a clip scored against itself is exactly 1.0 on every score.

How the decoder's verdicts combine (``no_speech``, ``looped`` from the backend's guard):

- ``no_speech``: nothing was said: every score is 0.0 (sim, audio, both audio kinds, text, word accuracy) and
  every reference word is a deletion; the sound of a hum may resemble the reference's, but it is no reading.
- ``looped`` (a repetition loop was cut) or an empty transcript while speech was heard: the words are unreliable,
  so ``sim_score = audio_sim_score``; the text scores and marks are still computed on the (cut) transcript and
  reported.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from audio_score.alignment import POOL, PreparedFrames, aligned_similarity
from audio_score.contract import (
    AUDIO_SIMILARITY_KINDS,
    DEFAULT_AUDIO_SIMILARITY,
    DEFAULT_TEXT_SIMILARITY,
    TEXT_SIMILARITY_KINDS,
    AudioSimilarity,
    TextSimilarity,
    kinds_text,
)
from audio_score.similarity import pooled_cosine, text_similarity
from audio_score.textnorm import tokens, units
from audio_score.words import WordAlignment, WordMark, align_words


@dataclass(frozen=True)
class Comparison:
    """An upload compared with a reference; every score in [0, 1]."""

    audio_pooled_sim_score: float
    audio_aligned_sim_score: float
    text_sim_score: float
    audio_similarity: AudioSimilarity
    words: WordAlignment
    text_similarity: TextSimilarity = DEFAULT_TEXT_SIMILARITY
    #: The decoder heard no speech: every score is 0.0.
    no_speech: bool = False
    #: The decoder cut a repetition loop: the transcript is what came before it.
    looped: bool = False
    #: Whether the text half counts in ``sim_score`` (False when looped, or nothing was transcribed from speech).
    text_counted: bool = True

    @property
    def audio_sim_score(self) -> float:
        """The configured audio similarity."""
        if self.audio_similarity == "pooled":
            return self.audio_pooled_sim_score
        return self.audio_aligned_sim_score

    @property
    def sim_score(self) -> float:
        if self.no_speech:
            return 0.0
        if not self.text_counted:
            return self.audio_sim_score
        return (self.audio_sim_score + self.text_sim_score) / 2.0

    @property
    def word_accuracy(self) -> float:
        return 0.0 if self.no_speech else self.words.word_accuracy

    def scores(self) -> dict[str, float]:
        """The float scores (each one V2 FP32 output)."""
        return {
            "sim_score": self.sim_score,
            "audio_sim_score": self.audio_sim_score,
            "text_sim_score": self.text_sim_score,
            "audio_pooled_sim_score": self.audio_pooled_sim_score,
            "audio_aligned_sim_score": self.audio_aligned_sim_score,
            "word_accuracy": self.word_accuracy,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.scores(),
            "audio_similarity": self.audio_similarity,
            "text_similarity": self.text_similarity,
            "no_speech": self.no_speech,
            "looped": self.looped,
            "words": self.words.as_list(),
        }


def compare(
    *,
    embedding: np.ndarray,
    frames: np.ndarray | PreparedFrames,
    transcript: str,
    reference_embedding: np.ndarray,
    reference_frames: np.ndarray | PreparedFrames,
    reference_text: str | None,
    reference_transcript: str,
    audio_similarity_kind: AudioSimilarity = DEFAULT_AUDIO_SIMILARITY,
    text_similarity_kind: TextSimilarity = DEFAULT_TEXT_SIMILARITY,
    pool: int = POOL,
    language: str | None = None,
    no_speech: bool = False,
    looped: bool = False,
) -> Comparison:
    """Compare an upload (pooled ``embedding``, ``frames``, ``transcript``) with a reference.

    ``reference_text``: the clip's text file (None: it has none); ``reference_transcript``: the reference clip's
    own transcript. ``pool``: frames averaged before alignment (:func:`audio_score.alignment.pool_for` of the
    backend's frame length). ``language``: the language the upload was heard in (None or "en": English
    normalisation). ``no_speech``/``looped``: the decoder's verdicts (the module docstring says how they count).
    """
    if audio_similarity_kind not in AUDIO_SIMILARITY_KINDS:
        raise ValueError(f"audio_similarity {audio_similarity_kind!r}: use {kinds_text(AUDIO_SIMILARITY_KINDS)}")
    if text_similarity_kind not in TEXT_SIMILARITY_KINDS:
        raise ValueError(f"text_similarity {text_similarity_kind!r}: use {kinds_text(TEXT_SIMILARITY_KINDS)}")
    reference = reference_text if reference_text is not None else reference_transcript
    if no_speech:
        missed = tuple(WordMark("deletion", u.surface, None) for u in units(reference, language))
        return Comparison(
            audio_pooled_sim_score=0.0,
            audio_aligned_sim_score=0.0,
            text_sim_score=0.0,
            audio_similarity=audio_similarity_kind,
            words=WordAlignment(marks=missed, reference_words=len(missed)),
            text_similarity=text_similarity_kind,
            no_speech=True,
            looped=looped,
            text_counted=False,
        )
    text_score = text_similarity(transcript, reference_transcript, text_similarity_kind, language)
    if reference_text is not None:
        text_score = max(text_score, text_similarity(transcript, reference_text, text_similarity_kind, language))
    return Comparison(
        audio_pooled_sim_score=pooled_cosine(embedding, reference_embedding),
        audio_aligned_sim_score=aligned_similarity(frames, reference_frames, pool),
        text_sim_score=text_score,
        audio_similarity=audio_similarity_kind,
        words=align_words(
            transcript,
            reference,
            reference_transcript=reference_transcript if reference_text is not None else None,
            language=language,
        ),
        text_similarity=text_similarity_kind,
        looped=looped,
        text_counted=not looped and bool(tokens(transcript, language)),
    )
