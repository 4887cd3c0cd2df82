"""``bench/bench_single.py`` runs end to end: the split (real router + predictor processes) and the single-process
shape (``bench/single_process.py``: the same decoder, model and batcher in one process) both score the upload."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import REPO_ROOT


def test_bench_single_compares_both_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO_ROOT / "bench"))
    import bench_single

    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    argv = ["--size", "tiny", "--concurrency", "2", "--reps", "1", "--requests", "2", "--out", "single"]
    assert bench_single.main(argv) == 0  # non-zero when any request of either shape failed
    (row,) = json.loads((tmp_path / "single.json").read_text())["rows"]
    assert row["clients"] == 2 and row["errors"] == 0
    assert row["rps split"] > 0 and row["rps single"] > 0 and row["split / single"] > 0
