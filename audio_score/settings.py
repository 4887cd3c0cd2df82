"""One typed settings object, built from config.json plus the ``AUDIO_SCORE_*`` environment.

Every part (cache Job, predictor, router, ``up``) reads its configuration through :func:`load_settings`, so the
parts can never disagree on keys, paths, rates or the decoder. config.json's schema is :class:`FileConfig`; the
environment is declared per part in :mod:`audio_score.env_settings` (each knob's one default is there). Errors
name the field and say how to fix it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from audio_score.contract import DEFAULT_AUDIO_SIMILARITY, DEFAULT_TEXT_SIMILARITY, AudioSimilarity, TextSimilarity
from audio_score.env_settings import JobEnv, PredictorEnv, RouterEnv
from audio_score.errors import ConfigError
from audio_score.whisper_languages import LANGUAGES, language_code

#: A model key names an InferenceService, its predictor Service and a cache folder, so it must be a DNS-1035
#: label short enough that KServe's ``-predictor`` suffix and a namespace still fit.
MODEL_KEY_PATTERN = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
DEFAULT_CONFIG = "config.json"
MIB = 1024 * 1024
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


class ModelSpec(BaseModel):
    """One entry of ``models`` in config.json."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    key: Annotated[str, Field(pattern=MODEL_KEY_PATTERN)]
    type: Literal["whisper", "higgs_audio"]
    model_id: Annotated[str, Field(min_length=1)]
    processor_id: str | None = None
    transcriber_id: str | None = None
    revision: str | None = None
    language: str | None = None
    max_new_tokens: Annotated[int, Field(ge=1, le=444)] = 128

    @field_validator("language")
    @classmethod
    def _known_language(cls, value: str | None) -> str | None:
        """A language Whisper knows (code, name or ``<|xx|>``), kept as its code; the checkpoint's own list is
        checked again when it loads. An unknown one is refused here, not at the predictor's warm-up."""
        if value is None:
            return None
        code = language_code(value)
        if code is None:
            raise ValueError(
                f"unknown language {value!r}: use one of Whisper's language codes ({', '.join(LANGUAGES)}), or "
                "leave it out to hear each upload in its reference clip's language"
            )
        return code

    @model_validator(mode="after")
    def _higgs_needs_helpers(self) -> ModelSpec:
        if self.type == "higgs_audio" and not (self.processor_id and self.transcriber_id):
            raise ValueError(
                f"model {self.key!r} has type 'higgs_audio' and needs 'processor_id' (a Whisper feature "
                "extractor, e.g. 'openai/whisper-large-v3') and 'transcriber_id' (a Whisper model)"
            )
        return self


class FileConfig(BaseModel):
    """The schema of config.json itself (the seed's fields plus optional limits)."""

    model_config = ConfigDict(extra="forbid")

    models: Annotated[list[ModelSpec], Field(min_length=1)]
    video_clip_dir: str
    cache_dir: str
    target_sampling_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
    max_upload_bytes: Annotated[int, Field(ge=1024)] = 25 * 1024 * 1024
    max_audio_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    #: Which audio similarity feeds audio_sim_score and sim_score: frames aligned in time, or pooled embeddings.
    audio_similarity: AudioSimilarity = DEFAULT_AUDIO_SIMILARITY
    #: Which text similarity feeds text_sim_score (audio_score.similarity describes each kind; the default is
    #: what the quality benchmark chose). Both kinds' vocabularies and defaults are audio_score.contract's.
    text_similarity: TextSimilarity = DEFAULT_TEXT_SIMILARITY
    #: The one decoder for reference clips and uploads: in config.json so that every pod (the Job, each
    #: predictor, the router) decodes alike; a clip uploaded as itself scores 1.0 only if they do.
    decoder: Literal["pyav", "pydub"] = "pyav"

    @field_validator("models")
    @classmethod
    def _unique_keys(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        keys = [m.key for m in models]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"model keys must be unique; repeated: {', '.join(dupes)}")
        return models


