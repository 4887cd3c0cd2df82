"""The predictor's own time outside the model: kserve's stock request decoding vs ours, side by side in one run.

For 5, 10 and 30 s clips (16 kHz FP32, scored against uid/cid as the router sends them), each path turns the
received request into the validated float32 samples the batcher takes:

- ``rest stock``: kserve 0.21's ``DataPlane.decode_inference_request`` (``InferRequest.from_bytes``, which makes
  a Python list of every binary tensor) + :meth:`AudioScoreModel._parse_inputs`;
- ``rest ours``: the predictor's data plane (:mod:`predictors.v2_decode`, numpy views of the body) + the same
  parsing;
- ``grpc``: ``ModelInferRequest`` bytes with ``raw_input_contents`` -> protobuf parse -> kserve's
  ``InferRequest.from_grpc`` -> the same parsing (unchanged: kserve keeps raw contents as bytes);
- ``rest app``: one whole ``POST /v2/models/{m}/infer`` through kserve's REST routes and our data plane in
  process (ASGI, no sockets), with a backend that answers at once: the predictor's full per-request overhead
  (body read, routing, decoding, batcher hop, response encoding), minus the network.

Usage: python bench/bench_parse.py [--reps 30] [--out parse]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import write_results

RATE = 16000
SECONDS = (5, 10, 30)


def instant_backend(spec: Any) -> Any:
    """A real :class:`Backend` subclass that answers at once: what is left of a request's time is the predictor's."""
    from audio_score.backends.base import Backend, Features

    class InstantBackend(Backend):
        sampling_rate = RATE
        device = "cpu"

        def __init__(self) -> None:
            self.spec = spec

        @property
        def fingerprint(self) -> dict[str, Any]:
            return {}

        @property
        def embedding_dim(self) -> int:
            return 8

        def embed(
            self,
            waveforms: Sequence[np.ndarray],
            *,
            max_new_tokens: int | None = None,
            languages: Sequence[str | None] | None = None,
            forced_texts: Sequence[Sequence[str]] | None = None,
        ) -> list[Features]:
            return [Features("hello", np.zeros(8, np.float32), np.zeros((1, 8), np.float32)) for _ in waveforms]

    return InstantBackend()


def make_model(root: Path) -> Any:
    from audio_score.env_settings import PredictorEnv
    from audio_score.settings import load_settings
    from predictors.model import AudioScoreModel

    (root / "clips").mkdir()
    (root / "cache").mkdir()
    config = root / "config.json"
    model = {"key": "m", "type": "whisper", "model_id": "openai/whisper-tiny"}
    config.write_text(json.dumps({"models": [model], "video_clip_dir": "clips", "cache_dir": "cache"}))
    # No batch wait: a lone request starts at once, so what is timed is overhead, not the batching window.
    settings = load_settings(PredictorEnv, config, env={"AUDIO_SCORE_MAX_BATCH_WAIT_MS": "0"})
    spec = settings.models[0]
    return AudioScoreModel(spec, settings, backend=instant_backend(spec), executor=ThreadPoolExecutor(1))  # type: ignore[arg-type]


def timed(fn: Callable[[], Any], reps: int) -> dict[str, float]:
    fn()  # warm
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}


def grpc_body(audio: np.ndarray) -> bytes:
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

    request = pb.ModelInferRequest(model_name="m")
    for name, datatype, shape in (("audio", "FP32", [1, audio.size]), ("uid", "BYTES", [1]), ("cid", "BYTES", [1])):
        tensor = request.inputs.add()
        tensor.name, tensor.datatype = name, datatype
        tensor.shape.extend(shape)
    from audio_score.v2 import encode_bytes_tensor

    request.raw_input_contents.extend([audio.tobytes(), encode_bytes_tensor(["video1"]), encode_bytes_tensor(["c1"])])
    return request.SerializeToString()


async def app_time(model: Any, body: bytes, headers: dict[str, str], reps: int) -> dict[str, float]:
    """p50/p90 of a whole in-process POST (embed-only: the reference store is not involved)."""
    import httpx
    from fastapi import FastAPI
    from kserve.errors import InvalidInput
    from kserve.model_repository import ModelRepository
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.server import invalid_input_handler
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    from predictors.kserve_patches import _safe_dataplane_class

    repo = ModelRepository()
    repo.update(model)
    dataplane = _safe_dataplane_class()(model_registry=repo)
    app = FastAPI()
    register_v2_endpoints(app, dataplane, ModelRepositoryExtension(model_registry=repo))
    app.add_exception_handler(InvalidInput, invalid_input_handler)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://predictor") as client:
        times = []
        for i in range(reps + 2):
            started = time.perf_counter()
            response = await client.post("/v2/models/m/infer", content=body, headers=headers)
            elapsed = (time.perf_counter() - started) * 1000
            assert response.status_code == 200, response.text
            if i >= 2:
                times.append(elapsed)
    times.sort()
    return {"p50_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--out", default="parse")
    args = parser.parse_args(argv)

    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb
    from kserve.protocol.infer_type import InferRequest

    from audio_score import v2
    from predictors.kserve_patches import _safe_dataplane_class

    rows, results = [], []
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp))
        stock, ours = DataPlane(model_registry=None), _safe_dataplane_class()(model_registry=None)
        rng = np.random.default_rng(0)
        for seconds in SECONDS:
            audio = rng.normal(0, 0.1, seconds * RATE).astype(np.float32)
            body, headers = v2.build_score_request(audio, "video1", "clip1")
            headers = {k.lower(): v for k, v in headers.items()}
            raw_grpc = grpc_body(audio)

            def parse(plane: Any, body: bytes = body, headers: dict[str, str] = headers) -> Any:
                return model._parse_inputs(plane.decode_inference_request(body, headers, "m"))

            def parse_grpc(raw: bytes = raw_grpc) -> Any:
                return model._parse_inputs(InferRequest.from_grpc(pb.ModelInferRequest.FromString(raw)))

            samples = parse(ours)[0]
            assert np.array_equal(samples, audio) and np.array_equal(parse(stock)[0], audio)
            assert np.array_equal(parse_grpc()[0], audio)
            embed_body, embed_headers = v2.build_infer_request(audio)
            stock_reps = max(3, args.reps // (2 if seconds < 30 else 6))
            row = {
                "clip_s": seconds,
                "rest_stock_p50_ms": timed(lambda: parse(stock), stock_reps)["p50_ms"],
                "rest_ours_p50_ms": timed(lambda: parse(ours), args.reps)["p50_ms"],
                "grpc_p50_ms": timed(parse_grpc, args.reps)["p50_ms"],
                "rest_app_p50_ms": asyncio.run(app_time(model, embed_body, embed_headers, args.reps))["p50_ms"],
            }
            row["speedup"] = row["rest_stock_p50_ms"] / row["rest_ours_p50_ms"]
            rows.append(row)
            results.append(row)
    notes = (
        "Milliseconds (median) from the received body to validated float32 samples; `rest app` is a whole "
        "in-process POST with a backend that answers at once (the predictor's own overhead per request, "
        "without sockets). Target: <= 2 ms for 30 s."
    )
    write_results(args.out, {"reps": args.reps, "rows": results}, rows, notes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
