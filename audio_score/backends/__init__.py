"""Model backends, one per config ``type``. Torch and transformers are imported only in this package.

``load_backend`` builds one; ``load_backends`` builds all selected models and skips (with a log line) those that
fail, as the design asks: a broken model must not take the others down.
"""

from __future__ import annotations

import logging
import time

from audio_score.backends.base import FEATURE_VERSION, Backend, Features
from audio_score.errors import ConfigError, ModelLoadError
from audio_score.settings import ModelSpec, Settings

__all__ = ["FEATURE_VERSION", "Backend", "Features", "load_backend", "load_backends", "select_device"]

log = logging.getLogger(__name__)


def select_device(preference: str = "auto") -> str:
    """CUDA when present (or asked for), else CPU."""
    import torch

    if preference == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if preference.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"AUDIO_SCORE_DEVICE={preference!r} but CUDA is not available on this machine")
    return preference


def load_backend(spec: ModelSpec, settings: Settings) -> Backend:
    """Load one model; any failure becomes :class:`ModelLoadError` naming the model and the cause."""
    started = time.perf_counter()
    device = select_device(settings.device)
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
    log.info(
        "model loaded",
        extra={
            "model": spec.key,
            "type": spec.type,
            "device": device,
            "seconds": round(time.perf_counter() - started, 2),
        },
    )
    return backend


def load_backends(settings: Settings) -> dict[str, Backend]:
    """Every selected model that loads; the failures are logged and left out."""
    loaded: dict[str, Backend] = {}
    for spec in settings.models:
        try:
            loaded[spec.key] = load_backend(spec, settings)
        except ModelLoadError as exc:
            log.error("model skipped: it failed to load", extra={"model": spec.key, "error": str(exc)})
    return loaded
