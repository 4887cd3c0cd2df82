"""The real predictor when things go wrong: a model that does not load, none that loads, a full queue, and a
cache folder of 100,000 entries at start-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from audio_score import v2
from audio_score_tools.tiny_models import TinyModelSet, build_tiny_higgs

MODEL = "whisper-tiny"
BROKEN = "higgs-broken"
ENTRIES = 100_000
TIMEOUT = httpx.Timeout(120.0)

#: Slows the Whisper backend in the server process, so that a queue of one fills up for certain.
SLOW_BACKEND = """
import time
from audio_score.backends.whisper import WhisperBackend

_embed = WhisperBackend.embed

def _slow_embed(self, waveforms, **kwargs):
    time.sleep(1.5)
    return _embed(self, waveforms, **kwargs)

WhisperBackend.embed = _slow_embed
"""


@pytest.fixture(scope="module")
def broken_higgs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_higgs(tmp_path_factory.mktemp("broken") / "higgs-no-tower", with_tower=False)


def write_config(root: Path, tiny_models: TinyModelSet, broken: Path, with_whisper: bool = True) -> Path:
    models = []
    if with_whisper:
        models.append({"key": MODEL, "type": "whisper", "model_id": str(tiny_models.whisper), "max_new_tokens": 4})
    models.append(
        {
            "key": BROKEN,
            "type": "higgs_audio",
            "model_id": str(broken),
            "processor_id": str(tiny_models.whisper),
            "transcriber_id": str(tiny_models.whisper),
        }
    )
    (root / "clips").mkdir(parents=True, exist_ok=True)
    (root / "cache").mkdir(exist_ok=True)
    config = root / "config.json"
    config.write_text(
        json.dumps({"models": models, "video_clip_dir": "clips", "cache_dir": "cache", "target_sampling_rate": 16000})
    )
    return config


def fill_fake_cache(cache_dir: Path, count: int) -> None:
    """``count`` entry folders (a meta.json each, hard links of one file per uid folder): cheap to make, and any
    start-up code that walked or read them would take seconds and show up in the reference-cache gauge."""
    root = cache_dir / MODEL
    per_uid = 1000
    for u in range(count // per_uid):
        uid_dir = root / f"video{u:05d}"
        uid_dir.mkdir(parents=True)
        template = uid_dir / ".meta-template.json"
        template.write_text(json.dumps({"format_version": 1, "uid": uid_dir.name}))
        for c in range(per_uid):
            entry = uid_dir / f"clip{c:04d}"
            entry.mkdir()
            os.link(template, entry / "meta.json")


@pytest.fixture(scope="module")
def degraded(tmp_path_factory, tiny_models, broken_higgs, start_predictor):  # type: ignore[no-untyped-def]
    """Whisper (slowed, batch of one, queue of one) plus a Higgs checkpoint without its tower, over a cache
    folder of 100,000 entries."""
    root = tmp_path_factory.mktemp("degraded")
    config = write_config(root, tiny_models, broken_higgs)
    fill_fake_cache(root / "cache", ENTRIES)
    env = {
        "AUDIO_SCORE_MAX_BATCH_SIZE": "1",
        "AUDIO_SCORE_MAX_QUEUE_SIZE": "1",
        "AUDIO_SCORE_MAX_BATCH_WAIT_MS": "0",
    }
    started = time.monotonic()
    with start_predictor(config, ready_models=[MODEL], env=env, prelude=SLOW_BACKEND) as proc:
        proc.startup_seconds = time.monotonic() - started
        yield proc


def embed(server, audio: np.ndarray, model: str = MODEL) -> httpx.Response:  # type: ignore[no-untyped-def]
    body, headers = v2.build_infer_request(audio)
    return httpx.post(v2.infer_url(server.http_url, model), content=body, headers=headers, timeout=TIMEOUT)


def test_start_up_with_100k_entries_reads_none(degraded) -> None:  # type: ignore[no-untyped-def]
    metrics = httpx.get(f"{degraded.http_url}/metrics", timeout=TIMEOUT).text
    assert f'audio_score_predictor_reference_cache_entries{{model="{MODEL}"}} 0.0' in metrics
    assert f'audio_score_predictor_reference_cache_bytes{{model="{MODEL}"}} 0.0' in metrics
    assert "audio_score_predictor_reference_lookups_total{" not in metrics
    print(f"start-up with {ENTRIES} cache entries on disk: {degraded.startup_seconds:.1f} s to ready")


def test_model_that_fails_to_load_is_skipped_and_reported_503(degraded) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(v2.ready_url(degraded.http_url, MODEL), timeout=TIMEOUT).status_code == 200
    not_ready = httpx.get(v2.ready_url(degraded.http_url, BROKEN), timeout=TIMEOUT)
    assert not_ready.status_code == 503
    response = embed(degraded, np.full(1600, 0.05, np.float32), model=BROKEN)
    assert response.status_code == 503
    assert BROKEN in v2.error_message(response.content)
    assert "model skipped" in degraded.log() and BROKEN in degraded.log()
    # The model that loaded still serves.
    ok = embed(degraded, np.full(1600, 0.05, np.float32))
    assert ok.status_code == 200, ok.text


def test_full_queue_answers_503(degraded) -> None:  # type: ignore[no-untyped-def]
    audio = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    with ThreadPoolExecutor(max_workers=6) as pool:
        responses = list(pool.map(lambda _: embed(degraded, audio), range(6)))
    codes = sorted(r.status_code for r in responses)
    # One runs (1.5 s), one waits in the queue of one: the others are refused at once.
    assert codes.count(200) >= 1 and codes.count(503) >= 1, codes
    assert set(codes) <= {200, 503}, codes
    refused = next(r for r in responses if r.status_code == 503)
    assert "capacity" in v2.error_message(refused.content)
    metrics = httpx.get(f"{degraded.http_url}/metrics", timeout=TIMEOUT).text
    assert f'audio_score_predictor_rejected_total{{model="{MODEL}"}}' in metrics
    # Afterwards the model serves again.
    assert embed(degraded, audio).status_code == 200


def test_no_model_loads_exits_with_one_clear_line(tmp_path: Path, tiny_models, broken_higgs) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, tiny_models, broken_higgs, with_whisper=False)
    done = subprocess.run(
        [sys.executable, "-m", "audio_score", "predictor", "--config", str(config), "--http-port", "0"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("audio-score predictor: error: no model loaded"), done.stderr[-2000:]
    assert BROKEN in last and "audio tower" in last, last


def test_unknown_model_key_is_a_config_error(tmp_path: Path, tiny_models, broken_higgs) -> None:  # type: ignore[no-untyped-def]
    config = write_config(tmp_path, tiny_models, broken_higgs)
    done = subprocess.run(
        [sys.executable, "-m", "audio_score", "predictor", "--config", str(config), "--model", "nope"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 2
    assert "unknown model key" in done.stderr and "whisper-tiny" in done.stderr
