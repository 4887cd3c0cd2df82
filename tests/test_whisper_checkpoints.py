"""Every kind of Whisper checkpoint works, and a model that cannot score is never ready.

The three generation-config kinds of the hub (multilingual, English-only ``*.en``, legacy from before
transformers 4.27) are built as tiny real-format checkpoints and loaded through the real backends. Then a
checkpoint that loads but fails at inference is shown to be skipped by the cache Job and reported not ready (with
the reason) by the real KServe predictor and the router, while a good model beside it serves.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch

from audio_score import v2
from audio_score.backends import load_backend
from audio_score.backends.whisper_prompt import plan_decoding
from audio_score.cli import main as cli_main
from audio_score.env_settings import PredictorEnv, RouterEnv
from audio_score.errors import ModelLoadError
from audio_score.settings import load_settings
from audio_score_tools.media import synth_speechlike
from audio_score_tools.tiny_models import WHISPER_KINDS, build_tiny_whisper

from conftest import run_router

RATE = 16000
#: Decoder prompt length generate uses per kind: multilingual <sot><lang><transcribe><notimestamps>; English-only
#: <sot><notimestamps> (its forced_decoder_ids); legacy <sot><en><transcribe><notimestamps> (forced_decoder_ids).
PROMPT_LENGTH = {"multilingual": 4, "english": 2, "legacy": 4}
PLAN_KIND = {"multilingual": "multilingual", "english": "english-only", "legacy": "legacy"}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("whisper-kinds")
    return {kind: build_tiny_whisper(root / kind, kind=kind) for kind in WHISPER_KINDS}


@pytest.fixture(scope="module")
def no_inference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A legacy checkpoint that loads, but whose forced_decoder_ids skip position 2: generate raises for any clip."""
    path = build_tiny_whisper(tmp_path_factory.mktemp("no-inference") / "whisper", kind="legacy")
    gen_path = path / "generation_config.json"
    gen = json.loads(gen_path.read_text())
    gen["forced_decoder_ids"] = [gen["forced_decoder_ids"][0], gen["forced_decoder_ids"][2]]
    gen_path.write_text(json.dumps(gen, indent=2))
    return path


def settings_for(tmp_path: Path, models: list[dict]):
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"models": models, "video_clip_dir": "clips", "cache_dir": "cache"}))
    return load_settings(PredictorEnv, path, env={})


def whisper(model_id: Path, key: str = "w", **extra) -> dict:
    return {"key": key, "type": "whisper", "model_id": str(model_id), "max_new_tokens": 6, **extra}


def load(tmp_path: Path, entry: dict):
    settings = settings_for(tmp_path, [entry])
    return load_backend(settings.models[0], settings)


