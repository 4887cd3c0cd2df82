"""Backends load real checkpoint formats through the same code a hub model takes, and pool over audio only."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from audio_score.backends import FEATURE_VERSION, load_backend, load_backends
from audio_score.backends import higgs as higgs_mod
from audio_score.backends.guard import GUARD
from audio_score.env_settings import PredictorEnv
from audio_score.errors import ModelLoadError
from audio_score.settings import load_settings
from audio_score_tools.media import synth_speechlike
from audio_score_tools.tiny_models import TinyModelSet, build_tiny_higgs, build_tiny_whisper

RATE = 16000


def settings_for(tmp_path: Path, models: list[dict], **extra):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"models": models, "video_clip_dir": "clips", "cache_dir": "cache", **extra}))
    return load_settings(PredictorEnv, path, env={})


def whisper_entry(models: TinyModelSet, key: str = "w") -> dict:
    return {"key": key, "type": "whisper", "model_id": str(models.whisper), "max_new_tokens": 6}


def higgs_entry(models: TinyModelSet, model_id: Path | None = None, key: str = "h") -> dict:
    return {
        "key": key,
        "type": "higgs_audio",
        "model_id": str(model_id or models.higgs),
        "processor_id": str(models.whisper),
        "transcriber_id": str(models.whisper),
        "max_new_tokens": 6,
    }


@pytest.fixture(scope="module")
def waves() -> list[np.ndarray]:
    return [synth_speechlike(1.0, RATE, seed=1), synth_speechlike(2.5, RATE, seed=2)]


@pytest.mark.parametrize(("entry", "pool"), [(whisper_entry, 1), (higgs_entry, 2)])
def test_features_pool_over_the_frames_that_hold_audio(tmp_path, tiny_models, waves, entry, pool) -> None:
    settings = settings_for(tmp_path, [entry(tiny_models)])
    backend = load_backend(settings.models[0], settings)
    out = backend.embed(waves)
    assert len(out) == 2
    for wave, feats in zip(waves, out, strict=True):
        mel_frames = len(wave) // 160
        # 100 mel frames per second; Whisper's conv stem halves that, the Higgs pooler halves it again.
        assert abs(feats.frames.shape[0] - mel_frames / 2 / pool) <= 1
        assert feats.frames.shape[0] < 1500 / pool  # never the whole 30 s window
        assert feats.frames.dtype == np.float16 and feats.embedding.dtype == np.float32
        assert feats.embedding.shape == (backend.embedding_dim,)
        np.testing.assert_allclose(feats.embedding, feats.frames.astype(np.float32).mean(0), atol=5e-3)
        assert isinstance(feats.transcript, str) and feats.transcript
        # The recogniser's confidence in the transcript reaches Features (mean token log-probability).
        assert feats.avg_logprob is not None and np.isfinite(feats.avg_logprob) and feats.avg_logprob <= 0.0
    assert not np.allclose(out[0].embedding, out[1].embedding)


@pytest.mark.parametrize("entry", [whisper_entry, higgs_entry])
def test_batched_equals_single_and_is_deterministic(tmp_path, tiny_models, waves, entry) -> None:
    settings = settings_for(tmp_path, [entry(tiny_models)])
    backend = load_backend(settings.models[0], settings)
    batched = backend.embed(waves)
    singles = [backend.embed([w])[0] for w in waves]
    again = backend.embed(waves)
    for b, s, a in zip(batched, singles, again, strict=True):
        np.testing.assert_allclose(b.embedding, s.embedding, rtol=1e-4, atol=1e-5)
        assert b.transcript == s.transcript == a.transcript
        assert b.avg_logprob == pytest.approx(s.avg_logprob, abs=1e-4) and b.avg_logprob == a.avg_logprob
        np.testing.assert_array_equal(b.embedding, a.embedding)


def test_higgs_reads_only_the_audio_tower_shards(tmp_path, tiny_models, monkeypatch) -> None:
    opened: list[str] = []
    import safetensors

    real_open = safetensors.safe_open

    def spy(path, *args, **kwargs):
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(safetensors, "safe_open", spy)
    settings = settings_for(tmp_path, [higgs_entry(tiny_models)])
    backend = load_backend(settings.models[0], settings)
    assert opened == ["model-00001-of-00002.safetensors"]  # the language-model shard is never opened
    assert backend.fingerprint["type"] == "higgs_audio"
    assert (
        "audio_tower.embed_positions.weight"
        in json.loads((tiny_models.higgs / "model.safetensors.index.json").read_text())["weight_map"]
    )
    assert higgs_mod.tower_shards(str(tiny_models.higgs), None) == ["model-00001-of-00002.safetensors"]


def test_higgs_checkpoint_saved_with_skip_audio_tower_fails_naming_it(tmp_path, tiny_models, monkeypatch) -> None:
    """Like bosonai/higgs-audio-v2-generation-3B-base: config.json says skip_audio_tower, no shard is opened."""
    import safetensors

    no_tower = build_tiny_higgs(tmp_path / "no-tower", with_tower=False)
    assert json.loads((no_tower / "config.json").read_text())["skip_audio_tower"] is True
    opened = []
    monkeypatch.setattr(safetensors, "safe_open", lambda path, *a, **k: opened.append(path))
    settings = settings_for(tmp_path, [higgs_entry(tiny_models, no_tower)])
    with pytest.raises(ModelLoadError, match=r"sets skip_audio_tower: true .* no audio tower") as info:
        load_backend(settings.models[0], settings)
    assert "higgs-audio-v2-understanding-3B" in str(info.value)
    assert opened == []


def test_higgs_without_audio_tower_weights_fails_clearly(tmp_path, tiny_models) -> None:
    """A config that does not say skip_audio_tower but whose shards lack the tower still fails by name."""
    no_tower = build_tiny_higgs(tmp_path / "no-tower", with_tower=False)
    config = json.loads((no_tower / "config.json").read_text())
    (no_tower / "config.json").write_text(json.dumps({**config, "skip_audio_tower": False}))
    settings = settings_for(tmp_path, [higgs_entry(tiny_models, no_tower)])
    with pytest.raises(ModelLoadError, match=r"no 'audio_tower\.\*' weights, so it has no audio tower"):
        load_backend(settings.models[0], settings)


def test_higgs_processor_with_other_mel_bins_fails_clearly(tmp_path, tiny_models) -> None:
    other = build_tiny_whisper(tmp_path / "w128", num_mel_bins=128)
    entry = {**higgs_entry(tiny_models), "processor_id": str(other)}
    settings = settings_for(tmp_path, [entry])
    with pytest.raises(ModelLoadError, match="128 mel bins but the audio tower expects 80"):
        load_backend(settings.models[0], settings)


def test_a_model_that_fails_to_load_is_skipped(tmp_path, tiny_models) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    models = [whisper_entry(tiny_models, "good"), {"key": "bad", "type": "whisper", "model_id": str(broken)}]
    loaded, failed = load_backends(settings_for(tmp_path, models))
    assert list(loaded) == ["good"]
    assert list(failed) == ["bad"] and "failed to load" in failed["bad"]


def test_fingerprint_changes_with_the_weights(tmp_path, tiny_models) -> None:
    a = build_tiny_whisper(tmp_path / "a", seed=1)
    b = build_tiny_whisper(tmp_path / "b", seed=2)
    fps = []
    for path in (a, b):
        settings = settings_for(tmp_path, [{"key": "w", "type": "whisper", "model_id": str(path)}])
        fps.append(load_backend(settings.models[0], settings).fingerprint)
    assert fps[0]["revision"] != fps[1]["revision"]
    assert fps[0]["feature_version"] == FEATURE_VERSION == 2
    assert fps[0]["guard"] == GUARD.fingerprint()  # the decoding guard's thresholds make entries stale too


def test_sampling_rate_mismatch_is_a_load_error(tmp_path, tiny_models) -> None:
    settings = settings_for(tmp_path, [whisper_entry(tiny_models)], target_sampling_rate=22050)
    with pytest.raises(ModelLoadError, match="target_sampling_rate"):
        load_backend(settings.models[0], settings)
