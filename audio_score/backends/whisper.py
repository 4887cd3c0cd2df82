"""Whisper: encoder hidden states pooled over the frames that hold audio, transcripts by batched ``generate``.

The encoder runs once per batch; its output feeds both the pooled embedding and ``generate`` (passed as
``encoder_outputs``), so transcription does not run the encoder a second time. Which arguments ``generate`` gets
(task/language or neither, and the token budget) is decided once per checkpoint at load
(:mod:`audio_score.backends.whisper_prompt`), so multilingual, English-only and legacy checkpoints all work.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from audio_score.backends.base import FEATURE_VERSION, Backend, Features
from audio_score.backends.checkpoint import checkpoint_identity
from audio_score.backends.whisper_prompt import plan_decoding
from audio_score.settings import ModelSpec, Settings

log = logging.getLogger(__name__)


def encoder_frames_with_audio(mel_frames: int, total: int, pool: int = 1) -> int:
    """Encoder frames covering ``mel_frames`` of real audio: Whisper's conv stem halves the rate, a pooler
    (Higgs/Qwen2-Audio) divides it again. At least one frame, at most the whole window."""
    frames = math.ceil(mel_frames / 2)
    frames = math.ceil(frames / pool)
    return max(1, min(total, frames))


def pool_frames(hidden: torch.Tensor, lengths: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per item: (mean over its first ``length`` frames as float32, those frames as float16)."""
    out = []
    for row, length in zip(hidden, lengths, strict=True):
        frames = row[:length].float()
        out.append((frames.mean(dim=0).cpu().numpy(), frames.to(torch.float16).cpu().numpy()))
    return out


class WhisperRunner:
    """A Whisper checkpoint on a device: log-mel, encoder and batched greedy transcription."""

    def __init__(
        self,
        ref: str,
        *,
        revision: str | None,
        device: str,
        language: str | None,
        max_new_tokens: int,
    ) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        # transformers' own default when no revision is pinned (its signatures take a str, not None).
        hub_revision = "main" if revision is None else revision
        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(ref, revision=hub_revision)
        self.tokenizer = AutoTokenizer.from_pretrained(ref, revision=hub_revision)
        self.model = WhisperForConditionalGeneration.from_pretrained(ref, revision=hub_revision, dtype=self.dtype)
        # transformers wraps Module.to with functools.wraps, so its stub reads as unbound (self = the device).
        self.model.to(device).eval()  # type: ignore[arg-type]
        self.language = language
        self.plan = plan_decoding(
            self.model.generation_config, self.model.config, language=language, max_new_tokens=max_new_tokens
        )
        self.max_new_tokens = self.plan.max_new_tokens
        for note in self.plan.notes:
            log.warning("whisper decoding adjusted", extra={"checkpoint": ref, "kind": self.plan.kind, "note": note})
        log.info(
            "whisper decoding",
            extra={
                "checkpoint": ref,
                "kind": self.plan.kind,
                "generate_kwargs": self.plan.generate_kwargs,
                "prompt_tokens": len(self.plan.prompt),
                "max_new_tokens": self.max_new_tokens,
            },
        )
        self.identity = checkpoint_identity(ref, revision, getattr(self.model.config, "_commit_hash", None))

    @property
    def sampling_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    def log_mel(self, waveforms: Sequence[np.ndarray]) -> tuple[torch.Tensor, list[int]]:
        """Padded log-mel (computed on the model's device) and the number of mel frames holding audio."""
        batch = self.feature_extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            return_attention_mask=True,
            device=self.device,
        )
        mel_frames = batch["attention_mask"].sum(dim=-1).tolist()
        return batch["input_features"].to(self.device, self.dtype), [int(n) for n in mel_frames]

    def encode(self, input_features: torch.Tensor) -> torch.Tensor:
        return self.model.get_encoder()(input_features).last_hidden_state

    def transcribe(self, encoder_hidden: torch.Tensor, max_new_tokens: int | None = None) -> list[str]:
        """Greedy transcripts; ``max_new_tokens`` may lower (never raise) the checkpoint's budget for this call."""
        from transformers.modeling_outputs import BaseModelOutput

        budget = self.max_new_tokens if max_new_tokens is None else min(max_new_tokens, self.max_new_tokens)
        tokens = self.model.generate(
            encoder_outputs=BaseModelOutput(last_hidden_state=encoder_hidden),
            max_new_tokens=budget,
            do_sample=False,
            num_beams=1,
            **self.plan.generate_kwargs,
        )
        return [text.strip() for text in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]


class WhisperBackend(Backend):
    """``type: whisper`` in config.json."""

    def __init__(self, spec: ModelSpec, settings: Settings, device: str) -> None:
        self.spec = spec
        self.device = device
        self.runner = WhisperRunner(
            settings.resolve_model_ref(spec.model_id),
            revision=spec.revision,
            device=device,
            language=spec.language,
            max_new_tokens=spec.max_new_tokens,
        )
        self.sampling_rate = self.runner.sampling_rate
        if self.sampling_rate != settings.target_sampling_rate:
            raise ValueError(
                f"the feature extractor expects {self.sampling_rate} Hz but target_sampling_rate is "
                f"{settings.target_sampling_rate}; set target_sampling_rate to {self.sampling_rate}"
            )
        self._fingerprint = {
            "type": "whisper",
            "model_id": spec.model_id,
            "revision": self.runner.identity,
            "language": spec.language,
            "max_new_tokens": spec.max_new_tokens,
            "feature_version": FEATURE_VERSION,
        }

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    @property
    def embedding_dim(self) -> int:
        return int(self.runner.model.config.d_model)

    @torch.inference_mode()
    def embed(self, waveforms: Sequence[np.ndarray], *, max_new_tokens: int | None = None) -> list[Features]:
        if not waveforms:
            return []
        features, mel_frames = self.runner.log_mel(waveforms)
        hidden = self.runner.encode(features)
        lengths = [encoder_frames_with_audio(n, hidden.shape[1]) for n in mel_frames]
        transcripts = self.runner.transcribe(hidden, max_new_tokens)
        return [
            Features(transcript=text, embedding=emb, frames=frames)
            for text, (emb, frames) in zip(transcripts, pool_frames(hidden, lengths), strict=True)
        ]

    def close(self) -> None:
        del self.runner
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
