"""The predictor's dynamic batching: throughput and p50/p99 latency at concurrency 1, 8 and 32 with
AUDIO_SCORE_MAX_BATCH_SIZE 1 vs 8 (same model, same inputs, one run), plus start-up time and resident memory
with 100,000 reference entries on disk.

Each configuration is the real ``audio-score predictor`` process (KServe ModelServer) on a loopback port, driven
over V2 REST with the binary tensor extension (httpx, :mod:`audio_score.v2`), scoring against a cached
reference. The model is a random-weight Whisper of a real size whose end-of-text token is suppressed, so every
request decodes exactly ``--max-new-tokens`` tokens (random weights would otherwise stop at random lengths).

Usage: python bench/bench_predictor.py [--size whisper-tiny] [--device auto] [--max-new-tokens 16]
       [--concurrency 1,8,32] [--batch-sizes 1,8] [--reps 3] [--rounds 2] [--entries 100000]
A GPU run: python bench/bench_predictor.py --size whisper-small --device cuda --out predictor-gpu
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import statistics
import subprocess
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from audio_score import v2
from audio_score_tools.procs import free_port, http_ok, log_tail, stop_process, subcommand, wait_ready
from audio_score_tools.tiny_models import build_tiny_whisper

from common import closed_loop, write_results  # bench/ is on sys.path when run as a script

KEY = "whisper"
RATE = 16000
REPO = Path(__file__).resolve().parent.parent


def speechlike(seconds: float, seed: int) -> np.ndarray:
    """Voiced-sounding noise: a few harmonics with a wandering pitch under a syllable-rate envelope."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    pitch = 120 + 30 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voice = sum(np.sin(k * phase) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * rng.uniform(3, 5) * t) ** 2
    audio = 0.2 * voice * envelope + rng.normal(0, 0.01, t.size)
    return audio.astype(np.float32)


def write_wav(path: Path, samples: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(RATE)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())


def fixed_length_decoding(checkpoint: Path) -> None:
    """Suppress end-of-text so every transcript is exactly max_new_tokens long."""
    path = checkpoint / "generation_config.json"
    config = json.loads(path.read_text())
    config["suppress_tokens"] = sorted({*config.get("suppress_tokens", []), int(config["eos_token_id"])})
    path.write_text(json.dumps(config, indent=2))


def fill_entries(cache_model_dir: Path, source: Path, count: int) -> float:
    """``count`` copies of a real entry (hard links of its four files; one source per 1000 to stay under the
    filesystem's link limit). Returns the seconds it took."""
    started = time.perf_counter()
    files = [p for p in source.iterdir() if p.is_file()]
    per_uid = 1000
    for u in range((count + per_uid - 1) // per_uid):
        uid_dir = cache_model_dir / f"bulk{u:05d}"
        uid_dir.mkdir(parents=True)
        template = uid_dir / ".template"
        template.mkdir()
        for f in files:
            shutil.copy2(f, template / f.name)
        for c in range(min(per_uid, count - u * per_uid)):
            entry = uid_dir / f"c{c:04d}"
            entry.mkdir()
            for f in files:
                os.link(template / f.name, entry / f.name)
    return time.perf_counter() - started


def rss_mb(pid: int) -> dict[str, float]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            fields[name] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS", 0.0), "peak_rss_mb": fields.get("VmHWM", 0.0)}


class Server:
    def __init__(self, config: Path, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        cmd = subcommand("predictor", "--config", str(config), "--http-port", str(self.port), "--no-grpc")
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO, start_new_session=True
            )
        try:
            self.startup_s = wait_ready(
                self.proc,
                http_ok(v2.ready_url(self.url, KEY)),
                timeout_s=600,
                what="predictor",
                details=log_tail(log_path, 3000),
                poll_s=0.1,
            )
        except BaseException:
            self.stop()
            raise

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics", timeout=30).text

    def stop(self) -> None:
        stop_process(self.proc)


def metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf'^{re.escape(name)}\{{model="{KEY}"\}} (\S+)$', line)
        if match:
            total += float(match.group(1))
    return total


async def drive(url: str, bodies: list[tuple[bytes, dict[str, str]]], concurrency: int, total: int) -> dict[str, Any]:
    """``total`` scoring requests from ``concurrency`` closed-loop clients; latencies in ms."""
    turn = iter(range(total))

    async def send(client: httpx.AsyncClient) -> httpx.Response:
        body, headers = bodies[next(turn) % len(bodies)]
        response = await client.post(v2.infer_url(url, KEY), content=body, headers=headers)
        if response.status_code == 200:
            v2.parse_score_response(response.content, response.headers)  # a malformed answer fails the run
        return response

    started = time.perf_counter()
    latencies, errors = await closed_loop(send, concurrency, total)
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": total,
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
        "seconds": round(wall, 3),
        "throughput_rps": round(total / wall, 3),
        "p50_ms": round(float(np.percentile(latencies, 50)), 1),
        "p99_ms": round(float(np.percentile(latencies, 99)), 1),
        "mean_ms": round(statistics.fmean(latencies), 1),
        "latencies_ms": latencies,
    }


