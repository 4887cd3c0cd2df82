"""``bench/bench_parse.py`` and ``bench/bench_router_own.py`` run (a few repetitions): the figures in the README
come from scripts that still work against the current predictor and router."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def test_bench_parse_runs_and_compares_both_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import bench_parse

    from bench import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert bench_parse.main(["--reps", "2", "--out", "parse"]) == 0
    rows = json.loads((tmp_path / "parse.json").read_text())["rows"]
    assert [r["clip_s"] for r in rows] == [5, 10, 30]
    for row in rows:
        assert row["rest_ours_p50_ms"] > 0 and row["rest_stock_p50_ms"] > 0 and row["rest_app_p50_ms"] > 0


def test_bench_router_own_runs_with_the_real_router_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import bench_router_own

    from bench import common
    from router import predictor_client

    # The script swaps the predictor call for an instant one; put the real methods back afterwards.
    monkeypatch.setattr(predictor_client.PredictorClient, "score", predictor_client.PredictorClient.score)
    monkeypatch.setattr(predictor_client.PredictorClient, "ready", predictor_client.PredictorClient.ready)
    monkeypatch.setattr(common, "RESULTS", tmp_path)
    assert bench_router_own.main(["--requests", "3", "--out", "own"]) == 0
    rows = json.loads((tmp_path / "own.json").read_text())["rows"]
    assert [r["upload"] for r in rows] == ["10 s WAV", "10 s MP3"]
    assert all(r["decode_mean_ms"] > 0 and r["total_p50_ms"] > 0 for r in rows)
