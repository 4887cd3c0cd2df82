"""A part's settings: config.json's content plus the ``AUDIO_SCORE_*`` environment class of that part.

config.json is what every pod shares (its schema: :class:`FileConfig`, :class:`ModelSpec`); the environment is
declared per part in :mod:`audio_score.env_settings`. :func:`load_settings` builds one part's
:class:`Settings` (``load_settings(RouterEnv)``, ``load_settings(PredictorEnv)``, ``load_settings(JobEnv)``): the
file and that part's class, each field declared once and read where it is declared (``settings.config.cache_dir``,
``settings.env.max_batch_size``), nothing copied. Errors name the field and say how to fix it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from audio_score.contract import DEFAULT_AUDIO_SIMILARITY, DEFAULT_TEXT_SIMILARITY, AudioSimilarity, TextSimilarity
from audio_score.env_settings import E, JobEnv, MaxAudioSeconds, MaxUploadBytes, PartEnv, PredictorEnv, RouterEnv
from audio_score.errors import ConfigError
from audio_score.whisper_languages import LANGUAGES, language_code

#: A model key names an InferenceService, its predictor Service and a cache folder, so it must be a DNS-1035
#: label short enough that KServe's ``-predictor`` suffix and a namespace still fit.
MODEL_KEY_PATTERN = r"^[a-z]([-a-z0-9]{0,38}[a-z0-9])?$"
#: A part's environment class; covariant, so code any part runs takes ``Settings[PartEnv]`` and code a predictor
#: and the cache Job share takes ``Settings[ComputeEnv]``.
P = TypeVar("P", bound=PartEnv, covariant=True)


class ModelSpec(BaseModel):
    """One entry of ``models`` in config.json."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    key: Annotated[str, Field(pattern=MODEL_KEY_PATTERN)]
    """a lowercase DNS label of at most 40 characters: it names the InferenceService, its Service and a cache
    folder"""
    type: Literal["whisper", "higgs_audio"]
    """the backend"""
    model_id: Annotated[str, Field(min_length=1)]
    """hub id (`openai/whisper-small`) or local folder (starts with `/`, `./`, `../`, `~`, or exists relative to
    config.json's folder: `./models/x`, `/mnt/models`)"""
    processor_id: str | None = None
    """`higgs_audio` only, and required there: the Whisper feature extractor (e.g. `openai/whisper-large-v3`)"""
    transcriber_id: str | None = None
    """`higgs_audio` only, and required there: the Whisper model that transcribes"""
    revision: str | None = None
    """a hub revision (branch, tag or commit); unset: the hub's default"""
    language: str | None = None
    """force the transcription language of a multilingual Whisper (`en`, `es`, ...; a Whisper code, name or
    `<|xx|>`, refused at config load when Whisper has no such language and at model load when the checkpoint lacks
    it); unset, each reference clip's language is detected once when its entry is built and every upload scored
    against it is heard in it. Ignored, with a warning at load, by English-only (`*.en`) checkpoints and by legacy
    ones whose generation config predates `task_to_id` (their `forced_decoder_ids` decide)"""
    max_new_tokens: Annotated[int, Field(ge=1, le=444)] = 128
    """transcript length limit; capped, with a warning at load, to what the checkpoint's decoder holds
    (`max_target_positions` minus generate's prompt)"""

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
    """The schema of config.json itself (the seed's fields plus optional limits).

    Read with ``context={"base": folder}`` (as :func:`read_config_file` does), the two folders come out absolute,
    relative to config.json's own folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)

    models: Annotated[list[ModelSpec], Field(min_length=1)]
    """the models (the `models[].*` rows); keys must be unique"""
    video_clip_dir: Path
    """the reference clips (relative to config.json's folder)"""
    cache_dir: Path
    """the reference cache (relative to config.json's folder)"""
    target_sampling_rate: Annotated[int, Field(ge=8000, le=48000)] = 16000
    """the rate everything is decoded to; must equal the feature extractor's rate or the model fails to load"""
    max_upload_bytes: MaxUploadBytes = 25 * 1024 * 1024
    """uploads above it (25 MiB) get 413; the router's `AUDIO_SCORE_MAX_UPLOAD_BYTES` overrides it"""
    max_audio_seconds: MaxAudioSeconds = 30.0
    """recordings longer than this get 413; `AUDIO_SCORE_MAX_AUDIO_SECONDS` overrides it (router and predictor)"""
    audio_similarity: AudioSimilarity = DEFAULT_AUDIO_SIMILARITY
    """which audio similarity is `audio_sim_score` (and so half of `sim_score`): `aligned` (frames aligned in
    time) or `pooled` (mean frames); `/score` returns both either way"""
    text_similarity: TextSimilarity = DEFAULT_TEXT_SIMILARITY
    """which similarity is `text_sim_score`: word-level edit distance with a misheard word close in spelling or in
    sound (Metaphone) partly credited (`phonetic_word`), the same by spelling only (`fuzzy_word`), exact words only
    (`word`; all three: no floor for unrelated sentences), or the seed's character ratio (`char`);
    `audio_score.similarity` says how, the default is what the quality benchmark chose (the kinds and the default
    are `audio_score.contract`'s)"""
    forced_text: bool = True
    """also read the reference's words through the recogniser on the upload's audio (one teacher-forced decoder
    pass per upload) and make `text_sim_score` the mean of the transcript similarity (`text_transcript_score`) and
    that forced score (`text_forced_score`); `false`: `text_sim_score` is the transcript similarity alone, the
    seed's meaning. `audio_score.scoring` says why; the default is what the quality benchmark chose"""
    decoder: Literal["pyav", "pydub"] = "pyav"
    """the one decoder for reference clips (cache Job, predictor) and uploads (router): `pyav` (in-process FFmpeg)
    or `pydub` (the seed's, calls the ffmpeg binary). It lives here, in the file every pod mounts, so no part can
    decode differently (a clip uploaded as itself scores 1.0 only if they agree); chart value `config.decoder`"""

    @field_validator("models")
    @classmethod
    def _unique_keys(cls, models: list[ModelSpec]) -> list[ModelSpec]:
        keys = [m.key for m in models]
        dupes = sorted({k for k in keys if keys.count(k) > 1})
        if dupes:
            raise ValueError(f"model keys must be unique; repeated: {', '.join(dupes)}")
        return models

    @field_validator("video_clip_dir", "cache_dir")
    @classmethod
    def _against_the_config_folder(cls, value: Path, info: ValidationInfo) -> Path:
        base = (info.context or {}).get("base")
        return (Path(base) / value.expanduser()).resolve() if base is not None else value


class Settings(BaseModel, Generic[P]):
    """What one part reads: config.json (paths resolved, the part's overrides applied), the part's own
    environment class ``P`` (:class:`RouterEnv`, :class:`PredictorEnv` or :class:`JobEnv`) and the models selected.

    Nothing is copied across: a config.json field is ``settings.config.<field>``, a knob ``settings.env.<field>``,
    each declared once (:class:`FileConfig`, :mod:`audio_score.env_settings`).
    """

    model_config = ConfigDict(frozen=True)

    config_path: Path
    config: FileConfig
    env: P
    #: The selected models (``--model``, ``AUDIO_SCORE_MODEL_KEYS``), in that order; ``config.models`` has them all.
    models: tuple[ModelSpec, ...]

    @model_validator(mode="after")
    def _decoder_is_config_jsons(self) -> Settings[P]:
        """The old per-pod ``AUDIO_SCORE_DECODER`` may only repeat config.json's ``decoder``: a pod told another
        decoder would decode uploads and references differently, so a disagreement stops it."""
        told = self.env.deprecated_decoder
        if told and told != self.config.decoder:
            raise ConfigError(
                f"AUDIO_SCORE_DECODER={told!r} disagrees with decoder={self.config.decoder!r} in {self.config_path}; "
                "the decoder is set once, in config.json's 'decoder' field ('pyav' or 'pydub'), so every pod "
                "decodes alike: unset AUDIO_SCORE_DECODER"
            )
        return self

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

    def with_models(self, keys: Sequence[str]) -> Settings[P]:
        """A copy restricted to ``keys`` (in the order given), refusing unknown keys."""
        known = {m.key: m for m in self.config.models}
        unknown = [k for k in keys if k not in known]
        if unknown:
            raise ConfigError(f"unknown model key(s) {', '.join(map(repr, unknown))}; known: {', '.join(known)}")
        return self.model_copy(update={"models": tuple(known[k] for k in keys)})


#: Each part's settings.
RouterSettings = Settings[RouterEnv]
PredictorSettings = Settings[PredictorEnv]
JobSettings = Settings[JobEnv]


def resolve_model_ref(ref: str, base: Path) -> str:
    """Tell a local checkpoint folder from a hub id: explicit paths, or relative ones that exist, are paths."""
    if ref.startswith(("/", "./", "../", "~")):
        return str((base / Path(ref).expanduser()).resolve())
    candidate = base / ref
    if candidate.is_dir():
        return str(candidate.resolve())
    return ref


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
        return FileConfig.model_validate(raw, context={"base": path.parent})
    except ValidationError as exc:
        raise ConfigError(_format_validation_error(path, exc)) from None


def load_settings(
    part: type[E],
    config_path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    model_keys: Sequence[str] | None = None,
) -> Settings[E]:
    """The settings of one part: config.json plus the environment class ``part`` reads (``os.environ`` unless
    ``env`` is given). Only ``part``'s variables are validated: another part's bad variable does not stop it.

    ``model_keys`` (from a CLI flag) wins over ``AUDIO_SCORE_MODEL_KEYS``/``AUDIO_SCORE_MODEL_KEY``; without
    either, every configured model is selected.
    """
    part_env = part.from_env(os.environ if env is None else env)
    path = Path(config_path or part_env.config_path).expanduser().resolve()
    config = read_config_file(path)
    # A knob named like a config.json field overrides it for this part (same type, so the same bounds).
    overrides = {
        name: value
        for name in type(part_env).model_fields
        if name in FileConfig.model_fields and (value := getattr(part_env, name)) is not None
    }
    settings = Settings[part](  # type: ignore[valid-type]
        config_path=path, config=config.model_copy(update=overrides), env=part_env, models=tuple(config.models)
    )
    keys = model_keys or part_env.selected_keys
    return settings.with_models(keys) if keys else settings
