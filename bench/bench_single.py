"""What the router -> predictor split costs: ``POST /score`` on router + predictor vs the single-process shape.

Both shapes serve the same random-weight Whisper (end-of-text suppressed: every request decodes exactly
``--max-new-tokens`` tokens) with the same batching settings and the same torch thread count, against one cached
reference: the split is the real ``audio-score router`` and ``audio-score predictor`` processes on loopback;
the single process is ``bench/single_process.py`` (the same decoder, model and batcher in one process, as the
seed was built). For each client count the two take turns, ``--reps`` times, with the same WAV upload; the table
gives requests/s of each and their ratio (target: split >= 0.97x single).

Usage: python bench/bench_single.py [--size whisper-tiny] [--concurrency 1,8,32] [--reps 2] [--requests 16]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from bench_predictor import KEY, REPO, Server, fixed_length_decoding, speechlike, write_wav

from audio_score_tools.procs import free_port, http_ok, log_tail, stop_process, wait_ready
from audio_score_tools.tiny_models import build_tiny_whisper

from common import closed_loop, write_results


class Process:
    """A server subprocess that is ready when ``GET {url}{probe}`` answers 200."""

    def __init__(self, cmd: list[str], env: dict[str, str], log_path: Path, port: int, probe: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_path
        with log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, cwd=REPO, start_new_session=True
            )
        try:
            wait_ready(self.proc, http_ok(self.url + probe), timeout_s=600, what=" ".join(cmd[2:4]),
                       details=log_tail(log_path, 3000), poll_s=0.2)  # fmt: skip
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        stop_process(self.proc)


async def drive(url: str, upload: bytes, concurrency: int, total: int) -> dict[str, Any]:
    async def send(client: httpx.AsyncClient) -> httpx.Response:
        files = {"audio": ("take.wav", upload, "audio/wav")}
        return await client.post(f"{url}/score", data={"uid": "video1", "cid": "clip1"}, files=files)

    started = time.perf_counter()
    latencies, errors = await closed_loop(send, concurrency, total)
    wall = time.perf_counter() - started
    latencies.sort()
    return {
        "rps": total / wall,
        "p50_ms": statistics.median(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="whisper-tiny")
    parser.add_argument("--max-new-tokens", type=int, default=8)
    parser.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--requests", type=int, default=16, help="per repetition: max(this, 2 x clients)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each shape's model")
    parser.add_argument("--audio-seconds", type=float, default=5.0)
    parser.add_argument("--out", default="single")
    args = parser.parse_args(argv)

    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-single-") as tmp_name:
        tmp = Path(tmp_name)
        checkpoint = build_tiny_whisper(tmp / "models" / "whisper", size=args.size)
        fixed_length_decoding(checkpoint)
        write_wav(tmp / "clips" / "video1" / "clip1.wav", speechlike(args.audio_seconds, seed=0))
        (tmp / "cache").mkdir()
        config = tmp / "config.json"
        model = {"key": KEY, "type": "whisper", "model_id": str(checkpoint), "max_new_tokens": args.max_new_tokens}
        config.write_text(json.dumps({"models": [model], "video_clip_dir": "clips", "cache_dir": "cache"}))
        upload_path = tmp / "take.wav"
        write_wav(upload_path, speechlike(args.audio_seconds, seed=1))
        upload = upload_path.read_bytes()
        env = {
            "AUDIO_SCORE_DEVICE": "cpu",
            "AUDIO_SCORE_MAX_BATCH_SIZE": "8",
            "AUDIO_SCORE_MAX_BATCH_WAIT_MS": "10",
            "AUDIO_SCORE_MAX_QUEUE_SIZE": "256",
            "AUDIO_SCORE_TORCH_THREADS": str(args.threads),
        }
        py = sys.executable
        subprocess.run([py, "-m", "audio_score", "cache-build", "--config", str(config), "--no-progress"], check=True,
                       env={**os.environ, **env}, cwd=REPO, capture_output=True)  # fmt: skip
        started = []
        try:
            predictor = Server(config, env, tmp / "predictor.log")
            started.append(predictor)
            router_port = free_port()
            router_cmd = [py, "-m", "audio_score", "router", "--config", str(config), "--port", str(router_port)]
            router_cmd += ["--predictor-url", predictor.url]
            router = Process(router_cmd, env, tmp / "router.log", router_port, "/readyz")
            started.append(router)
            single_port = free_port()
            single_cmd = [py, str(REPO / "bench" / "single_process.py"), "--config", str(config)]
            single_cmd += ["--port", str(single_port)]
            single = Process(single_cmd, env, tmp / "single.log", single_port, "/healthz")
            started.append(single)
            shapes = {"split": router.url, "single": single.url}
            for name, url in shapes.items():  # warm-up, and a check that both shapes answer
                warm = asyncio.run(drive(url, upload, 1, 2))
                if warm["errors"]:
                    raise RuntimeError(f"{name} failed: {warm['first_error']}")
            for clients in args.concurrency:
                total = max(args.requests, 2 * clients)
                runs: dict[str, list[dict[str, Any]]] = {name: [] for name in shapes}
                for rep in range(args.reps):
                    for name in list(shapes) if rep % 2 == 0 else list(reversed(shapes)):
                        runs[name].append(asyncio.run(drive(shapes[name], upload, clients, total)))
                        print(f"{name} {clients} clients rep {rep}: {runs[name][-1]}", flush=True)
                split = statistics.median(r["rps"] for r in runs["split"])
                one = statistics.median(r["rps"] for r in runs["single"])
                rows.append(
                    {
                        "clients": clients,
                        "requests": f"{args.reps} x {total}",
                        "rps split": round(split, 3),
                        "rps single": round(one, 3),
                        "split / single": round(split / one, 3),
                        "p50 ms split": round(statistics.median(r["p50_ms"] for r in runs["split"]), 1),
                        "p50 ms single": round(statistics.median(r["p50_ms"] for r in runs["single"]), 1),
                        "errors": sum(r["errors"] for rs in runs.values() for r in rs),
                    }
                )
        finally:
            for server in reversed(started):
                server.stop()
    notes = (
        f"Model: random-weight Whisper `{args.size}`, {args.max_new_tokens} decoded tokens, CPU, "
        f"{args.threads} torch thread(s) in each shape; {args.audio_seconds:g} s WAV uploads to POST /score; batch "
        f"8, wait 10 ms. Split = audio-score router + audio-score predictor on loopback; single = "
        "bench/single_process.py. rps: median of the alternating repetitions. Target: split >= 0.97x single."
    )
    write_results(args.out, {"args": vars(args), "rows": rows}, rows, notes)
    return 1 if any(r["errors"] for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
