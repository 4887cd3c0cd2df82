"""The GPU check, in one go: batch 8 vs batch 1 on a whisper-small-sized model, at 1, 8 and 32 clients.

Run it whenever a GPU machine is at hand (under 8 minutes on one GPU, one table printed at the end)::

    python bench/gpu_check.py                      # cuda, whisper-small-sized random weights
    python bench/gpu_check.py --device cpu --quick # proves the script works on a CPU box (a minute or two)

Two real ``audio-score predictor`` processes (KServe ModelServer), ``AUDIO_SCORE_MAX_BATCH_SIZE`` 1 and 8, serve
the same random-weight Whisper (built locally by :mod:`audio_score_tools.tiny_models`; end-of-text
suppressed so every request decodes exactly ``--max-new-tokens`` tokens). For each client count the two take
turns with the same scoring requests (V2 binary REST). Per row: scores/s, p50/p99 latency, the mean batch
formed, GPU utilisation sampled with ``nvidia-smi`` while the row ran (``torch.cuda.utilization()`` as a
fallback), and the predictor's own overhead per request: client latency minus the batcher's queue wait minus
the model call (from the predictor's metrics), i.e. HTTP, decoding, reference lookup, scoring and encoding.

A time budget (``--budget-s``, default 420 s from the start) stops further rows, which are then marked skipped,
so the run never overstays an 8-minute device slot. Results: ``bench/results/<out>.{json,md}``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_predictor import KEY, Server, drive, fixed_length_decoding, metric, speechlike, write_wav

from audio_score import v2
from audio_score_tools.tiny_models import build_tiny_whisper

from common import write_results


class GpuSampler:
    """Mean/max GPU utilisation (%) while a block runs: ``nvidia-smi`` every 0.2 s, else torch's NVML reading."""

    def __init__(self, device: str) -> None:
        self.enabled = device.startswith("cuda")
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.source = "nvidia-smi" if shutil.which("nvidia-smi") else "torch.cuda.utilization"

    def _read(self) -> float | None:
        if self.source == "nvidia-smi":
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"],
                capture_output=True,
                text=True,
                timeout=5,
            )
            try:
                return float(out.stdout.strip().splitlines()[0])
            except (ValueError, IndexError):
                return None
        try:
            import torch

            return float(torch.cuda.utilization(0))
        except Exception:  # no pynvml, no GPU
            return None

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            value = self._read()
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> GpuSampler:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def summary(self) -> tuple[float | None, float | None]:
        if not self.samples:
            return None, None
        return round(statistics.fmean(self.samples), 1), max(self.samples)


