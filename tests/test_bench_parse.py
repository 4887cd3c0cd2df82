"""``bench/bench_parse.py`` runs (a couple of repetitions) and its two decoders agree: the figures in the README
come from a script that still works against the current predictor."""

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
