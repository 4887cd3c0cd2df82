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

What the recogniser wrote, and what it finds in the audio. ``text_transcript_score`` is the string similarity
above (what the greedy decoder wrote, against the reference's texts). With ``forced_text`` (config.json, on by
default) the backend also reads each of the reference's texts through the decoder on the upload's audio
(:mod:`audio_score.backends.forced`): ``text_forced_score`` is the better of the two, and ``text_sim_score`` is
the mean of ``text_transcript_score`` and ``text_forced_score``. Why: the greedy decoder, thrown off by one
accented word, can write a sentence unrelated to the one it heard; the forced reading does not search, so it
still measures how well the audio carries the reference's words, and it gives an unrelated sentence almost
nothing (where the string similarity keeps a floor). Both stay in [0, 1], and the reference against itself is
1.0 on both. Without a forced score (``forced_text`` off, a backend with no recogniser, texts the decoder cannot
take) ``text_sim_score`` is ``text_transcript_score``, the seed's meaning. The word marks and ``word_accuracy``
stay on the transcript: they say which words were heard.

How the decoder's verdicts combine (``no_speech``, ``looped`` from the backend's guard):

- ``no_speech``: nothing was said: every score is 0.0 (sim, audio, both audio kinds, text, word accuracy) and
  every reference word is a deletion; the sound of a hum may resemble the reference's, but it is no reading.
- ``looped`` (a repetition loop was cut) or an empty transcript while speech was heard: the transcript is
  unreliable. With a forced score, ``text_sim_score`` is ``text_forced_score`` alone (the forced reading does not
  depend on the transcript) and ``sim_score`` the usual mean; without one, ``sim_score = audio_sim_score``. The
  transcript's similarity and the marks are still computed on the (cut) transcript and reported.

Per-word feedback (:mod:`audio_score.word_feedback`) needs the reference's word times (``reference_word_times``).
Without them (an entry built before they existed) the answer is as before: ``words`` items have only ``op``,
``word``, ``said`` and there are no timing fields. With them, every item of a reference word gains its learner
span, reference span, ``audio_score``, ``lag`` and ``left_out`` (an insertion gains the same keys, null, and
``left_out`` false), and the comparison carries ``rate``, ``pauses`` and ``timing_score``. No speech: every word
left out, ``timing_score`` 0.0 (every score is 0.0). Word times that do not fit the marks (another text) are not
used: the answer is as without them, and so are word times with no words (a reference that says nothing).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio_score.alignment import POOL, PreparedFrames, aligned_paths, aligned_similarity
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
from audio_score.word_feedback import WordFeedback, nothing_said, word_feedback
from audio_score.word_times import WordTimes
from audio_score.words import WordAlignment, WordMark, align_words

#: Milliseconds per row of the frames ``compare`` is given when the caller does not say (Whisper's encoder).
DEFAULT_FRAME_MS = 20.0


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
    #: Whether the text half counts in ``sim_score`` (False when the transcript looped or nothing was transcribed
    #: from speech, and there is no forced score to stand in for it).
    text_counted: bool = True
    #: Per-word feedback against the reference's word times (None: the reference has none).
    feedback: WordFeedback | None = None
    #: The string similarity of the transcript alone (None: as ``text_sim_score``, no forced score was given).
    text_transcript_score: float | None = None
    #: How well the audio supports the reference's texts (:mod:`audio_score.backends.forced`); None: not measured.
    text_forced_score: float | None = None

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
            **({} if self.text_transcript_score is None else {"text_transcript_score": self.text_transcript_score}),
            **({} if self.text_forced_score is None else {"text_forced_score": self.text_forced_score}),
        }

    def word_list(self) -> list[dict[str, Any]]:
        """The word marks; with feedback, each reference word's item merged with its :class:`WordTiming`."""
        marks: list[dict[str, Any]] = [dict(m) for m in self.words.as_list()]
        if self.feedback is None:
            return marks
        timings = iter(self.feedback.words)
        blank: dict[str, Any] = dict.fromkeys(("start", "end", "ref_start", "ref_end", "audio_score", "lag"))
        for item, owner in zip(marks, _reference_owner(self.words.marks, self.feedback), strict=True):
            item.update(next(timings).as_dict() if owner else {**blank, "left_out": False})
        return marks

    def words_json(self) -> str:
        """:meth:`word_list` as the V2 ``words`` output carries it."""
        return json.dumps(self.word_list(), ensure_ascii=False, separators=(",", ":"))

    def timing(self) -> dict[str, Any]:
        """``timing_score``, ``rate`` (None: no word said) and ``pauses`` (list); empty without feedback."""
        if self.feedback is None:
            return {}
        return {
            "timing_score": self.feedback.timing_score,
            "rate": self.feedback.rate,
            "pauses": [p.as_dict() for p in self.feedback.pauses],
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            **self.scores(),
            "audio_similarity": self.audio_similarity,
            "text_similarity": self.text_similarity,
            "no_speech": self.no_speech,
            "looped": self.looped,
            "words": self.word_list(),
            **self.timing(),
        }