class Settings(BaseModel):
    """Everything a part needs, resolved: absolute paths, selected models, knobs from the environment."""

    model_config = ConfigDict(frozen=True)

    config_path: Path
    all_models: tuple[ModelSpec, ...]
    models: tuple[ModelSpec, ...]
    video_clip_dir: Path
    cache_dir: Path
    target_sampling_rate: int
    max_upload_bytes: int
    max_audio_seconds: float
    audio_similarity: AudioSimilarity
    text_similarity: TextSimilarity
    decoder: Literal["pyav", "pydub"]
    # The environment's part, resolved; each knob's default and bounds are in audio_score.env_settings, in the
    # class of the part that reads it (PredictorEnv, JobEnv, RouterEnv).
    # predictor (and the cache Job: ComputeEnv)
    max_batch_size: int
    max_batch_wait_ms: float
    max_queue_size: int
    cache_memory_bytes: int
    device: str
    #: torch intra-op threads (predictor and cache Job); see :func:`resolve_torch_threads`.
    torch_threads: int | None
    #: The container's CPU limit in cores, from the downward API (the chart sets AUDIO_SCORE_CPU_LIMIT_MILLICORES).
    cpu_limit: float | None
    debug_request_logs: bool
    # cache job
    disable_cache_flush: bool
    job_completion_index: int | None
    # router
    server_host: str
    server_port: int
    server_socket: str | None
    predictor_url: str
    predictor_urls: dict[str, str]
    predictor_timeout_s: float
    body_timeout_s: float
    api_keys: tuple[str, ...]

    @property
    def model_keys(self) -> list[str]:
        return [m.key for m in self.models]

    def model(self, key: str) -> ModelSpec:
        """The selected model with this key; :class:`ConfigError` listing the known keys otherwise."""
        for spec in self.models:
            if spec.key == key:
                return spec
        raise ConfigError(f"unknown model key {key!r}; known: {', '.join(self.model_keys)}")

    def resolve_model_ref(self, ref: str) -> str:
        """A hub id stays as it is; a local folder (relative to config.json's folder) becomes absolute."""
        return resolve_model_ref(ref, self.config_path.parent)

    def with_models(self, keys: list[str]) -> Settings:
        """A copy restricted to ``keys`` (in the order given), refusing unknown keys."""
        known = {m.key: m for m in self.all_models}
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise ConfigError(f"unknown model key(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return self.model_copy(update={"models": tuple(known[k] for k in keys)})


def resolve_model_ref(ref: str, base: Path) -> str:
    """Tell a local checkpoint folder from a hub id: explicit paths, or relative ones that exist, are paths."""
    if ref.startswith(("/", "./", "../", "~")):
        return str((base / Path(ref).expanduser()).resolve())
    candidate = base / ref
    if candidate.is_dir():
        return str(candidate.resolve())
    return ref


def _env_list(env: Mapping[str, str], name: str) -> list[str]:
    return [item.strip() for item in env.get(name, "").split(",") if item.strip()]


def _check_decoder_env(env: Mapping[str, str], configured: str, path: Path) -> Literal["pyav", "pydub"]:
    """The decoder is config.json's ``decoder``; the old per-pod ``AUDIO_SCORE_DECODER`` may only repeat it.

    A pod told a different decoder than the others would decode uploads and references differently, so a
    disagreement is an error rather than a silent override.
    """
    raw = env.get("AUDIO_SCORE_DECODER", "").strip().lower()
    if raw and raw != configured:
        raise ConfigError(
            f"AUDIO_SCORE_DECODER={raw!r} disagrees with decoder={configured!r} in {path}; the decoder is set "
            "once, in config.json's 'decoder' field ('pyav' or 'pydub'), so every pod decodes alike: unset "
            "AUDIO_SCORE_DECODER"
        )
    return configured  # type: ignore[return-value]


def default_predictor_url(env: Mapping[str, str]) -> str:
    """KServe's Standard-mode predictor Service of each InferenceService, in the router's own namespace."""
    namespace = env.get("POD_NAMESPACE")
    if not namespace and IN_CLUSTER_NAMESPACE_FILE.is_file():
        namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
    return f"http://{{model}}-predictor.{namespace or 'default'}.svc.cluster.local"


def _format_validation_error(path: Path, err: ValidationError) -> str:
    lines = [f"{path}: invalid configuration"]
    for item in err.errors():
        where = ".".join(str(p) for p in item["loc"]) or "(top level)"
        msg = item["msg"]
        if item["type"] == "extra_forbidden":
            msg = "unknown field (check its spelling against the README's configuration section)"
        elif item["type"] == "missing":
            msg = "required field is missing"
        lines.append(f"  {where}: {msg}")
    return "\n".join(lines)


def read_config_file(path: Path) -> FileConfig:
    """Parse and validate config.json, naming the field and the fix on error."""
    if not path.is_file():
        raise ConfigError(f"config file {path} not found; pass --config PATH or set AUDIO_SCORE_CONFIG")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    try:
        return FileConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    model_keys: list[str] | None = None,
) -> Settings:
    """Build the settings from config.json and the environment.

    ``model_keys`` (from a CLI flag) wins over ``AUDIO_SCORE_MODEL_KEYS``/``AUDIO_SCORE_MODEL_KEY``; without
    either, every configured model is selected.
    """
    env = os.environ if env is None else env
    path = Path(config_path or env.get("AUDIO_SCORE_CONFIG") or DEFAULT_CONFIG).expanduser().resolve()
    cfg = read_config_file(path)
    base = path.parent

    keys = model_keys or _env_list(env, "AUDIO_SCORE_MODEL_KEYS") or _env_list(env, "AUDIO_SCORE_MODEL_KEY")
    decoder = _check_decoder_env(env, cfg.decoder, path)

    predictor, job, router = PredictorEnv.from_env(env), JobEnv.from_env(env), RouterEnv.from_env(env)
    settings = Settings(
        config_path=path,
        all_models=tuple(cfg.models),
        models=tuple(cfg.models),
        video_clip_dir=(base / cfg.video_clip_dir).resolve(),
        cache_dir=(base / cfg.cache_dir).resolve(),
        target_sampling_rate=cfg.target_sampling_rate,
        max_upload_bytes=router.max_upload_bytes or cfg.max_upload_bytes,
        max_audio_seconds=predictor.max_audio_seconds or cfg.max_audio_seconds,
        audio_similarity=cfg.audio_similarity,
        text_similarity=cfg.text_similarity,
        max_batch_size=predictor.max_batch_size,
        max_batch_wait_ms=predictor.max_batch_wait_ms,
        max_queue_size=predictor.max_queue_size,
        cache_memory_bytes=predictor.cache_memory_mb * MIB,
        device=predictor.device.strip() or "auto",
        torch_threads=predictor.torch_threads or None,
        cpu_limit=predictor.cpu_limit_millicores / 1000 or None,
        debug_request_logs=predictor.debug_request_logs,
        disable_cache_flush=job.disable_cache_flush,
        job_completion_index=job.job_completion_index,
        server_host=router.server_host.strip() or "127.0.0.1",
        server_port=router.server_port,
        server_socket=router.server_socket,
        predictor_url=router.predictor_url or default_predictor_url(env),
        predictor_urls=router.predictor_urls,
        predictor_timeout_s=router.predictor_timeout_s,
        body_timeout_s=router.body_timeout_s,
        api_keys=router.api_keys,
        decoder=decoder,
    )
    return settings.with_models(keys) if keys else settings