def notes(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the Whisper runner logged about adjusting the decoding (transformers' own warnings left out)."""
    return [r.note for r in caplog.records if r.name == "audio_score.backends.whisper"]


def encoder_outputs(model, seconds: float = 1.0):
    from transformers import WhisperFeatureExtractor
    from transformers.modeling_outputs import BaseModelOutput

    extractor = WhisperFeatureExtractor()
    features = extractor([synth_speechlike(seconds, RATE, seed=3)], sampling_rate=RATE, return_tensors="pt")
    with torch.inference_mode():
        hidden = model.get_encoder()(features["input_features"]).last_hidden_state
    return BaseModelOutput(last_hidden_state=hidden)


# --- the old call fails: transformers refuses task/language for these checkpoints ---------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [("english", "Cannot specify `task` or `language` for an English-only model"), ("legacy", "outdated")],
)
def test_transformers_refuses_task_for_english_only_and_legacy_checkpoints(checkpoints, kind, message) -> None:
    from transformers import WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(checkpoints[kind]).eval()
    with pytest.raises(ValueError, match=message):
        model.generate(encoder_outputs=encoder_outputs(model), max_new_tokens=4, task="transcribe")


# --- each kind loads and scores through the real backends ---------------------------------------------------


@pytest.mark.parametrize("kind", WHISPER_KINDS)
def test_each_kind_loads_and_embeds_through_the_whisper_backend(tmp_path, checkpoints, kind) -> None:
    backend = load(tmp_path, whisper(checkpoints[kind]))
    assert backend.runner.plan.kind == PLAN_KIND[kind]
    assert len(backend.runner.plan.prompt) == PROMPT_LENGTH[kind]
    waves = [synth_speechlike(1.0, RATE, seed=1), synth_speechlike(2.0, RATE, seed=2)]
    out = backend.embed(waves)
    assert [len(f.transcript.replace(" ", "")) > 0 for f in out] == [True, True]
    assert all(f.embedding.shape == (backend.embedding_dim,) and np.isfinite(f.embedding).all() for f in out)
    assert out[0].transcript != out[1].transcript  # decoding depends on the audio, whatever the kind


@pytest.mark.parametrize("kind", WHISPER_KINDS)
def test_each_kind_transcribes_for_the_higgs_backend(tmp_path, tiny_models, checkpoints, kind) -> None:
    entry = {
        "key": "h",
        "type": "higgs_audio",
        "model_id": str(tiny_models.higgs),
        "processor_id": str(tiny_models.whisper),
        "transcriber_id": str(checkpoints[kind]),
        "language": "en",
        "max_new_tokens": 6,
    }
    backend = load(tmp_path, entry)
    assert backend.transcriber.plan.kind == PLAN_KIND[kind]
    (features,) = backend.embed([synth_speechlike(1.5, RATE, seed=4)])
    assert features.transcript.strip()


def test_language_is_passed_only_where_the_checkpoint_takes_it(tmp_path, checkpoints, caplog) -> None:
    caplog.set_level(logging.WARNING)
    multilingual = load(tmp_path, whisper(checkpoints["multilingual"], language="es"))
    assert multilingual.runner.plan.generate_kwargs == {"task": "transcribe", "language": "es"}
    assert multilingual.embed([synth_speechlike(1.0, RATE, seed=5)])[0].transcript
    assert not notes(caplog)

    english = load(tmp_path, whisper(checkpoints["english"], language="es"))
    assert english.runner.plan.generate_kwargs == {}
    assert english.embed([synth_speechlike(1.0, RATE, seed=5)])[0].transcript
    assert notes(caplog) == [
        "language 'es' is ignored: the checkpoint is English-only (is_multilingual is false), so it transcribes "
        "English only"
    ]
    caplog.clear()
    load(tmp_path, whisper(checkpoints["english"], language="en"))
    assert not notes(caplog)  # English on an English-only checkpoint needs no word

    legacy = load(tmp_path, whisper(checkpoints["legacy"], language="en"))
    assert legacy.runner.plan.generate_kwargs == {}
    (note,) = notes(caplog)
    assert "task and language are not passed" in note and "predates task_to_id" in note


def test_a_language_the_checkpoint_lacks_fails_at_load_naming_the_valid_ones(tmp_path, checkpoints) -> None:
    # "ko" is in Whisper's table (config.json accepts it) but not in this checkpoint's lang_to_id.
    with pytest.raises(ModelLoadError, match=r"language 'ko' is not one of this checkpoint's languages") as e:
        load(tmp_path, whisper(checkpoints["multilingual"], language="ko"))
    assert e.value.permanent  # loading again cannot help: `up` does not restart for it


# --- max_new_tokens fits the decoder ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", WHISPER_KINDS)
def test_max_new_tokens_is_capped_to_what_the_decoder_holds(tmp_path, kind, caplog) -> None:
    positions = 16
    path = build_tiny_whisper(tmp_path / kind, kind=kind, max_target_positions=positions)
    caplog.set_level(logging.WARNING)
    backend = load(tmp_path, whisper(path, max_new_tokens=100))
    room = positions - PROMPT_LENGTH[kind]
    runner = backend.runner
    assert runner.max_new_tokens == room
    assert any(f"max_new_tokens capped from 100 to {room}" in note for note in notes(caplog))
    # The cap is exact: the real generate takes `room` new tokens and refuses one more.
    outputs = encoder_outputs(runner.model)
    tokens = runner.model.generate(encoder_outputs=outputs, max_new_tokens=room, **runner.plan.generate_kwargs)
    assert tokens.shape[-1] == room  # the tiny models never emit end-of-text: every token is spent
    with pytest.raises(ValueError, match="max_target_positions"):
        runner.model.generate(encoder_outputs=outputs, max_new_tokens=room + 1, **runner.plan.generate_kwargs)
    assert len(backend.embed([synth_speechlike(2.0, RATE, seed=6)])[0].transcript) <= room


def test_max_new_tokens_under_the_limit_is_kept(tmp_path, checkpoints, caplog) -> None:
    caplog.set_level(logging.WARNING)
    assert load(tmp_path, whisper(checkpoints["multilingual"], max_new_tokens=444)).runner.max_new_tokens == 444
    assert not notes(caplog)


def test_a_decoder_too_short_for_its_prompt_is_a_load_error(tmp_path) -> None:
    path = build_tiny_whisper(tmp_path / "short", max_target_positions=4)
    with pytest.raises(ModelLoadError, match="the decoder holds 4 tokens but its prompt alone takes 4"):
        load(tmp_path, whisper(path))


def test_plan_for_a_hub_style_large_v3_generation_config() -> None:
    """The fields of openai/whisper-large-v3's generation_config.json that matter (ids as on the hub)."""
    from transformers import GenerationConfig, WhisperConfig

    gen = GenerationConfig(
        decoder_start_token_id=50258,
        is_multilingual=True,
        lang_to_id={"<|en|>": 50259, "<|es|>": 50262},
        task_to_id={"transcribe": 50360, "translate": 50359},
        no_timestamps_token_id=50364,
        forced_decoder_ids=[[1, None], [2, 50360]],
    )
    plan = plan_decoding(gen, WhisperConfig(max_target_positions=448), language="es", max_new_tokens=444)
    assert plan.prompt == (50258, None, 50360, 50364) and plan.max_new_tokens == 444 and not plan.notes


# --- warm-up: a model that loads but cannot score is a load failure -----------------------------------------


def test_a_checkpoint_that_fails_at_inference_is_a_load_error(tmp_path, no_inference) -> None:
    with pytest.raises(ModelLoadError, match=r"loaded but failed its warm-up inference: ValueError: .*prompt pattern"):
        load(tmp_path, whisper(no_inference))


def test_the_warm_up_is_one_short_clip_with_a_few_tokens(tmp_path, checkpoints) -> None:
    from audio_score.backends import WARM_UP_TOKENS, warm_up

    backend = load(tmp_path, whisper(checkpoints["multilingual"], max_new_tokens=100))
    seen: list[tuple[list[int], int | None]] = []
    embed = backend.embed

    def record(waveforms, *, max_new_tokens=None):
        seen.append(([len(w) for w in waveforms], max_new_tokens))
        return embed(waveforms, max_new_tokens=max_new_tokens)

    backend.embed = record
    warm_up(backend)
    assert seen == [([RATE], WARM_UP_TOKENS)]
    # The tiny models rarely stop early, so the transcript length shows the budget each call got (a 10-s clip's
    # own budget is its duration's share, 88 tokens).
    (short,) = embed([synth_speechlike(10.0, RATE, seed=8)], max_new_tokens=WARM_UP_TOKENS)
    (full,) = embed([synth_speechlike(10.0, RATE, seed=8)])
    assert len(short.transcript) <= WARM_UP_TOKENS < 20 <= len(full.transcript)


def test_nan_weights_fail_the_warm_up(tmp_path, checkpoints) -> None:
    import shutil

    from safetensors.torch import load_file, save_file

    path = tmp_path / "nan"
    shutil.copytree(checkpoints["multilingual"], path)
    weights = load_file(path / "model.safetensors")
    weights["model.encoder.layers.0.fc1.weight"] = torch.full_like(weights["model.encoder.layers.0.fc1.weight"], np.nan)
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ModelLoadError, match="warm-up inference: ValueError: the embedding holds non-finite"):
        load(tmp_path, whisper(path))


