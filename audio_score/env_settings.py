"""The ``AUDIO_SCORE_*`` environment, one pydantic-settings class per part, each knob declared once.

A knob is one field, in the class of the part that reads it: its type and bounds, its one default, and the
docstring under it (the README's and docs/architecture.md's tables are generated from these declarations,
``audio_score_tools/settings_tables.py``). The classes:

    PartEnv                 every part: AUDIO_SCORE_CONFIG, the model selection, the old AUDIO_SCORE_DECODER
    ├── SharedEnv           the router and a predictor (request logs, the duration limit)
    │   ├── RouterEnv       the router
    │   └── PredictorEnv    a predictor (also a ComputeEnv)
    └── ComputeEnv          the model call: a predictor and the cache Job
        └── JobEnv          the cache Job

A part reads only its own class (:func:`audio_score.settings.load_settings`), so a bad value of a variable another
part reads (``AUDIO_SCORE_MAX_QUEUE_SIZE=0`` for the router) does not stop it. The variable's name is
``AUDIO_SCORE_`` + the field name in capitals (or the field's ``validation_alias``); an empty value counts as unset;
a bad value is a :class:`~audio_score.errors.ConfigError` naming the variable. A field named like a config.json
field overrides that field for the part (``max_upload_bytes``, ``max_audio_seconds``); the two share one type
(:data:`MaxUploadBytes`, :data:`MaxAudioSeconds`), so their bounds are written once.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import Field, StringConstraints, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from audio_score.errors import ConfigError

PREFIX = "AUDIO_SCORE_"
IN_CLUSTER_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
MIB = 1024 * 1024
E = TypeVar("E", bound="PartEnv")
#: The mapping :meth:`PartEnv.from_env` reads (``os.environ`` when unset).
_SOURCE_ENV: ContextVar[Mapping[str, str] | None] = ContextVar("audio_score_source_env", default=None)

#: config.json's ``max_upload_bytes`` and the router's override of it.
MaxUploadBytes = Annotated[int, Field(ge=1024)]
#: config.json's ``max_audio_seconds`` and the router's and the predictor's override of it.
MaxAudioSeconds = Annotated[float, Field(gt=0, le=600)]
#: A comma-separated list (``a,b``); blanks around items and empty items are dropped.
CommaList = Annotated[tuple[str, ...], NoDecode]
NonBlank = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source over a given mapping instead of ``os.environ`` (tests and ``up``
    build settings for other processes)."""

    def __init__(self, settings_cls: type[BaseSettings], env: Mapping[str, str]) -> None:
        self._env = env
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._env, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


def env_name(name: str, field: FieldInfo) -> str:
    """The variable a field is read from."""
    return str(field.validation_alias or PREFIX + name.upper())


def _comma_list(value: Any) -> Any:
    if isinstance(value, str):
        return tuple(item.strip() for item in value.split(",") if item.strip())
    return value


