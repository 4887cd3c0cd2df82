"""``bench/gpu_check.py`` runs end to end on a CPU (``--device cpu --quick``): both real predictors start, every
row is measured, the table and JSON are written, so the script is ready for the day a GPU is lent."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def test_gpu_check_runs_on_cpu_quick(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import gpu_check

    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    argv = ["--device", "cpu", "--quick", "--concurrency", "2", "--requests", "2", "--out", "check"]
    assert gpu_check.main(argv) == 0
    doc = json.loads((tmp_path / "check.json").read_text())
    rows = doc["rows"]
    assert sorted((r["clients"], r["max batch"]) for r in rows) == [(2, 1), (2, 8)]
    for row in rows:
        assert row["errors"] == 0 and row["scores/s"] > 0 and row["p99 ms"] >= row["p50 ms"] > 0
        assert isinstance(row["overhead ms/request"], float)
        assert row["GPU util % (mean/max)"] == "n/a"  # no GPU sampled on a CPU run
    table = (tmp_path / "check.md").read_text()
    assert "| clients | max batch |" in table and "batch 8 / batch 1" in table