def per_request_overhead_ms(before: str, after: str, latencies_mean_ms: float, requests: int) -> float | None:
    """Mean client latency minus mean queue wait minus mean model-call time (each request waits for its whole
    batch's call): what the predictor spends on a request besides waiting and the model."""
    names = {
        "wait_sum": "audio_score_predictor_queue_wait_seconds_sum",
        "wait_count": "audio_score_predictor_queue_wait_seconds_count",
        "backend_sum": "audio_score_predictor_backend_seconds_sum",
        "backend_count": "audio_score_predictor_backend_seconds_count",
    }
    d = {k: metric(after, n) - metric(before, n) for k, n in names.items()}
    if not d["wait_count"] or not d["backend_count"]:
        return None
    wait_ms = 1000 * d["wait_sum"] / d["wait_count"]
    call_ms = 1000 * d["backend_sum"] / d["backend_count"]
    return round(latencies_mean_ms - wait_ms - call_ms, 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="AUDIO_SCORE_DEVICE of the predictors (cuda, cpu)")
    parser.add_argument("--size", default=None, help="tiny_models size (default whisper-small; tiny with --quick)")
    parser.add_argument("--quick", action="store_true", help="a small model, 1 and 4 clients, few requests")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="decoded tokens (default 16; 4 quick)")
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=None)
    parser.add_argument("--requests", type=int, default=None, help="per row: max(this, 3 x clients); default 24")
    parser.add_argument("--audio-seconds", type=float, default=5.0)
    parser.add_argument("--budget-s", type=float, default=420.0, help="no new row starts after this many seconds")
    parser.add_argument("--out", default=None, help="results name (default gpu-check, or gpu-check-cpu)")
    args = parser.parse_args(argv)
    size = args.size or ("tiny" if args.quick else "whisper-small")
    tokens = args.max_new_tokens or (4 if args.quick else 16)
    levels = args.concurrency or ([1, 4] if args.quick else [1, 8, 32])
    min_requests = args.requests or (6 if args.quick else 24)
    out = args.out or ("gpu-check" if args.device.startswith("cuda") else "gpu-check-cpu")
    began = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = build_tiny_whisper(tmp / "models" / "whisper", size=size)
        fixed_length_decoding(checkpoint)
        write_wav(tmp / "clips" / "video1" / "clip1.wav", speechlike(args.audio_seconds, seed=0))
        (tmp / "cache").mkdir()
        config = tmp / "config.json"
        model = {"key": KEY, "type": "whisper", "model_id": str(checkpoint), "max_new_tokens": tokens}
        config.write_text(json.dumps({"models": [model], "video_clip_dir": "clips", "cache_dir": "cache"}))
        bodies = [v2.build_score_request(speechlike(args.audio_seconds, s), "video1", "clip1") for s in range(1, 9)]
        base = {"AUDIO_SCORE_DEVICE": args.device, "AUDIO_SCORE_MAX_QUEUE_SIZE": "256"}
        servers: dict[int, Server] = {}
        rows: list[dict[str, Any]] = []
        try:
            for batch in (1, 8):
                env = {**base, "AUDIO_SCORE_MAX_BATCH_SIZE": str(batch), "AUDIO_SCORE_MAX_BATCH_WAIT_MS": "10"}
                servers[batch] = Server(config, env, tmp / f"predictor-batch{batch}.log")
                asyncio.run(drive(servers[batch].url, bodies, 1, 2))  # builds the reference, warms the device
            print(f"ready after {time.perf_counter() - began:.0f} s (model {size}, device {args.device})", flush=True)
            for i, clients in enumerate(levels):
                total = max(min_requests, 3 * clients)
                for batch in (1, 8) if i % 2 == 0 else (8, 1):
                    row: dict[str, Any] = {"clients": clients, "max batch": batch, "requests": total}
                    if time.perf_counter() - began > args.budget_s:
                        rows.append({**row, "skipped": "time budget"})
                        continue
                    server = servers[batch]
                    before = server.metrics()
                    with GpuSampler(args.device) as gpu:
                        stats = asyncio.run(drive(server.url, bodies, clients, total))
                    after = server.metrics()
                    batches = metric(after, "audio_score_predictor_batch_size_count") - metric(
                        before, "audio_score_predictor_batch_size_count"
                    )
                    items = metric(after, "audio_score_predictor_batch_size_sum") - metric(
                        before, "audio_score_predictor_batch_size_sum"
                    )
                    gpu_mean, gpu_max = gpu.summary()
                    row.update(
                        {
                            "scores/s": stats["throughput_rps"],
                            "p50 ms": stats["p50_ms"],
                            "p99 ms": stats["p99_ms"],
                            "mean batch": round(items / batches, 2) if batches else None,
                            "GPU util % (mean/max)": f"{gpu_mean}/{gpu_max}" if gpu_mean is not None else "n/a",
                            "overhead ms/request": per_request_overhead_ms(before, after, stats["mean_ms"], total),
                            "errors": stats["errors"],
                        }
                    )
                    rows.append(row)
                    print({k: v for k, v in row.items()}, flush=True)
        finally:
            for server in servers.values():
                server.stop()

    rows.sort(key=lambda r: (r["clients"], r["max batch"]))
    ratios = []
    for clients in levels:
        by = {r["max batch"]: r for r in rows if r["clients"] == clients and "scores/s" in r}
        if 1 in by and 8 in by and by[1]["scores/s"]:
            ratios.append(f"{clients} clients: batch 8 / batch 1 = {by[8]['scores/s'] / by[1]['scores/s']:.2f}x")
    elapsed = time.perf_counter() - began
    notes = (
        f"Model: random-weight Whisper, size `{size}`, {tokens} decoded tokens per request, device "
        f"`{args.device}`; {args.audio_seconds:g} s uploads scored against one cached reference over V2 binary "
        f"REST; AUDIO_SCORE_MAX_BATCH_WAIT_MS=10. Overhead = client latency - queue wait - model call. "
        + "; ".join(ratios)
        + f". Whole run: {elapsed:.0f} s."
    )
    write_results(out, {"args": vars(args), "size": size, "rows": rows, "seconds": round(elapsed, 1)}, rows, notes)
    failed = any(r.get("errors") for r in rows)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