def _reference_owner(marks: tuple[WordMark, ...], feedback: WordFeedback) -> list[bool]:
    """Which marks are the reference words of the word times, in order (the rest are insertions, and a forgiven
    insertion shown as a match of the reference clip's transcript's words, which the times do not have)."""
    owners: list[bool] = []
    k = 0
    for mark in marks:
        mine = mark.word is not None and k < len(feedback.words) and mark.word == feedback.words[k].word
        owners.append(mine)
        k += mine
    return owners


def _fits(marks: tuple[WordMark, ...], times: WordTimes) -> list[bool] | None:
    """Whether each word of ``times`` was left out (its mark is a deletion), or None when the times are not the
    marks' reference words (another text: not used)."""
    flags: list[bool] = []
    for mark in marks:
        if len(flags) < len(times.words) and mark.word is not None and mark.word == times.words[len(flags)].word:
            flags.append(mark.op == "deletion")
    return flags if len(flags) == len(times.words) else None


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
    reference_word_times: WordTimes | None = None,
    frame_ms: float = DEFAULT_FRAME_MS,
    forced_scores: Sequence[float | None] = (),
) -> Comparison:
    """Compare an upload (pooled ``embedding``, ``frames``, ``transcript``) with a reference.

    ``reference_text``: the clip's text file (None: it has none); ``reference_transcript``: the reference clip's
    own transcript. ``pool``: frames averaged before alignment (:func:`audio_score.alignment.pool_for` of the
    backend's frame length). ``language``: the language the upload was heard in (None or "en": English
    normalisation). ``no_speech``/``looped``: the decoder's verdicts (the module docstring says how they count).
    ``reference_word_times``: the reference's word times (None: no per-word feedback); ``frame_ms``: milliseconds
    per row of ``frames`` (the backend's ``frame_ms``), so that an aligned frame lasts ``pool * frame_ms``.
    ``forced_scores``: the backend's ``Features.forced_scores`` for :func:`forced_texts` of this reference (empty:
    none measured; the module docstring says how they count).
    """
    if audio_similarity_kind not in AUDIO_SIMILARITY_KINDS:
        raise ValueError(f"audio_similarity {audio_similarity_kind!r}: use {kinds_text(AUDIO_SIMILARITY_KINDS)}")
    if text_similarity_kind not in TEXT_SIMILARITY_KINDS:
        raise ValueError(f"text_similarity {text_similarity_kind!r}: use {kinds_text(TEXT_SIMILARITY_KINDS)}")
    reference = reference_text if reference_text is not None else reference_transcript
    measured = [f for f in forced_scores if f is not None]
    forced = max(measured) if measured else None
    if no_speech:
        missed = tuple(WordMark("deletion", u.surface, None) for u in units(reference, language))
        times = reference_word_times if reference_word_times is not None and reference_word_times.words else None
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
            feedback=nothing_said(times) if times is not None and _fits(missed, times) is not None else None,
            text_transcript_score=None if forced is None else 0.0,
            text_forced_score=None if forced is None else 0.0,
        )
    text_score = text_similarity(transcript, reference_transcript, text_similarity_kind, language)
    if reference_text is not None:
        text_score = max(text_score, text_similarity(transcript, reference_text, text_similarity_kind, language))
    transcript_score = text_score
    # The transcript is unreliable when it looped or is empty although speech was heard; the forced reading does
    # not depend on it (no search, nothing to loop), so it is then the text half alone.
    text_counted = not looped and bool(tokens(transcript, language))
    if forced is not None:
        text_score = (transcript_score + forced) / 2.0 if text_counted else forced
    words = align_words(
        transcript,
        reference,
        reference_transcript=reference_transcript if reference_text is not None else None,
        language=language,
    )
    left_out = _fits(words.marks, reference_word_times) if reference_word_times else None
    feedback = None
    if reference_word_times is not None and reference_word_times.words and left_out is not None:
        paths = aligned_paths(frames, reference_frames, pool)
        if paths is None:
            aligned, feedback = (aligned_similarity(frames, reference_frames, pool), nothing_said(reference_word_times))
        else:
            aligned = paths.score
            feedback = word_feedback(paths, reference_word_times, pool * frame_ms / 1000.0, left_out)
    else:
        aligned = aligned_similarity(frames, reference_frames, pool)
    return Comparison(
        audio_pooled_sim_score=pooled_cosine(embedding, reference_embedding),
        audio_aligned_sim_score=aligned,
        text_sim_score=text_score,
        audio_similarity=audio_similarity_kind,
        words=words,
        text_similarity=text_similarity_kind,
        looped=looped,
        text_counted=text_counted or forced is not None,
        feedback=feedback,
        text_transcript_score=None if forced is None else transcript_score,
        text_forced_score=forced,
    )


def forced_texts(reference_text: str | None, reference_transcript: str) -> tuple[str, ...]:
    """The texts an upload is read against for ``forced_scores`` (:meth:`Backend.embed`'s ``forced_texts``): the
    reference text and the reference's own transcript (a learner heard the way the reference was heard is
    credited, as for the transcript similarity), the empty and repeated ones left out."""
    texts = [t.strip() for t in (reference_text or "", reference_transcript)]
    return tuple(dict.fromkeys(t for t in texts if t))
