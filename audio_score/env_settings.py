"""The ``AUDIO_SCORE_*`` environment, split by the part that reads it, on pydantic-settings.

Each knob is declared once, with its one default and its bounds, in the class of the part that reads it:
:class:`RouterEnv`, :class:`PredictorEnv`, :class:`JobEnv` (the two last share :class:`ComputeEnv`, the model
call's knobs). config.json is the part every pod shares (:class:`audio_score.settings.FileConfig`);
:func:`audio_score.settings.load_settings` resolves both into one :class:`audio_score.settings.Settings`. The
variable name is ``AUDIO_SCORE_`` + the field name in capitals; an empty value counts as unset; a bad value is a
:class:`~audio_score.errors.ConfigError` naming the variable.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Annotated, Any, TypeVar

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from audio_score.errors import ConfigError

PREFIX = "AUDIO_SCORE_"
E = TypeVar("E", bound="PartEnv")
#: The mapping :meth:`PartEnv.from_env` reads (``os.environ`` when unset).
_SOURCE_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("audio_score_source_env", default=None)


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ`` (tests and ``up``
    build settings for other processes)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class PartEnv(BaseSettings):
    """What every part's environment class shares: the prefix, empty-is-unset, other variables ignored."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env = _SOURCE_ENV.get()
        return (init_settings, _MappingEnvSource(settings_cls, env) if env is not None else env_settings)

    @classmethod
    def from_env(cls: type[E], env: Mapping[str, str]) -> E:
        """Read ``env``; :class:`ConfigError` naming the variable and the rule on a bad value."""
        token = _SOURCE_ENV.set(env)
        try:
            return cls()
        except ValidationError as exc:
            raise ConfigError(_describe(exc, env)) from None
        finally:
            _SOURCE_ENV.reset(token)


def _describe(exc: ValidationError, env: Mapping[str, str]) -> str:
    lines = []
    for item in exc.errors():
        field = str(item["loc"][0]) if item["loc"] else ""
        name = PREFIX + field.upper()
        raw = env.get(name)
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}={raw!r}: {msg}" if raw is not None else f"{name}: {msg}")
    return "; ".join(lines)


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class SharedEnv(PartEnv):
    """Knobs more than one part reads."""

    #: Per-request log lines (kserve's trace and access log, the router's "scored" line); off by default.
    debug_request_logs: bool = False
    #: Overrides config.json's max_audio_seconds (router: uploads; predictor: the audio tensor).
    max_audio_seconds: Annotated[float | None, Field(ge=0.1)] = None


class ComputeEnv(PartEnv):
    """The model call's knobs: the predictor and the cache Job run the same backend."""

    max_batch_size: Annotated[int, Field(ge=1)] = 8
    device: str = "auto"
    #: torch intra-op threads; 0: from the CPU given (see :func:`audio_score.threads.resolve_torch_threads`).
    torch_threads: Annotated[int, Field(ge=0)] = 0
    #: The container's CPU limit, from the downward API (the chart sets it).
    cpu_limit_millicores: Annotated[int, Field(ge=0)] = 0


class PredictorEnv(ComputeEnv, SharedEnv):
    """What a predictor can be told beyond config.json."""

    max_batch_wait_ms: Annotated[float, Field(ge=0.0)] = 10.0
    max_queue_size: Annotated[int, Field(ge=1)] = 64
    cache_memory_mb: Annotated[int, Field(ge=0)] = 512


class JobEnv(ComputeEnv):
    """What the cache Job can be told beyond config.json and its flags."""

    #: Keep fresh entries even with --force.
    disable_cache_flush: bool = False
    #: Set by Kubernetes for an Indexed Job's pods (no AUDIO_SCORE_ prefix).
    job_completion_index: Annotated[int | None, Field(ge=0, validation_alias="JOB_COMPLETION_INDEX")] = None


class RouterEnv(SharedEnv):
    """What the router can be told beyond config.json."""

    server_host: str = "127.0.0.1"
    server_port: Annotated[int, Field(ge=0)] = 8000
    server_socket: str | None = None
    #: Predictor URL template; unset: KServe's Service in the router's namespace (``default_predictor_url``).
    predictor_url: str | None = None
    #: Per-model URLs that win over the template: ``key=url,key=url``.
    predictor_urls: Annotated[dict[str, str], NoDecode] = {}
    predictor_timeout_s: Annotated[float, Field(ge=0.1)] = 30.0
    #: Longest wait for the next piece of a request body before the router answers 408.
    body_timeout_s: Annotated[float, Field(ge=0.1)] = 30.0
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()
    #: Overrides config.json's max_upload_bytes.
    max_upload_bytes: Annotated[int | None, Field(ge=1024)] = None

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("predictor_urls", mode="before")
    @classmethod
    def _url_map(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        result = {}
        for item in _comma_list(value):
            key, sep, url = item.partition("=")
            if not sep or not key.strip() or not url.strip():
                raise ValueError(f"{item!r} is not KEY=URL (e.g. whisper-small=http://host:8080)")
            result[key.strip()] = url.strip()
        return result