class PartEnv(BaseSettings):
    """What every part reads: where config.json is and which of its models to serve or build."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    config_path: Annotated[Path, Field(validation_alias="AUDIO_SCORE_CONFIG")] = Path("config.json")
    """config.json's path when `--config` is not given (relative: to the working folder)"""
    model_keys: CommaList = ()
    """comma-separated model keys to serve or build (a CLI `--model`/`--models` wins); unset: every model"""
    model_key: CommaList = ()
    """a single key, the seed's name for `AUDIO_SCORE_MODEL_KEYS` (read when that is unset)"""
    deprecated_decoder: Annotated[Literal["pyav", "pydub"] | None, Field(validation_alias="AUDIO_SCORE_DECODER")] = None
    """deprecated: the decoder is config.json's `decoder`; when set, it must repeat that value (a different one
    stops the part, naming both)"""

    @field_validator("model_keys", "model_key", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        return _comma_list(value)

    @field_validator("deprecated_decoder", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @property
    def selected_keys(self) -> tuple[str, ...]:
        """``AUDIO_SCORE_MODEL_KEYS``, else ``AUDIO_SCORE_MODEL_KEY``; empty: every model."""
        return self.model_keys or self.model_key

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
            raise ConfigError(_describe(cls, exc, env)) from None
        finally:
            _SOURCE_ENV.reset(token)


def _describe(cls: type[PartEnv], exc: ValidationError, env: Mapping[str, str]) -> str:
    names = {str(f.validation_alias or n): env_name(n, f) for n, f in cls.model_fields.items()}
    lines = []
    for item in exc.errors():
        loc = str(item["loc"][0]) if item["loc"] else ""
        name = names.get(loc, PREFIX + loc.upper())
        raw = env.get(name)
        msg = item["msg"].removeprefix("Value error, ")
        lines.append(f"{name}={raw!r}: {msg}" if raw is not None else f"{name}: {msg}")
    return "; ".join(lines)


class SharedEnv(PartEnv):
    """What the router and a predictor both read."""

    debug_request_logs: bool = False
    """one log line per request (kserve's timing trace and uvicorn's access log on a predictor; the router's
    `scored`/`score refused` lines and its access log); metrics count requests either way"""
    max_audio_seconds: MaxAudioSeconds | None = None
    """overrides config.json's `max_audio_seconds`: the router refuses longer uploads, a predictor longer audio
    tensors (413)"""


class ComputeEnv(PartEnv):
    """The model call's knobs: a predictor and the cache Job run the same backend."""

    max_batch_size: Annotated[int, Field(ge=1)] = 8
    """requests (clips, for the cache Job) per model call"""
    device: NonBlank = "auto"
    """`auto` (CUDA if present), `cpu`, `cuda`, `cuda:1`"""
    torch_threads: Annotated[int, Field(ge=0)] = 0
    """torch intra-op threads; 0: `AUDIO_SCORE_CPU_LIMIT_MILLICORES` rounded up, else the cgroup's `cpu.max`
    quota, else every core. `up` sets it to the machine's cores divided between its predictors"""
    cpu_limit_millicores: Annotated[int, Field(ge=0)] = 0
    """the container's CPU limit (0: none given); the chart sets it through the downward API
    (`resourceFieldRef: limits.cpu`, divisor `1m`)"""


class PredictorEnv(ComputeEnv, SharedEnv):
    """What a predictor can be told beyond config.json."""

    max_batch_wait_ms: Annotated[float, Field(ge=0.0)] = 10.0
    """how long a request waits for others to fill a batch"""
    max_queue_size: Annotated[int, Field(ge=1)] = 64
    """queued requests per model before 503"""
    cache_memory_mb: Annotated[int, Field(ge=0)] = 512
    """the in-memory LRU of reference entries"""

    @property
    def cache_memory_bytes(self) -> int:
        return self.cache_memory_mb * MIB


class JobEnv(ComputeEnv):
    """What the cache Job can be told beyond config.json and its flags."""

    disable_cache_flush: bool = False
    """keeps fresh entries even with `--force` (it wins; the Job logs so)"""
    job_completion_index: Annotated[int | None, Field(ge=0, validation_alias="JOB_COMPLETION_INDEX")] = None
    """set by an Indexed Job: this pod's shard with `--shards N`"""


class RouterEnv(SharedEnv):
    """What the router can be told beyond config.json."""

    server_host: NonBlank = "127.0.0.1"
    """bind address (`0.0.0.0` in a container); `up` reads it too"""
    server_port: Annotated[int, Field(ge=0, le=65535)] = 8000
    """bind port; `up` reads it too"""
    server_socket: str | None = None
    """bind this Unix socket instead of host and port; `up` reads it too"""
    pod_namespace: Annotated[str | None, Field(validation_alias="POD_NAMESPACE")] = None
    """the namespace in the default predictor URL; unset: the service account's namespace file, else `default`"""
    predictor_url: str | None = None
    """URL template of the predictors, `{model}` replaced by the key; without `{model}`: one server hosting every
    model. Unset: KServe's predictor Service, `http://{model}-predictor.<namespace>.svc.cluster.local`"""
    predictor_urls: Annotated[dict[str, str], NoDecode] = {}
    """per-model URLs that win over the template: `whisper-small=http://host-a:8080,higgs-audio-v2=http://host-b:8080`
    (`up` sets it)"""
    predictor_timeout_s: Annotated[float, Field(ge=0.1)] = 30.0
    """per-request predictor timeout (then 504)"""
    body_timeout_s: Annotated[float, Field(ge=0.1)] = 30.0
    """longest wait for the next piece of a request body before a 408 (a client that declared more bytes than it
    sends, or stalls); decoding starts only once the whole body is in"""
    api_keys: CommaList = ()
    """comma-separated keys (unset: open); when set, every route but `/healthz`, `/readyz`, `/metrics`, the docs and
    the try page's files (`/`, `/try/...`) needs one, as `X-API-Key: <key>` or `Authorization: Bearer <key>`
    (else 401)"""
    max_upload_bytes: MaxUploadBytes | None = None
    """overrides config.json's `max_upload_bytes` (larger uploads get 413)"""

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

    @property
    def predictor_url_template(self) -> str:
        """``predictor_url``, else KServe's Standard-mode predictor Service in the router's own namespace."""
        if self.predictor_url:
            return self.predictor_url
        namespace = self.pod_namespace
        if not namespace and IN_CLUSTER_NAMESPACE_FILE.is_file():
            namespace = IN_CLUSTER_NAMESPACE_FILE.read_text().strip()
        return f"http://{{model}}-predictor.{namespace or 'default'}.svc.cluster.local"


#: The parts and the class each reads, in the order the documentation lists them.
PARTS: dict[str, type[PartEnv]] = {"router": RouterEnv, "predictor": PredictorEnv, "cache build": JobEnv}
