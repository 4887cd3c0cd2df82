"""The one interface every model type implements, and what it returns per clip or upload.

Reference clips (cache Job) and uploads (predictor) go through the same ``Backend.embed`` call, so a clip scored
against itself gives 1.0. This module imports no torch: the router and the cache reader use its types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from audio_score.settings import ModelSpec

#: Bump when pooling, frame selection or decoding settings change; it is part of every cache fingerprint.
FEATURE_VERSION = 2  # 2: decoding guard (duration budget, loop cut, no-speech, per-item language)


@dataclass(frozen=True)
class Features:
    """A backend's answer for one waveform.

    ``embedding`` is the mean of the encoder's hidden states over the frames that hold audio (never over
    Whisper's padding to 30 s); ``frames`` are those hidden states, one row per frame. The decoding guard
    (:mod:`audio_score.backends.guard`) sets the flags: ``no_speech`` (then ``transcript`` is empty), ``looped``
    (then ``transcript`` is the text before the repeats); ``language`` is the code the transcript was decoded in
    ("en" for English-only checkpoints, None where the checkpoint does not say). ``avg_logprob`` is the
    recogniser's confidence in ``transcript``: Whisper's mean token log-probability (end-of-text included) of what
    it decoded, None where the backend has no recogniser's figure. ``forced_scores`` has one entry per text the
    caller gave in ``forced_texts`` (:meth:`Backend.embed`): how well this audio supports that text by the
    recogniser's own reckoning (:func:`audio_score.backends.forced.relative_likelihood`), None where it cannot
    be told (an empty text, one longer than the decoder takes, a backend with no recogniser).
    """

    transcript: str  # "" when no_speech; the text before the loop when looped
    embedding: np.ndarray
    frames: np.ndarray
    no_speech: bool = False  # Whisper's no-speech rule (no_speech_prob and avg logprob) said nothing was spoken
    looped: bool = False  # a repetition loop / hallucination was detected and cut
    language: str | None = None  # language code the transcript was decoded in; None for English-only/legacy
    avg_logprob: float | None = None  # mean token log-probability of the decoded transcript (<= 0); None: unknown
    forced_scores: tuple[float | None, ...] = ()  # one per text of forced_texts[i], in [0, 1]


@dataclass(frozen=True)
class ReferenceFeatures:
    """A backend's answer for one reference clip (:meth:`Backend.embed_reference`): its features, the text its
    words were timed in, and the model's own (start, end) in seconds for each whitespace-separated word of that
    text, or None when this model cannot time words (then the cache falls back; see
    :mod:`audio_score.reference_word_times`)."""

    features: Features
    text: str
    word_spans: tuple[tuple[float, float], ...] | None = None


class Backend(ABC):
    """A loaded model: waveforms in, :class:`Features` out, in one batched call."""

    spec: ModelSpec
    sampling_rate: int
    device: str
    #: Milliseconds of audio per row of ``Features.frames`` (Whisper's encoder: 20 ms; Higgs pools pairs: 40 ms).
    frame_ms: float = 20.0

    @property
    def key(self) -> str:
        return self.spec.key

    @property
    @abstractmethod
    def fingerprint(self) -> dict[str, Any]:
        """What identifies the features this backend computes; a change makes cached entries stale."""

    @property
    @abstractmethod
    def embedding_dim(self) -> int:
        """Size of the pooled embedding."""

    @abstractmethod
    def embed(
        self,
        waveforms: Sequence[np.ndarray],
        *,
        max_new_tokens: int | None = None,
        languages: Sequence[str | None] | None = None,
        forced_texts: Sequence[Sequence[str]] | None = None,
    ) -> list[Features]:
        """Features for each mono float32 waveform at ``sampling_rate``, computed as one batch.

        ``max_new_tokens`` lowers the transcript's token budget for this call only (the load-time warm-up uses a
        few tokens: it proves decoding runs, not how long it goes); None keeps the model's setting.
        ``languages[i]`` forces item i's language on a multilingual checkpoint (None: detected from its audio);
        the model's configured ``language`` wins over it, English-only checkpoints ignore it.
        ``forced_texts[i]``: texts item i is expected to say (its reference's text and transcript), each scored
        in ``Features.forced_scores`` by reading it through the recogniser on item i's audio (teacher forcing:
        no search, so a reading the greedy decoder mis-hears is still measured); None or empty: none.
        """

    def embed_reference(self, waveforms: Sequence[np.ndarray], texts: Sequence[str | None]) -> list[ReferenceFeatures]:
        """:meth:`embed` for reference clips (the cache build only), plus the model's own timing of each clip's
        words: ``texts[i]`` (the clip's reference text), or its transcript where that is None. Uploads go
        through :meth:`embed`, which never times words, so scoring an upload pays nothing for this.

        The default times nothing (``word_spans`` None); a backend whose model can time words overrides it.
        """
        features = self.embed(waveforms)
        return [
            ReferenceFeatures(f, t if t is not None else f.transcript) for f, t in zip(features, texts, strict=True)
        ]

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory; the default does nothing."""
