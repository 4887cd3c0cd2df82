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
    it decoded, None where the backend has no recogniser's figure.
    """

    transcript: str  # "" when no_speech; the text before the loop when looped
    embedding: np.ndarray
    frames: np.ndarray
    no_speech: bool = False  # Whisper's no-speech rule (no_speech_prob and avg logprob) said nothing was spoken
    looped: bool = False  # a repetition loop / hallucination was detected and cut
    language: str | None = None  # language code the transcript was decoded in; None for English-only/legacy
    avg_logprob: float | None = None  # mean token log-probability of the decoded transcript (<= 0); None: unknown


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
    ) -> list[Features]:
        """Features for each mono float32 waveform at ``sampling_rate``, computed as one batch.

        ``max_new_tokens`` lowers the transcript's token budget for this call only (the load-time warm-up uses a
        few tokens: it proves decoding runs, not how long it goes); None keeps the model's setting.
        ``languages[i]`` forces item i's language on a multilingual checkpoint (None: detected from its audio);
        the model's configured ``language`` wins over it, English-only checkpoints ignore it.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release device memory; the default does nothing."""
