"""Build one :class:`AudioScoreModel` per selected model key and serve them with ``kserve.ModelServer``.

A model that fails to load is logged and registered as *not ready* (so a request to it answers 503 with the
reason, and ``/v2/models/{key}/ready`` is 503, instead of a bare 404); the server starts when at least one model
loads and exits with one clear line when none does. Models on the same device share one single-thread executor,
so one batch at a time runs per device.
"""

from __future__ import annotations

import logging
import struct
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from audio_score.settings import Settings
from predictors.model import AudioScoreModel, ModelUnavailable

log = logging.getLogger(__name__)


class NoModelLoaded(SystemExit):
    """Start-up failed: no selected model loaded. Its message is the one line printed before exiting."""


def _decode_binary(body: bytes, headers: dict[str, str], model_name: str) -> Any:
    """A binary-extension body through :func:`predictors.v2_decode.decode_binary_request` (numpy views, no
    per-sample lists), the header length checked first."""
    from kserve.errors import InvalidInput

    from predictors.v2_decode import INFERENCE_HEADER, decode_binary_request

    raw_length = headers.get(INFERENCE_HEADER)
    if raw_length is None:
        raise InvalidInput(f"received byte inputs, but the '{INFERENCE_HEADER}' header is missing")
    try:
        json_length = int(raw_length)
    except ValueError:
        raise InvalidInput(f"{INFERENCE_HEADER}: {raw_length!r} is not a byte count") from None
    return decode_binary_request(body, json_length, model_name)


def _safe_dataplane_class() -> type:
    """KServe's DataPlane, with binary bodies read straight into numpy and malformed ones a 400, not a 500.

    ``InferRequest.from_bytes`` turns each binary tensor into a Python list (see :mod:`predictors.v2_decode`)
    and indexes the JSON header without checks, so a header missing ``inputs`` or a tensor's ``shape`` raised
    KeyError (500), and a non-numeric ``inference-header-content-length`` ValueError. Binary bodies go through
    :func:`predictors.v2_decode.decode_binary_request` instead; JSON bodies keep kserve's decoder.
    """
    from kserve.errors import InvalidInput
    from kserve.protocol.dataplane import DataPlane

    class SafeDataPlane(DataPlane):  # type: ignore[misc]
        def decode_inference_request(self, body, headers, model_name):  # type: ignore[no-untyped-def]
            try:
                if isinstance(body, bytes | bytearray):
                    return _decode_binary(body, headers, model_name)
                return super().decode_inference_request(body, headers, model_name)
            except InvalidInput:
                raise
            except KeyError as exc:
                raise InvalidInput(f"malformed V2 request: the JSON header has no field {exc}") from None
            except (ValueError, TypeError, IndexError, AttributeError, struct.error) as exc:
                raise InvalidInput(f"malformed V2 request: {type(exc).__name__}: {exc}") from None

    return SafeDataPlane


async def _unavailable_handler(_request: Any, exc: Exception) -> Any:
    """REST answer of :class:`ModelUnavailable`: 503 ``{"error": ...}`` as kserve's, plus ``Retry-After`` when the
    batcher estimated one, and without kserve's traceback log line per refusal (metrics count them)."""
    import math

    from fastapi.responses import JSONResponse

    retry_after = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers=headers)


def quiet_request_logs(debug: bool) -> None:
    """Per-request log lines off the hot path: kserve's timing trace (``kserve.trace``, one line per request) and
    uvicorn's access log, unless ``debug`` (``AUDIO_SCORE_DEBUG_REQUEST_LOGS=1``). Metrics keep the counts."""
    level = logging.INFO if debug else logging.WARNING
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(level)


def build_models(settings: Settings) -> list[AudioScoreModel]:
    """Load every selected model; failures come back as models that are not ready, with ``load_error`` set."""
    from audio_score.backends import load_backends

    loaded, failed = load_backends(settings)
    executors: dict[str, ThreadPoolExecutor] = {}
    models = []
    for spec in settings.models:
        backend = loaded.get(spec.key)
        if backend is None:
            models.append(AudioScoreModel(spec, settings, load_error=failed[spec.key]))
            continue
        executor = executors.get(backend.device)
        if executor is None:
            executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"backend-{backend.device}")
            executors[backend.device] = executor
        models.append(AudioScoreModel(spec, settings, backend=backend, executor=executor))
    return models


def check_loaded(models: list[AudioScoreModel]) -> list[AudioScoreModel]:
    """The ready models; :class:`NoModelLoaded` naming each failure when there are none."""
    ready = [m for m in models if m.ready]
    if not ready:
        reasons = "; ".join(f"{m.name}: {m.load_error}" for m in models) or "no model selected"
        raise NoModelLoaded(f"audio-score predictor: error: no model loaded ({reasons})")
    return ready


def serve(settings: Settings, *, http_port: int = 8080, grpc_port: int = 8081, enable_grpc: bool = True) -> int:
    """Load the models and serve them until SIGTERM/SIGINT. Returns the exit status."""
    from audio_score.threads import apply_torch_threads

    started = time.perf_counter()
    threads = apply_torch_threads(settings)
    models = build_models(settings)
    try:
        ready = check_loaded(models)
    except NoModelLoaded as exc:
        print(exc.code, file=sys.stderr)
        return 1

    import kserve
    from kserve import model_server

    # gRPC's message limit (kserve's default 8 MiB) must hold the longest upload allowed, as raw FP32 samples.
    needed = int(settings.max_audio_seconds * settings.target_sampling_rate * 4) + (1 << 20)
    for name in ("grpc_max_receive_message_length", "grpc_max_send_message_length"):
        if getattr(model_server.args, name, 0) < needed:
            setattr(model_server.args, name, needed)

    quiet_request_logs(settings.debug_request_logs)
    # The REST app kserve serves (``kserve.model_server:app``): 503s of ours get Retry-After.
    model_server.app.add_exception_handler(ModelUnavailable, _unavailable_handler)

    server = kserve.ModelServer(
        http_port=http_port,
        grpc_port=grpc_port,
        workers=1,  # the batcher and the model live in this one process
        enable_grpc=enable_grpc,
        enable_latency_logging=False,
    )
    # Both servers take the data plane from here when they start.
    server.dataplane = _safe_dataplane_class()(model_registry=server.registered_models)
    for model in models:
        if not model.ready:
            server.register_model(model)  # visible, not ready: 503 with the load error
    log.info(
        "predictor starting",
        extra={
            "models": [m.name for m in ready],
            "skipped": [m.name for m in models if not m.ready],
            "http_port": http_port,
            "grpc_port": grpc_port if enable_grpc else None,
            "max_batch_size": settings.max_batch_size,
            "max_batch_wait_ms": settings.max_batch_wait_ms,
            "max_queue_size": settings.max_queue_size,
            "torch_threads": threads,
            "load_seconds": round(time.perf_counter() - started, 2),
        },
    )
    server.start(ready)
    return 0
