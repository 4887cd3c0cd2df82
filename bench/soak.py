"""Soak: ``audio-score up`` with tiny models on loopback under steady load, with bad inputs mixed in.

Setup: a workspace with the tiny Whisper and Higgs models (random weights, real formats) and real .mov reference
clips; the real ``audio-score up`` (cache build, one predictor process per model, the router) on free loopback
ports, with the upload limit lowered to 1 MB so that an oversized upload is cheap to send.

Load: ``--concurrency`` closed-loop clients (default 32) for ``--minutes`` (default 10). Each request is a valid
one (a reference clip uploaded as itself, a random model) or, with probability ``--bad-share`` (default 0.1), one
of six bad inputs, in turn: undecodable bytes, an empty file, an unknown clip, an unknown model, an upload just
over the limit (read whole, refused by the decoder) and one twice the limit (refused from its Content-Length by
the upload-limit middleware). Valid requests must all answer 200; bad ones their 4xx; nothing may answer 5xx.

Memory: the RSS of every process (``up`` itself, the router, each predictor) at the start (before any request),
every minute, and at the end. "Flat after warm-up" compares the end with the one-minute sample.

Usage: python bench/soak.py [--minutes 10] [--concurrency 32] [--bad-share 0.1] [--out soak]
Writes bench/results/<out>.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil

from audio_score_tools.procs import free_port
from audio_score_tools.workspace import build_workspace

from common import closed_loop, write_results  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
MAX_UPLOAD = 1_000_000
BAD_KINDS = ("undecodable", "empty", "unknown clip", "unknown model", "oversized", "far oversized")
EXPECTED = {
    "undecodable": 400,
    "empty": 400,
    "unknown clip": 404,
    "unknown model": 404,
    "oversized": 413,
    "far oversized": 413,
}


def start_up(config: Path, log_dir: Path, timeout_s: float = 600) -> tuple[subprocess.Popen, str, list[str]]:
    """``audio-score up`` in its own session; returns it, the router URL and its stdout lines so far."""
    port, pport = free_port(), free_port()
    cmd = [sys.executable, "-m", "audio_score", "up", "--config", str(config), "--port", str(port)]
    cmd += ["--predictor-port", str(pport), "--log-dir", str(log_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "AUDIO_SCORE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD)}
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
    )
    lines: list[str] = []

    def pump() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip("\n"))

    threading.Thread(target=pump, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not any(line.startswith("audio-score is up") for line in lines):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"up did not start (exit {proc.poll()}):\n" + "\n".join(lines[-20:]))
        time.sleep(0.2)
    return proc, f"http://127.0.0.1:{port}", lines


def processes(up: subprocess.Popen) -> dict[str, psutil.Process]:
    """``up``, the router and each predictor, named by role (the predictor by its ``--model``)."""
    found = {"up": psutil.Process(up.pid)}
    for child in found["up"].children():
        cmd = child.cmdline()
        if "router" in cmd:
            found["router"] = child
        elif "predictor" in cmd:
            models = [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == "--model"]
            found[f"predictor {','.join(models) or 'shared'}"] = child
    return found


def rss_mb(procs: dict[str, psutil.Process]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for name, proc in procs.items():
        try:
            out[name] = round(proc.memory_info().rss / 2**20, 1)
        except psutil.NoSuchProcess:
            out[name] = None  # it died (a restart would show as a new pid in up's output)
    return out


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--concurrency", type=int, default=32, help="closed-loop clients (default 32)")
    parser.add_argument("--bad-share", type=float, default=0.1, help="share of bad inputs (default 0.1)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="soak", help="results name under bench/results/")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    ws = build_workspace(tmp / "ws")
    keys = ws.model_keys
    clips = {key: path.read_bytes() for key, path in ws.clips.items()}
    rng = random.Random(args.seed)
    undecodable = bytes(rng.getrandbits(8) for _ in range(4096))
    # Just over the limit: read whole, refused by the decoder's size check. Far over it: refused from its
    # Content-Length by the router's upload-limit middleware before the body is read.
    oversized = {"oversized": bytes(MAX_UPLOAD + 10_000), "far oversized": bytes(2 * MAX_UPLOAD)}

    started = time.monotonic()
    up, url, up_lines = start_up(ws.config_path, tmp / "logs")
    start_s = time.monotonic() - started
    procs = processes(up)
    samples: list[dict[str, Any]] = [{"minute": 0.0, "label": "start", **rss_mb(procs)}]
    results: list[tuple[str, int, float]] = []  # (kind, status, ms)
    bad_turn = iter(range(10**9))
    failures: collections.Counter[str] = collections.Counter()

    async def send(client: httpx.AsyncClient) -> httpx.Response:
        uid, cid = rng.choice(sorted(clips))
        form = {"uid": uid, "cid": cid, "model": rng.choice(keys)}
        audio: bytes = clips[(uid, cid)]
        kind = "valid"
        if rng.random() < args.bad_share:
            kind = BAD_KINDS[next(bad_turn) % len(BAD_KINDS)]
            if kind == "undecodable":
                audio = undecodable
            elif kind == "empty":
                audio = b""
            elif kind == "unknown clip":
                form["cid"] = "no-such-clip"
            elif kind == "unknown model":
                form["model"] = "no-such-model"
            else:
                audio = oversized[kind]
        t0 = time.perf_counter()
        try:
            response = await client.post(f"{url}/score", data=form, files={"audio": ("take.mov", audio)})
        except httpx.HTTPError as exc:  # no answer at all: recorded as status 0, with the exception's name
            results.append((kind, 0, (time.perf_counter() - t0) * 1000))
            failures[f"{kind}: {type(exc).__name__}: {exc}"[:200]] += 1
            return httpx.Response(599, text=f"{type(exc).__name__}: {exc}")
        results.append((kind, response.status_code, (time.perf_counter() - t0) * 1000))
        return response

    async def sample_memory(deadline: float) -> None:
        minute = 1
        while True:
            wait = load_started + 60 * minute - time.monotonic()
            if load_started + 60 * minute >= deadline:
                return
            await asyncio.sleep(wait)
            samples.append({"minute": float(minute), "label": f"{minute} min", **rss_mb(procs)})
            print(f"soak: {minute} min, {len(results)} requests, rss {samples[-1]}", flush=True)
            minute += 1

    async def run() -> None:
        deadline = time.monotonic() + 60 * args.minutes
        memory = asyncio.create_task(sample_memory(deadline))
        await closed_loop(send, args.concurrency, 10**9, until=deadline)
        memory.cancel()

    load_started = time.monotonic()
    try:
        asyncio.run(run())
        duration_s = time.monotonic() - load_started
        samples.append({"minute": round(duration_s / 60, 2), "label": "end", **rss_mb(procs)})
        restarts = [line for line in up_lines if " exited (" in line or " restarted " in line]
    finally:
        up.send_signal(signal.SIGTERM)
        try:
            up.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)

    by_kind: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
    for kind, status, _ in results:
        by_kind[kind][status] += 1
    valid_ms = [ms for kind, status, ms in results if kind == "valid" and status == 200]
    bad_ms = [ms for kind, _, ms in results if kind != "valid"]
    valid_errors = sum(n for status, n in by_kind["valid"].items() if status != 200)
    server_errors = sum(n for c in by_kind.values() for status, n in c.items() if status >= 500)
    no_answer = sum(n for c in by_kind.values() for status, n in c.items() if status == 0)
    wrong_bad = sum(n for kind in BAD_KINDS for status, n in by_kind[kind].items() if status != EXPECTED[kind])
    names = [n for n in samples[0] if n not in ("minute", "label")]
    warm = next((s for s in samples if s["label"] == "1 min"), samples[0])
    growth = {
        n: round(samples[-1][n] - warm[n], 1) if samples[-1][n] is not None and warm[n] is not None else None
        for n in names
    }
    summary = {
        "minutes": round(duration_s / 60, 2),
        "concurrency": args.concurrency,
        "requests": len(results),
        "rps": round(len(results) / duration_s, 1),
        "valid": sum(by_kind["valid"].values()),
        "valid_errors": valid_errors,
        "5xx": server_errors,
        "no_answer": no_answer,
        "bad_answered_unexpectedly": wrong_bad,
        "valid_p50_ms": percentile(valid_ms, 50),
        "valid_p99_ms": percentile(valid_ms, 99),
        "bad_p50_ms": percentile(bad_ms, 50),
        "bad_p99_ms": percentile(bad_ms, 99),
        "up_start_s": round(start_s, 1),
        "rss_growth_after_warmup_mb": growth,
        "restarts": restarts,
        "no_answer_reasons": dict(failures),
    }
    status_rows = [
        {"input": kind, "expected": 200 if kind == "valid" else EXPECTED[kind], **{"answers": dict(by_kind[kind])}}
        for kind in ("valid", *BAD_KINDS)
    ]
    verdict = (
        f"valid requests not 200: {valid_errors}; 5xx: {server_errors}; no answer at all: {no_answer}; bad inputs "
        f"answered other than their 4xx: {wrong_bad}; RSS change from the 1-minute sample to the end (MB): "
        + ", ".join(f"{n} {g:+.1f}" if g is not None else f"{n} gone" for n, g in growth.items())
    )
    notes = (
        f"{summary['requests']} requests in {summary['minutes']} min at concurrency {args.concurrency} "
        f"({summary['rps']} req/s), {args.bad_share:.0%} bad inputs. Valid p50 {summary['valid_p50_ms']} ms, "
        f"p99 {summary['valid_p99_ms']} ms; bad p50 {summary['bad_p50_ms']} ms, p99 {summary['bad_p99_ms']} ms.\n\n"
        f"Answers by input:\n\n"
        + "\n".join(
            f"- {r['input']} (expected {r['expected']}): "
            + ", ".join(f"{s}: {n}" for s, n in sorted(r["answers"].items()))
            for r in status_rows
        )
        + f"\n\n{verdict}\n\nRestarts: {'; '.join(restarts) or 'none'}.\n\n"
        + (
            "Requests that got no answer at all (status 0 above): "
            + "; ".join(f"{n} x {what}" for what, n in failures.most_common())
            + ".\n\n"
            if failures
            else ""
        )
        + "Rows: RSS in MB of each process (`up` itself, the router, each model's predictor) at the start (before "
        "any request), every minute and at the end."
    )
    write_results(
        args.out,
        {"summary": summary, "answers": status_rows, "rss_mb": samples, "args": vars(args)},
        [{k: v for k, v in s.items() if k != "minute"} for s in samples],
        notes,
    )
    ok = valid_errors == 0 and server_errors == 0
    print(f"soak: {'OK' if ok else 'FAILED'}: {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