def with_unscorable_model(workspace, checkpoint: Path) -> None:
    """The workspace's config: its good Whisper plus ``whisper-noinfer``, which loads but cannot infer."""
    config = json.loads(workspace.config_path.read_text())
    good = next(m for m in config["models"] if m["key"] == "whisper-tiny")
    config["models"] = [good, {**good, "key": "whisper-noinfer", "model_id": str(checkpoint)}]
    workspace.config_path.write_text(json.dumps(config))


def test_the_cache_job_skips_a_model_that_cannot_infer(workspace, no_inference, capsys) -> None:
    with_unscorable_model(workspace, no_inference)
    capsys.readouterr()
    code = cli_main(["cache-build", "--config", str(workspace.config_path), "--no-progress"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 1  # a skipped model is a failure the operator must see
    assert summary["skipped_models"] == ["whisper-noinfer"]
    assert [(m["model"], m["built"]) for m in summary["models"]] == [("whisper-tiny", 3)]
    assert not (workspace.cache_dir / "whisper-noinfer").exists()


def test_the_predictor_and_router_never_call_it_ready(workspace, no_inference, start_predictor) -> None:
    with_unscorable_model(workspace, no_inference)
    with start_predictor(workspace.config_path, ready_models=["whisper-tiny"]) as predictor:
        assert httpx.get(v2.ready_url(predictor.http_url, "whisper-noinfer"), timeout=30).status_code == 503
        body, headers = v2.build_infer_request(synth_speechlike(1.0, RATE, seed=7))
        refused = httpx.post(v2.infer_url(predictor.http_url, "whisper-noinfer"), content=body, headers=headers)
        assert refused.status_code == 503 and "whisper-noinfer" in v2.error_message(refused.content)
        skipped = [line for line in predictor.log().splitlines() if "model skipped" in line]
        assert len(skipped) == 1 and "whisper-noinfer" in skipped[0], predictor.log()[-3000:]
        assert "failed its warm-up inference" in skipped[0] and "prompt pattern" in skipped[0]
        served = httpx.post(v2.infer_url(predictor.http_url, "whisper-tiny"), content=body, headers=headers)
        assert served.status_code == 200, served.text

        settings = load_settings(
            RouterEnv, workspace.config_path, env={"AUDIO_SCORE_PREDICTOR_URL": predictor.http_url}
        )
        with run_router(settings, readiness_interval_s=0.2) as url:
            deadline = time.monotonic() + 60
            models = httpx.get(f"{url}/models", timeout=30).json()
            while not any(m["ready"] for m in models["models"]) and time.monotonic() < deadline:
                time.sleep(0.2)
                models = httpx.get(f"{url}/models", timeout=30).json()
            ready = {m["key"]: m["ready"] for m in models["models"]}
            assert ready == {"whisper-tiny": True, "whisper-noinfer": False}
            assert models["default"] == "whisper-tiny"
