"""Threads sized to the pod (:mod:`audio_score.threads`) and per-request logs off by default: the settings, the
order of the sources, the cgroup file format, ``up``'s split, and the log levels the predictor sets."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from audio_score.env_settings import PredictorEnv
from audio_score.errors import ConfigError
from audio_score.settings import load_settings
from audio_score.threads import cgroup_cpu_limit, resolve_torch_threads, threads_per_predictor

from conftest import REPO_ROOT


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("threads")
    path = root / "config.json"
    model = {"key": "m", "type": "whisper", "model_id": "openai/whisper-tiny"}
    path.write_text(json.dumps({"models": [model], "video_clip_dir": "clips", "cache_dir": "cache"}))
    return path


def settings(config: Path, **env: str) -> PredictorEnv:
    """A predictor's environment, read through its loader (the thread rules take the part's environment)."""
    return load_settings(PredictorEnv, config, env=env).env


def cpu_max(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cpu.max"
    path.write_text(text)
    return path


def test_settings_read_threads_cpu_limit_and_the_debug_switch(config: Path) -> None:
    plain = settings(config)
    assert (plain.torch_threads, plain.cpu_limit_millicores, plain.debug_request_logs) == (0, 0, False)
    s = settings(
        config,
        AUDIO_SCORE_TORCH_THREADS="3",
        AUDIO_SCORE_CPU_LIMIT_MILLICORES="1500",
        AUDIO_SCORE_DEBUG_REQUEST_LOGS="1",
    )
    assert (s.torch_threads, s.cpu_limit_millicores, s.debug_request_logs) == (3, 1500, True)
    with pytest.raises(ConfigError, match="AUDIO_SCORE_TORCH_THREADS"):
        settings(config, AUDIO_SCORE_TORCH_THREADS="many")
    with pytest.raises(ConfigError, match="AUDIO_SCORE_CPU_LIMIT_MILLICORES"):
        settings(config, AUDIO_SCORE_CPU_LIMIT_MILLICORES="-1")


def test_cgroup_quota_is_read_and_unlimited_is_none(tmp_path: Path) -> None:
    assert cgroup_cpu_limit(cpu_max(tmp_path, "250000 100000\n")) == 2.5
    assert cgroup_cpu_limit(cpu_max(tmp_path, "max 100000\n")) is None
    assert cgroup_cpu_limit(tmp_path / "missing") is None
    assert cgroup_cpu_limit(cpu_max(tmp_path, "garbage")) is None


def test_explicit_setting_then_downward_api_then_cgroup_then_cpu_count(config: Path, tmp_path: Path) -> None:
    quota = cpu_max(tmp_path, "150000 100000")
    explicit = settings(config, AUDIO_SCORE_TORCH_THREADS="5", AUDIO_SCORE_CPU_LIMIT_MILLICORES="2000")
    assert resolve_torch_threads(explicit, cgroup=quota) == (5, "AUDIO_SCORE_TORCH_THREADS")
    limit = settings(config, AUDIO_SCORE_CPU_LIMIT_MILLICORES="500")  # half a core still gets one thread
    assert resolve_torch_threads(limit, cgroup=quota)[0] == 1
    assert resolve_torch_threads(settings(config, AUDIO_SCORE_CPU_LIMIT_MILLICORES="2500"), cgroup=quota)[0] == 3
    threads, source = resolve_torch_threads(settings(config), cgroup=quota)
    assert (threads, source.startswith("cgroup")) == (2, True)
    unlimited = cpu_max(tmp_path, "max 100000")
    assert resolve_torch_threads(settings(config), cgroup=unlimited) == (os.cpu_count() or 1, "os.cpu_count()")


def test_up_divides_the_cores_between_its_predictors(config: Path, tmp_path: Path) -> None:
    eight = settings(config, AUDIO_SCORE_CPU_LIMIT_MILLICORES="8000")
    assert [threads_per_predictor(eight, n) for n in (1, 2, 3, 8, 16)] == [8, 4, 2, 1, 1]
    # An explicit per-process setting is not what gets divided: the machine's CPU is.
    pinned = settings(config, AUDIO_SCORE_TORCH_THREADS="1", AUDIO_SCORE_CPU_LIMIT_MILLICORES="8000")
    assert threads_per_predictor(pinned, 2) == 4


def test_the_predictor_process_sets_torchs_threads(config: Path) -> None:
    code = (
        "import torch\nfrom audio_score.env_settings import PredictorEnv\nfrom audio_score.settings import "
        "load_settings\nfrom audio_score.threads import apply_torch_threads\nimport sys\n"
        "print(apply_torch_threads(load_settings(PredictorEnv, sys.argv[1]).env), torch.get_num_threads())"
    )
    env = {**os.environ, "AUDIO_SCORE_CPU_LIMIT_MILLICORES": "1000", "PYTHONPATH": str(REPO_ROOT)}
    env.pop("AUDIO_SCORE_TORCH_THREADS", None)
    out = subprocess.run([sys.executable, "-c", code, str(config)], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1"]


@pytest.mark.parametrize(("debug", "level"), [(False, logging.WARNING), (True, logging.INFO)])
def test_per_request_logs_are_off_unless_asked_for(debug: bool, level: int) -> None:
    from predictors.server import quiet_request_logs

    quiet_request_logs(debug)
    assert logging.getLogger("kserve.trace").level == level
    assert logging.getLogger("uvicorn.access").level == level
    assert logging.getLogger("uvicorn.access").isEnabledFor(logging.INFO) is debug