def run_interleaved(
    config: Path,
    base_env: dict[str, str],
    bodies: list[tuple[bytes, dict[str, str]]],
    args: argparse.Namespace,
    tmp: Path,
) -> list[dict[str, Any]]:
    """Every batch size's server runs at once; for each concurrency level the configurations take turns, ``--reps``
    times (alternating which goes first), so a change in the machine's load hits both alike. Throughput is the
    median over the repetitions; p50/p99 come from every latency of the level pooled."""
    servers = {}
    results: dict[int, dict[str, Any]] = {}
    try:
        for batch in args.batch_sizes:
            env = {**base_env, "AUDIO_SCORE_MAX_BATCH_SIZE": str(batch), "AUDIO_SCORE_MAX_BATCH_WAIT_MS": "10"}
            server = Server(config, env, tmp / f"predictor-batch{batch}.log")
            servers[batch] = server
            results[batch] = {
                "max_batch_size": batch,
                "startup_s": round(server.startup_s, 2),
                **rss_mb(server.proc.pid),
            }
            # Warm-up: the first request builds the reference entry if missing, and warms the allocator.
            asyncio.run(drive(server.url, bodies, 1, 2))
            results[batch]["levels"] = []
        for concurrency in args.concurrency:
            total = max(args.min_requests, args.rounds * concurrency)
            reps: dict[int, list[dict[str, Any]]] = {b: [] for b in servers}
            for rep in range(args.reps):
                order = list(servers) if rep % 2 == 0 else list(reversed(servers))
                for batch in order:
                    server = servers[batch]
                    before = server.metrics()
                    stats = asyncio.run(drive(server.url, bodies, concurrency, total))
                    after = server.metrics()
                    count = "audio_score_predictor_batch_size_count"
                    summed = "audio_score_predictor_batch_size_sum"
                    batches = metric(after, count) - metric(before, count)
                    items = metric(after, summed) - metric(before, summed)
                    stats["mean_batch"] = round(items / batches, 2) if batches else None
                    reps[batch].append(stats)
                    short = {k: stats[k] for k in ("throughput_rps", "p50_ms", "p99_ms", "mean_batch")}
                    print(f"batch {batch} concurrency {concurrency} rep {rep}: {short}", flush=True)
            for batch, runs in reps.items():
                pooled = sorted(x for r in runs for x in r.pop("latencies_ms"))
                results[batch]["levels"].append(
                    {
                        "concurrency": concurrency,
                        "requests": total,
                        "reps": args.reps,
                        "throughput_rps": round(statistics.median(r["throughput_rps"] for r in runs), 3),
                        "throughput_rps_each": [r["throughput_rps"] for r in runs],
                        "p50_ms": round(float(np.percentile(pooled, 50)), 1),
                        "p99_ms": round(float(np.percentile(pooled, 99)), 1),
                        "mean_batch": runs[-1]["mean_batch"],
                        "errors": sum(r["errors"] for r in runs),
                        "first_error": next((r["first_error"] for r in runs if r["first_error"]), None),
                    }
                )
        for batch, server in servers.items():
            results[batch].update({f"after_{k}": v for k, v in rss_mb(server.proc.pid).items()})
    finally:
        for server in servers.values():
            server.stop()
    return [results[b] for b in args.batch_sizes]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="whisper-tiny", help="tiny_models size: tiny, whisper-tiny, whisper-small")
    parser.add_argument("--device", default="auto", help="AUDIO_SCORE_DEVICE for the predictor (auto, cpu, cuda)")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    parser.add_argument("--reps", type=int, default=3, help="alternating repetitions per level and batch size")
    parser.add_argument("--rounds", type=int, default=2, help="requests per level = max(min, rounds x concurrency)")
    parser.add_argument("--min-requests", type=int, default=8)
    parser.add_argument("--audio-seconds", type=float, default=5.0)
    parser.add_argument("--entries", type=int, default=100_000, help="cache entries for the start-up figure")
    parser.add_argument("--out", default="predictor", help="results name under bench/results/")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-predictor-") as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = build_tiny_whisper(tmp / "models" / "whisper", size=args.size)
        fixed_length_decoding(checkpoint)
        reference = speechlike(args.audio_seconds, seed=0)
        write_wav(tmp / "clips" / "video1" / "clip1.wav", reference)
        (tmp / "cache").mkdir()
        config = tmp / "config.json"
        model = {"key": KEY, "type": "whisper", "model_id": str(checkpoint), "max_new_tokens": args.max_new_tokens}
        config.write_text(
            json.dumps(
                {"models": [model], "video_clip_dir": "clips", "cache_dir": "cache", "target_sampling_rate": RATE}
            )
        )
        # Eight distinct uploads, the same for every configuration, all scored against video1/clip1.
        bodies = [
            v2.build_score_request(speechlike(args.audio_seconds, seed=s), "video1", "clip1") for s in range(1, 9)
        ]
        base_env = {"AUDIO_SCORE_DEVICE": args.device, "AUDIO_SCORE_MAX_QUEUE_SIZE": "256"}

        runs = run_interleaved(config, base_env, bodies, args, tmp)

        # Start-up with N entries on disk: copies of the real entry the first run built.
        entry_dir = tmp / "cache" / KEY / "video1" / "clip1"
        fill_s = fill_entries(tmp / "cache" / KEY, entry_dir, args.entries)
        env = {**base_env, "AUDIO_SCORE_MAX_BATCH_SIZE": str(max(args.batch_sizes))}
        server = Server(config, env, tmp / "predictor-entries.log")
        try:
            startup = {
                "entries": args.entries,
                "fill_seconds": round(fill_s, 1),
                "startup_s": round(server.startup_s, 2),
            }
            startup.update(rss_mb(server.proc.pid))
            metrics = server.metrics()
            startup["entries_in_memory_at_start"] = metric(metrics, "audio_score_predictor_reference_cache_entries")
            last = args.entries - 1  # the last entry written: bulk<u>/c<c>
            body, headers = v2.build_score_request(reference, f"bulk{last // 1000:05d}", f"c{last % 1000:04d}")
            started = time.perf_counter()
            response = httpx.post(v2.infer_url(server.url, KEY), content=body, headers=headers, timeout=600)
            startup["first_request_on_a_bulk_entry_ms"] = round((time.perf_counter() - started) * 1000, 1)
            startup["first_request_status"] = response.status_code
        finally:
            server.stop()
        empty_startup = runs[-1]["startup_s"]

    rows = []
    by_batch = {r["max_batch_size"]: r for r in runs}
    lo, hi = min(by_batch), max(by_batch)
    for i, concurrency in enumerate(args.concurrency):
        a, b = by_batch[lo]["levels"][i], by_batch[hi]["levels"][i]
        rows.append(
            {
                "concurrency": concurrency,
                "requests": f"{a['reps']} x {a['requests']}",
                f"rps (batch {lo})": a["throughput_rps"],
                f"rps (batch {hi})": b["throughput_rps"],
                f"ratio {hi}/{lo}": round(b["throughput_rps"] / a["throughput_rps"], 2),
                f"p50 ms (batch {lo})": a["p50_ms"],
                f"p50 ms (batch {hi})": b["p50_ms"],
                f"p99 ms (batch {lo})": a["p99_ms"],
                f"p99 ms (batch {hi})": b["p99_ms"],
                f"mean batch (max {hi})": b["mean_batch"],
                "errors": a["errors"] + b["errors"],
            }
        )
    notes = (
        f"Model: random-weight Whisper of size `{args.size}`, {args.max_new_tokens} decoded tokens per request "
        f"(end-of-text suppressed), device `{args.device}`; uploads of {args.audio_seconds:g} s, V2 binary REST "
        f"(httpx), scoring against one cached reference; AUDIO_SCORE_MAX_BATCH_WAIT_MS=10. Both servers run at "
        f"once and take turns: per level {args.reps} alternating repetitions of max({args.min_requests}, "
        f"{args.rounds} x concurrency) requests from closed-loop clients, after 2 warm-up requests. rps is the "
        "median over the repetitions (each is in the JSON), p50/p99 pool every latency of the level; with this "
        "few requests p99 is close to the maximum.\n\n"
        f"Start-up: {empty_startup:.1f} s to ready with 1 entry on disk vs {startup['startup_s']:.1f} s with "
        f"{args.entries:,} entries (RSS at ready {by_batch[hi]['rss_mb']:.0f} MiB vs {startup['rss_mb']:.0f} MiB; "
        f"entries in memory at start: {startup['entries_in_memory_at_start']:.0f}); the first request naming one "
        f"of them took {startup['first_request_on_a_bulk_entry_ms']:.0f} ms (status "
        f"{startup['first_request_status']})."
    )
    payload = {
        "args": vars(args),
        "runs": runs,
        "startup_with_entries": startup,
    }
    write_results(args.out, payload, rows, notes)


if __name__ == "__main__":
    main()
