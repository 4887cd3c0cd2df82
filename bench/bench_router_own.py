"""The router's own time for a 10 s upload, without the decode and without the predictor.

The real router app (``router.app.create_app``) in process, driven over ASGI (no sockets), with the predictor call
replaced by one that answers at once. A 10 s upload (WAV 44.1 kHz and MP3) is sent as a multipart body encoded
once beforehand; per request the time from sending to the parsed answer is measured, and the decode time is read
from the router's own ``audio_score_router_decode_seconds`` histogram for the same requests. Own time = total -
decode: multipart parsing, validation, readiness, the V2 body build, the answer's JSON. What this leaves out is the
network: a deployment adds one loopback or pod-to-pod hop for the upload and one for the V2 body.

Usage: python bench/bench_router_own.py [--requests 40] [--out router-own]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results


def decode_seconds(text: str) -> tuple[float, float]:
    """(sum, count) of the router's decode histogram in a /metrics text."""
    total = count = 0.0
    for line in text.splitlines():
        if line.startswith("audio_score_router_decode_seconds_sum"):
            total = float(line.split()[-1])
        elif line.startswith("audio_score_router_decode_seconds_count"):
            count = float(line.split()[-1])
    return total, count


async def measure(app: Any, body: bytes, content_type: str, requests: int) -> dict[str, float]:
    import httpx

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://router") as client:
            headers = {"content-type": content_type}
            for _ in range(3):  # warm-up
                assert (await client.post("/score", content=body, headers=headers)).status_code == 200
            before = decode_seconds((await client.get("/metrics")).text)
            times = []
            for _ in range(requests):
                started = time.perf_counter()
                response = await client.post("/score", content=body, headers=headers)
                response.json()
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text
            after = decode_seconds((await client.get("/metrics")).text)
    decode_ms = 1000 * (after[0] - before[0]) / (after[1] - before[1])
    total_p50 = 1000 * statistics.median(times)
    total_mean = 1000 * statistics.fmean(times)
    return {
        "total_p50_ms": total_p50,
        "decode_mean_ms": decode_ms,
        "own_p50_ms": total_p50 - decode_ms,
        "own_mean_ms": total_mean - decode_ms,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--out", default="router-own")
    args = parser.parse_args(argv)

    import httpx

    from audio_score.env_settings import RouterEnv
    from audio_score.settings import load_settings
    from audio_score_tools.media import synth_speechlike, write_audio
    from router import predictor_client
    from router.app import create_app

    async def instant_score(self: Any, model: str, samples: np.ndarray, uid: str, cid: str, **kw: Any) -> dict:
        from audio_score import v2

        v2.build_score_request(samples, uid, cid)  # the body the router would send: part of its own time
        return {
            "sim_score": 0.5,
            "audio_sim_score": 0.5,
            "text_sim_score": 0.5,
            "transcript": "a",
            "reference_transcript": "b",
        }

    async def always_ready(self: Any, model: str) -> tuple[bool, str]:
        return True, "ready"

    predictor_client.PredictorClient.score = instant_score  # type: ignore[method-assign]
    predictor_client.PredictorClient.ready = always_ready  # type: ignore[method-assign]

    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        config = tmp / "config.json"
        model = {"key": "m", "type": "whisper", "model_id": "unused"}
        config.write_text(json.dumps({"models": [model], "video_clip_dir": "clips", "cache_dir": "cache"}))
        settings = load_settings(RouterEnv, config, env={})
        speech = synth_speechlike(10.0, 44100, seed=1)
        for fmt in ("wav", "mp3"):
            upload = write_audio(tmp / f"take.{fmt}", speech, 44100).read_bytes()
            request = httpx.Request(
                "POST", "http://router/score", data={"uid": "video1", "cid": "clip1"}, files={"audio": (fmt, upload)}
            )
            body = request.read()
            stats = asyncio.run(measure(create_app(settings), body, request.headers["content-type"], args.requests))
            rows.append({"upload": f"10 s {fmt.upper()}", "bytes": len(body), **stats})
    notes = (
        "Milliseconds. The real router app in process over ASGI, the predictor call replaced by an instant answer "
        "(which still builds the V2 body); own = total - decode (from the router's decode histogram). "
        "Target: own <= 3 ms p50."
    )
    write_results(args.out, {"requests": args.requests, "rows": rows}, rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
