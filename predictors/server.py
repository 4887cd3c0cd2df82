"""Build one :class:`AudioScoreModel` per selected model key and serve them with ``kserve.ModelServer``.

A model that fails to load is logged and registered as *not ready* (so a request to it answers 503 with the
reason, and ``/v2/models/{key}/ready`` is 503, instead of a bare 404); the server starts when at least one model
loads and exits with one clear line when none does. Models on the same device share one single-thread executor,
so one batch at a time runs per device.
"""

from __future__ import annotations

import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from audio_score.errors import EXIT_CONFIG
from audio_score.settings import PredictorSettings
from predictors.model import AudioScoreModel, Unavailable

log = logging.getLogger(__name__)


class NoModelLoaded(SystemExit):
    """Start-up failed: no selected model loaded. Its message is the one line printed before exiting;
    ``permanent`` when every failure is one that loading again cannot fix (exit :data:`EXIT_CONFIG`)."""

    permanent = False


def quiet_request_logs(debug: bool) -> None:
    """Per-request log lines off the hot path: kserve's timing trace (``kserve.trace``, one line per request) and
    uvicorn's access log, unless ``debug`` (``AUDIO_SCORE_DEBUG_REQUEST_LOGS=1``). Metrics keep the counts."""
    level = logging.INFO if debug else logging.WARNING
    for name in ("kserve.trace", "uvicorn.access"):
        logging.getLogger(name).setLevel(level)


def build_models(settings: PredictorSettings) -> list[AudioScoreModel]:
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
        error = NoModelLoaded(f"audio-score predictor: error: no model loaded ({reasons})")
        error.permanent = bool(models) and all(getattr(m.load_error, "permanent", False) for m in models)
        raise error
    return ready


def serve(
    settings: PredictorSettings, *, http_port: int = 8080, grpc_port: int = 8081, enable_grpc: bool = True
) -> int:
    """Load the models and serve them until SIGTERM/SIGINT. Returns the exit status."""
    from audio_score.threads import apply_torch_threads

    started = time.perf_counter()
    threads = apply_torch_threads(settings.env)
    models = build_models(settings)
    try:
        ready = check_loaded(models)
    except NoModelLoaded as exc:
        print(exc.code, file=sys.stderr)
        # A config.json the checkpoints cannot honour fails the same way on every start: say so to supervisors.
        return EXIT_CONFIG if exc.permanent else 1

    import kserve

    from predictors import kserve_patches

    # gRPC's message limit (kserve's default 8 MiB) must hold the longest upload allowed, as raw FP32 samples.
    kserve_patches.raise_grpc_message_limit(
        int(settings.config.max_audio_seconds * settings.config.target_sampling_rate * 4) + (1 << 20)
    )
    quiet_request_logs(settings.env.debug_request_logs)
    kserve_patches.answer_unavailable_with_retry_after(Unavailable)

    server = kserve.ModelServer(
        http_port=http_port,
        grpc_port=grpc_port,
        workers=1,  # the batcher and the model live in this one process
        enable_grpc=enable_grpc,
        enable_latency_logging=False,
    )
    kserve_patches.install_safe_dataplane(server)
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
            "max_batch_size": settings.env.max_batch_size,
            "max_batch_wait_ms": settings.env.max_batch_wait_ms,
            "max_queue_size": settings.env.max_queue_size,
            "torch_threads": threads,
            "load_seconds": round(time.perf_counter() - started, 2),
        },
    )
    server.start(ready)
    return 0
