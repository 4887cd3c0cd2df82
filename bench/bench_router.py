"""What the router adds: POST /score end to end vs a direct V2 call to the predictor with the same PCM.

Setup: a workspace with the tiny Whisper model (random weights, real format), its cache built by the real
``audio-score cache-build``; the real ``audio-score predictor`` (KServe ModelServer) and the real
``audio-score router`` as separate processes on loopback ports, as in a deployment. Inputs: 10 s of speech-like
audio written as a WAV (PCM 16-bit, 44.1 kHz) and as an MP3, scored against the reference ``video1/clip1``.

For each format and concurrency (closed-loop clients), three ways of scoring take turns, ``--rounds`` times:
- ``router``: multipart upload of the file to ``/score`` (the router decodes, then calls the predictor over V2
  binary);
- ``v2 binary``: the same PCM (decoded here once, beforehand, with the same decoder) straight to the predictor with
  the binary tensor extension;
- ``v2 json``: the same PCM as a JSON list of numbers.
Bodies are built once, before timing. The router's added milliseconds are router minus v2 binary; the router's
own share is also read from its /metrics (mean request seconds minus mean predictor-call seconds, which is the
decode plus the form parsing and the V2 encoding).

Usage: python bench/bench_router.py [--requests-c1 12] [--requests-c16 32] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from audio_score import v2
from audio_score.audio import decode_audio
from audio_score_tools.media import synth_speechlike, write_audio
from audio_score_tools.procs import free_port, http_ok, log_tail, stop_process, subcommand, wait_ready
from audio_score_tools.workspace import build_workspace

from common import closed_loop, write_results  # bench/ is on sys.path when run as a script

REPO = Path(__file__).resolve().parent.parent
KEY = "whisper-tiny"
RATE = 16000
UID, CID = "video1", "clip1"
MODES = ("router", "v2 binary", "v2 json")


def start(argv: list[str], log_path: Path, probe: str, timeout_s: float = 300) -> subprocess.Popen:
    """``audio-score ARGV`` in its own process group, once ``probe`` answers 200 (stop it with :func:`stop`)."""
    proc = subprocess.Popen(
        subcommand(*argv), stdout=log_path.open("wb"), stderr=subprocess.STDOUT, cwd=REPO, start_new_session=True
    )
    try:
        wait_ready(proc, http_ok(probe), timeout_s=timeout_s, what=argv[0], details=log_tail(log_path, 3000))
    except BaseException:
        stop_process(proc)
        raise
    return proc


def stop(proc: subprocess.Popen) -> None:
    stop_process(proc)


def json_body(samples: np.ndarray) -> tuple[bytes, dict[str, str]]:
    doc = {
        "inputs": [
            {"name": "audio", "datatype": "FP32", "shape": [1, int(samples.size)], "data": samples.tolist()},
            {"name": "uid", "datatype": "BYTES", "shape": [1], "data": [UID]},
            {"name": "cid", "datatype": "BYTES", "shape": [1], "data": [CID]},
        ]
    }
    return json.dumps(doc).encode(), {"content-type": "application/json"}


def encode_ms(build, reps: int) -> float:
    """Median milliseconds to build a request body (what a client, or the router, pays per request)."""
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        build()
        times.append((time.perf_counter() - started) * 1000)
    return float(np.median(times))


def router_metrics(url: str) -> dict[str, float]:
    """Sums and counts of the router's histograms (all models together)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=30).text):
        for sample in family.samples:
            if sample.name.endswith(("_seconds_sum", "_seconds_count")):
                out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests-c1", type=int, default=12, help="requests per round at concurrency 1")
    parser.add_argument("--requests-c16", type=int, default=32, help="requests per round at concurrency 16")
    parser.add_argument("--rounds", type=int, default=2, help="turns each mode takes per configuration")
    parser.add_argument("--out", default="router", help="results name under bench/results/")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench-router-"))
    ws = build_workspace(tmp / "ws", model_keys=[KEY])
    subprocess.run(
        [sys.executable, "-m", "audio_score", "cache-build", "--config", str(ws.config_path), "--no-progress"],
        check=True,
        cwd=REPO,
        capture_output=True,
    )
    speech = synth_speechlike(10.0, 44100, seed=11)
    files = {
        "WAV": write_audio(tmp / "take.wav", speech, 44100),
        "MP3": write_audio(tmp / "take.mp3", speech, 44100),
    }

    pport, rport = free_port(), free_port()
    purl, rurl = f"http://127.0.0.1:{pport}", f"http://127.0.0.1:{rport}"
    started = time.perf_counter()
    predictor = start(
        ["predictor", "--config", str(ws.config_path), "--http-port", str(pport), "--no-grpc"],
        tmp / "predictor.log",
        v2.ready_url(purl, KEY),
    )
    predictor_start_s = time.perf_counter() - started
    router = None
    rows: list[dict[str, Any]] = []
    raw: list[dict[str, Any]] = []
    encoding: dict[str, dict[str, float]] = {}
    try:
        started = time.perf_counter()
        router = start(
            ["router", "--config", str(ws.config_path), "--port", str(rport), "--predictor-url", purl],
            tmp / "router.log",
            f"{rurl}/readyz",
        )
        router_start_s = time.perf_counter() - started
        for fmt, path in files.items():
            data = path.read_bytes()
            pcm = decode_audio(data, sampling_rate=RATE)
            binary = v2.build_score_request(pcm, UID, CID)
            jbody = json_body(pcm)
            sizes = {"router": len(data), "v2 binary": len(binary[0]), "v2 json": len(jbody[0])}
            encoding[fmt] = {
                "v2 binary": round(encode_ms(lambda pcm=pcm: v2.build_score_request(pcm, UID, CID), 20), 2),
                "v2 json": round(encode_ms(lambda pcm=pcm: json_body(pcm), 5), 2),
            }

            def sender(mode: str, data: bytes = data, binary=binary, jbody=jbody, fmt: str = fmt):
                if mode == "router":
                    form = {"uid": UID, "cid": CID, "model": KEY}
                    upload = {"audio": (f"take.{fmt.lower()}", data)}
                    return lambda c: c.post(f"{rurl}/score", data=form, files=upload)
                body, headers = binary if mode == "v2 binary" else jbody
                return lambda c: c.post(v2.infer_url(purl, KEY), content=body, headers=headers)

            for concurrency, total in ((1, args.requests_c1), (16, args.requests_c16)):
                results: dict[str, dict[str, Any]] = {m: {"lat": [], "err": []} for m in MODES}
                for mode in MODES:  # warm-up (connections, caches)
                    asyncio.run(closed_loop(sender(mode), 1, 2))
                before = router_metrics(rurl)
                for _ in range(args.rounds):
                    for mode in MODES:
                        lat, err = asyncio.run(closed_loop(sender(mode), concurrency, total))
                        results[mode]["lat"] += lat
                        results[mode]["err"] += err
                after = router_metrics(rurl)
                count = (
                    after["audio_score_router_request_seconds_count"]
                    - before["audio_score_router_request_seconds_count"]
                )

                def mean_ms(name: str, after=after, before=before, count=count) -> float:
                    return 1000 * (after[f"{name}_sum"] - before[f"{name}_sum"]) / count

                own = {
                    "request": mean_ms("audio_score_router_request_seconds"),
                    "decode": mean_ms("audio_score_router_decode_seconds"),
                    "predictor": mean_ms("audio_score_router_predictor_seconds"),
                }
                p = {m: np.percentile(results[m]["lat"], [50, 99]) for m in MODES}
                for mode in MODES:
                    lat = results[mode]["lat"]
                    rows.append(
                        {
                            "format": fmt,
                            "concurrency": concurrency,
                            "mode": mode,
                            "body bytes": sizes[mode],
                            "requests": len(lat),
                            "errors": len(results[mode]["err"]),
                            "p50 ms": round(float(p[mode][0]), 1),
                            "p99 ms": round(float(p[mode][1]), 1),
                            "router adds p50 ms": round(float(p["router"][0] - p["v2 binary"][0]), 1)
                            if mode == "router"
                            else None,
                            "router adds p99 ms": round(float(p["router"][1] - p["v2 binary"][1]), 1)
                            if mode == "router"
                            else None,
                            "router own mean ms (decode)": f"{own['request'] - own['predictor']:.1f} "
                            f"({own['decode']:.1f})"
                            if mode == "router"
                            else None,
                        }
                    )
                    raw.append(
                        {
                            "format": fmt,
                            "concurrency": concurrency,
                            "mode": mode,
                            "latencies_ms": [round(x, 2) for x in sorted(lat)],
                            "errors": results[mode]["err"][:3],
                            **({"router_metrics_mean_ms": own} if mode == "router" else {}),
                        }
                    )
                print(json.dumps(rows[-3:], default=str), flush=True)
    finally:
        if router is not None:
            stop(router)
        stop(predictor)

    notes = (
        f"Model: `{KEY}`, a random-weight Whisper in the real format (tiny: the predictor's time is far below a real "
        "model's, which makes the router's share look larger than it would be), 8 decoded tokens, CPU only; "
        f"predictor (KServe ModelServer) and router (uvicorn, 1 worker) as separate processes on loopback, sharing "
        f"the machine's {os.cpu_count()} cores with the load generator. Upload: 10 s of speech-like audio, 44.1 kHz "
        "mono, as WAV (PCM 16-bit) and MP3; direct calls send the same PCM (decoded once beforehand with the same "
        "decoder, 160,000 float32 samples at 16 kHz). Bodies built before timing. "
        f"{args.rounds} rounds per configuration, modes taking turns; requests per round: {args.requests_c1} at "
        f"concurrency 1, {args.requests_c16} at 16 (closed-loop clients), after 2 warm-up requests per mode; with "
        "this few requests p99 is close to the maximum. 'router adds' = router minus V2 binary at the same "
        "percentile; 'router own mean' = from the router's /metrics, mean /score seconds minus mean predictor-call "
        "seconds (the decode alone in brackets). At concurrency 16 the requests queue in the predictor (its batch "
        "limit is 8) and the router's decoding competes with it for the same 2 cores, so the differences there are "
        f"mostly noise and contention. Start-up: predictor {predictor_start_s:.1f} s, router {router_start_s:.1f} s."
        f"\n\nBuilding the V2 body for 10 s of 16 kHz PCM (median, in this process): binary "
        f"{encoding['WAV']['v2 binary']:.2f} ms ({sizes['v2 binary']:,} bytes) vs JSON "
        f"{encoding['WAV']['v2 json']:.1f} ms ({sizes['v2 json']:,} bytes). The router sends binary and pays the "
        "first per request; a router sending JSON would pay the second (the timed direct calls above paid neither: "
        "their bodies were built beforehand)."
    )
    write_results(args.out, {"rows": rows, "raw": raw, "encode_ms": encoding}, rows, notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
