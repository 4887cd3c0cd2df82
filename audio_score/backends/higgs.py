"""Higgs-Audio v2: its Whisper-style audio tower for features, a Whisper model for transcripts.

Only the ``audio_tower.*`` tensors are read from the checkpoint (shards without them are never opened), so the
3B language model is never loaded. The tower has the layout of transformers' ``Qwen2AudioEncoder``: a Whisper
encoder followed by an average pooler that halves the frame rate once more.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from audio_score.backends.base import FEATURE_VERSION, Backend, Features
from audio_score.backends.checkpoint import checkpoint_file, checkpoint_identity
from audio_score.backends.whisper import (
    WhisperRunner,
    encoder_frames_with_audio,
    forced_for,
    pool_frames,
    transcribed_features,
)
from audio_score.env_settings import PartEnv
from audio_score.errors import ModelLoadError
from audio_score.settings import ModelSpec, Settings

TOWER_PREFIX = "audio_tower."
#: A published Higgs-Audio v2 checkpoint that ships the audio tower (bosonai/higgs-audio-v2-generation-3B-base
#: is saved with skip_audio_tower: true and has none).
TOWER_CHECKPOINT = "bosonai/higgs-audio-v2-understanding-3B"
_NOT_ENCODER_KEYS = {"model_type", "architectures", "transformers_version"}


def tower_shards(ref: str, revision: str | None) -> list[str]:
    """The safetensors files that hold ``audio_tower.*`` tensors, from the index when there is one."""
    index = checkpoint_file(ref, "model.safetensors.index.json", revision)
    if index is not None:
        weight_map: dict[str, str] = json.loads(index.read_text())["weight_map"]
        return sorted({f for k, f in weight_map.items() if k.startswith(TOWER_PREFIX)})
    return ["model.safetensors"] if checkpoint_file(ref, "model.safetensors", revision) else []


def load_tower_state(ref: str, revision: str | None) -> dict[str, torch.Tensor]:
    """The tower's tensors with the prefix stripped, read lazily from only the shards that hold them."""
    from safetensors import safe_open

    state: dict[str, torch.Tensor] = {}
    for name in tower_shards(ref, revision):
        path = checkpoint_file(ref, name, revision)
        if path is None:
            raise ModelLoadError(f"{ref}: shard {name} listed in the index is missing")
        with safe_open(str(path), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 - safe_open has no __iter__
                if key.startswith(TOWER_PREFIX):
                    state[key[len(TOWER_PREFIX) :]] = handle.get_tensor(key)
    return state


class HiggsAudioBackend(Backend):
    frame_ms = 40.0  # Whisper-style encoder frames pooled in pairs
    """``type: higgs_audio`` in config.json."""

    def __init__(self, spec: ModelSpec, settings: Settings[PartEnv], device: str) -> None:
        from transformers import Qwen2AudioEncoder, Qwen2AudioEncoderConfig, WhisperFeatureExtractor

        assert spec.processor_id and spec.transcriber_id  # guaranteed by the settings schema
        self.spec = spec
        self.device = device
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        ref = settings.resolve_model_ref(spec.model_id)

        config_path = checkpoint_file(ref, "config.json", spec.revision)
        if config_path is None:
            raise ModelLoadError(f"model {spec.key!r}: {spec.model_id} has no config.json")
        config = json.loads(config_path.read_text())
        if config.get("skip_audio_tower") is True:
            # Higgs' own loader builds no tower for such a config (the generation checkpoints are saved so),
            # so it is refused before any shard is opened, with the flag named.
            raise ModelLoadError(
                f"model {spec.key!r}: {spec.model_id} sets skip_audio_tower: true in its config.json, so it has no "
                f"audio tower to take features from; use a checkpoint that includes it (e.g. {TOWER_CHECKPOINT})"
            )
        encoder_cfg = config.get("audio_encoder_config")
        if not isinstance(encoder_cfg, dict):
            raise ModelLoadError(
                f"model {spec.key!r}: {spec.model_id} has no 'audio_encoder_config' in config.json; "
                "it is not a Higgs-Audio v2 checkpoint with an audio tower"
            )
        state = load_tower_state(ref, spec.revision)
        if not state:
            raise ModelLoadError(
                f"model {spec.key!r}: {spec.model_id} holds no '{TOWER_PREFIX}*' weights, so it has no audio tower; "
                f"use a Higgs-Audio v2 checkpoint that includes it (e.g. {TOWER_CHECKPOINT})"
            )
        tower_config = Qwen2AudioEncoderConfig(**{k: v for k, v in encoder_cfg.items() if k not in _NOT_ENCODER_KEYS})
        with torch.device("meta"):
            tower = Qwen2AudioEncoder(tower_config)
        try:
            tower.load_state_dict(state, strict=True, assign=True)
        except RuntimeError as exc:
            raise ModelLoadError(f"model {spec.key!r}: audio tower weights do not fit its config: {exc}") from exc
        # transformers wraps Module.to with functools.wraps, so its stub reads as unbound (self missing).
        self.tower = tower.to(device=device, dtype=self.dtype).eval()  # type: ignore[call-arg]

        self.feature_extractor = WhisperFeatureExtractor.from_pretrained(settings.resolve_model_ref(spec.processor_id))
        if self.feature_extractor.feature_size != tower_config.num_mel_bins:
            raise ModelLoadError(
                f"model {spec.key!r}: processor {spec.processor_id} makes {self.feature_extractor.feature_size} "
                f"mel bins but the audio tower expects {tower_config.num_mel_bins}"
            )
        self.sampling_rate = int(self.feature_extractor.sampling_rate)
        if self.sampling_rate != settings.config.target_sampling_rate:
            raise ModelLoadError(
                f"model {spec.key!r}: the processor expects {self.sampling_rate} Hz but target_sampling_rate "
                f"is {settings.config.target_sampling_rate}"
            )
        self.transcriber = WhisperRunner(
            settings.resolve_model_ref(spec.transcriber_id),
            revision=None,
            device=device,
            language=spec.language,
            max_new_tokens=spec.max_new_tokens,
        )
        self._dim = int(tower_config.d_model)
        self._fingerprint = {
            "type": "higgs_audio",
            "model_id": spec.model_id,
            "revision": checkpoint_identity(ref, spec.revision),
            "processor_id": spec.processor_id,
            "transcriber_id": spec.transcriber_id,
            "transcriber_revision": self.transcriber.identity,
            "language": spec.language,
            "max_new_tokens": spec.max_new_tokens,
            "guard": self.transcriber.guard.fingerprint(),
            "feature_version": FEATURE_VERSION,
        }

    @property
    def fingerprint(self) -> dict[str, Any]:
        return dict(self._fingerprint)

    @property
    def embedding_dim(self) -> int:
        return self._dim

    @torch.inference_mode()
    def embed(
        self,
        waveforms: Sequence[np.ndarray],
        *,
        max_new_tokens: int | None = None,
        languages: Sequence[str | None] | None = None,
        forced_texts: Sequence[Sequence[str]] | None = None,
    ) -> list[Features]:
        if not waveforms:
            return []
        batch = self.feature_extractor(
            [np.asarray(w, dtype=np.float32) for w in waveforms],
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
            return_attention_mask=True,
            device=self.device,
        )
        mel_frames = [int(n) for n in batch["attention_mask"].sum(dim=-1).tolist()]
        hidden = self.tower(batch["input_features"].to(self.device, self.dtype)).last_hidden_state
        lengths = [encoder_frames_with_audio(n, hidden.shape[1], pool=2) for n in mel_frames]
        pooled = pool_frames(hidden, lengths)

        t_features, _ = self.transcriber.log_mel(waveforms)
        durations = [len(w) / self.sampling_rate for w in waveforms]
        t_hidden = self.transcriber.encode(t_features)
        transcripts = self.transcriber.transcribe(t_hidden, durations, max_new_tokens, languages)
        forced = forced_for(self.transcriber, t_hidden, transcripts, forced_texts)
        return [
            transcribed_features(t, emb, frames, f)
            for t, (emb, frames), f in zip(transcripts, pooled, forced, strict=True)
        ]

    def close(self) -> None:
        del self.tower, self.transcriber
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
