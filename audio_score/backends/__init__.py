"""Model backends, one per config ``type``. Torch and transformers are imported only in this package.

``load_backend`` builds one and proves it can score: it runs one short warm-up inference (embedding and
transcript) before returning, so a checkpoint that loads but cannot infer is a load failure like any other and is
never served as ready. ``iter_backends``/``load_backends`` build every selected model and skip (with a log line and
the reason) those that fail, as the design asks: a broken model must not take the others down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np

from audio_score.backends.base import FEATURE_VERSION, Backend, Features
from audio_score.env_settings import ComputeEnv
from audio_score.errors import ConfigError, LoadFailure, ModelLoadError
from audio_score.settings import ModelSpec, Settings

__all__ = [
    "FEATURE_VERSION",
    "Backend",
    "Features",
    "iter_backends",
    "load_backend",
    "load_backends",
    "select_device",
    "warm_up",
]

log = logging.getLogger(__name__)

#: Warm-up input: one second of faint noise (silence can hide a failure that any real input would hit).
WARM_UP_SECONDS = 1.0
WARM_UP_LEVEL = 1e-3
#: Transcript tokens the warm-up decodes: enough to run the whole of generate (prompt, language detection, logits
#: processors, decoder steps) without paying for a long transcript at every start.
WARM_UP_TOKENS = 3


def select_device(preference: str = "auto") -> str:
    """CUDA when present (or asked for), else CPU."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"AUDIO_SCORE_DEVICE={preference!r} but CUDA is not available on this machine")
    return preference


def load_backend(spec: ModelSpec, settings: Settings[ComputeEnv]) -> Backend:
    """Load one model; any failure becomes :class:`ModelLoadError` naming the model and the cause."""
    started = time.perf_counter()
    device = select_device(settings.env.device)
    try:
        if spec.type == "whisper":
            from audio_score.backends.whisper import WhisperBackend

            backend: Backend = WhisperBackend(spec, settings, device)
        elif spec.type == "higgs_audio":
            from audio_score.backends.higgs import HiggsAudioBackend

            backend = HiggsAudioBackend(spec, settings, device)
        else:  # pragma: no cover - the settings schema allows only the two types
            raise ModelLoadError(f"unknown model type {spec.type!r}")
    except ModelLoadError:
        raise
    except Exception as exc:
        raise ModelLoadError(f"model {spec.key!r} ({spec.model_id}) failed to load: {exc}") from exc
    loaded = time.perf_counter()
    try:
        warm_up(backend)
    except Exception as exc:
        backend.close()
        raise ModelLoadError(
            f"model {spec.key!r} ({spec.model_id}) loaded but failed its warm-up inference: {type(exc).__name__}: {exc}"
        ) from exc
    log.info(
        "model loaded",
        extra={
            "model": spec.key,
            "type": spec.type,
            "device": device,
            "seconds": round(loaded - started, 2),
            "warm_up_seconds": round(time.perf_counter() - loaded, 2),
        },
    )
    return backend


def warm_up(backend: Backend) -> None:
    """One real inference on a short clip, through ``embed`` (encoder, pooling and a short ``generate``).

    Raises what the backend raises, or ValueError when its answer is unusable (no transcript string, a wrong
    embedding size, non-finite numbers such as NaN weights give).
    """
    samples = int(WARM_UP_SECONDS * backend.sampling_rate)
    wave = (np.random.default_rng(0).standard_normal(samples) * WARM_UP_LEVEL).astype(np.float32)
    out = backend.embed([wave], max_new_tokens=WARM_UP_TOKENS)
    if len(out) != 1:
        raise ValueError(f"embed returned {len(out)} results for one waveform")
    features = out[0]
    if not isinstance(features.transcript, str):
        raise ValueError(f"the transcript is a {type(features.transcript).__name__}, not a string")
    if features.embedding.shape != (backend.embedding_dim,):
        raise ValueError(f"the embedding has shape {features.embedding.shape}, expected ({backend.embedding_dim},)")
    if not np.isfinite(features.embedding).all() or not np.isfinite(features.frames).all():
        raise ValueError("the embedding holds non-finite values (NaN or infinity): the weights are broken")


def iter_backends(settings: Settings[ComputeEnv]) -> Iterator[tuple[ModelSpec, Backend | None, str | None]]:
    """Each selected model in turn: ``(spec, backend, None)`` when it loads, ``(spec, None, reason)`` when not.

    Failures are logged and skipped, never raised. Loading happens as the caller advances, so a caller that
    closes each backend before taking the next (the cache Job) holds one model in memory at a time.
    """
    for spec in settings.models:
        try:
            yield spec, load_backend(spec, settings), None
        except ModelLoadError as exc:
            log.error("model skipped: it failed to load", extra={"model": spec.key, "error": str(exc)})
            yield spec, None, LoadFailure(str(exc), exc.permanent)


def load_backends(settings: Settings[ComputeEnv]) -> tuple[dict[str, Backend], dict[str, str]]:
    """Every selected model that loads, and for each that does not, the reason (already logged)."""
    loaded: dict[str, Backend] = {}
    failed: dict[str, str] = {}
    for spec, backend, error in iter_backends(settings):
        if backend is not None:
            loaded[spec.key] = backend
        else:
            failed[spec.key] = error or LoadFailure("unknown error")
    return loaded, failed
