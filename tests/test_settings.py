"""Settings: each part reads config.json plus its own environment class, with errors that name the field and the
fix; another part's bad variable does not stop it."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import get_args

import pytest

from audio_score.env_settings import PARTS, JobEnv, PartEnv, PredictorEnv, RouterEnv
from audio_score.errors import ConfigError
from audio_score.settings import FileConfig, load_settings
from audio_score_tools.procs import free_port, http_ok, started, subcommand

REPO_ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return path


BASE = {
    "models": [
        {"key": "whisper-small", "type": "whisper", "model_id": "openai/whisper-small"},
        {
            "key": "higgs-audio-v2",
            "type": "higgs_audio",
            "model_id": "bosonai/higgs-audio-v2-generation-3B-base",
            "processor_id": "openai/whisper-large-v3",
            "transcriber_id": "openai/whisper-small",
        },
    ],
    "video_clip_dir": "data/reference-videos",
    "cache_dir": "data/cache",
    "target_sampling_rate": 16000,
}


def test_repo_config_loads_with_defaults() -> None:
    for part in PARTS.values():
        settings = load_settings(part, REPO_ROOT / "config.json", env={})
        assert type(settings.env) is part
        assert settings.model_keys == ["whisper-small", "higgs-audio-v2"]
        assert settings.config.video_clip_dir == (REPO_ROOT / "data/reference-videos").resolve()
        assert settings.config.cache_dir == (REPO_ROOT / "data/cache").resolve()
    predictor = load_settings(PredictorEnv, REPO_ROOT / "config.json", env={}).env
    assert (predictor.max_batch_size, predictor.max_batch_wait_ms, predictor.cache_memory_bytes) == (8, 10.0, 512 << 20)
    assert load_settings(JobEnv, REPO_ROOT / "config.json", env={}).env.disable_cache_flush is False
    router = load_settings(RouterEnv, REPO_ROOT / "config.json", env={}).env
    assert router.predictor_url_template == "http://{model}-predictor.default.svc.cluster.local"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, BASE)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(RouterEnv, path, env={})
    assert settings.config.cache_dir == sub / "data/cache"


def test_local_model_folder_resolves_and_hub_id_stays(tmp_path: Path) -> None:
    (tmp_path / "models" / "w").mkdir(parents=True)
    settings = load_settings(PredictorEnv, write(tmp_path, BASE), env={})
    assert settings.resolve_model_ref("models/w") == str(tmp_path / "models" / "w")
    assert settings.resolve_model_ref("./models/w") == str(tmp_path / "models" / "w")
    assert settings.resolve_model_ref("openai/whisper-small") == "openai/whisper-small"


def test_environment_knobs(tmp_path: Path) -> None:
    env = {
        "AUDIO_SCORE_MODEL_KEYS": "higgs-audio-v2",
        "AUDIO_SCORE_MAX_BATCH_SIZE": "4",
        "AUDIO_SCORE_MAX_BATCH_WAIT_MS": "2.5",
        "AUDIO_SCORE_DISABLE_CACHE_FLUSH": "1",
        "AUDIO_SCORE_SERVER_HOST": "0.0.0.0",
        "AUDIO_SCORE_SERVER_PORT": "9000",
        "AUDIO_SCORE_SERVER_SOCKET": "/tmp/a.sock",
        "AUDIO_SCORE_PREDICTOR_URL": "http://localhost:8080",
        "POD_NAMESPACE": "ignored-when-url-set",
        "JOB_COMPLETION_INDEX": "3",
    }
    path = write(tmp_path, BASE)
    predictor, job, router = (load_settings(part, path, env=env) for part in (PredictorEnv, JobEnv, RouterEnv))
    for s in (predictor, job, router):
        assert s.model_keys == ["higgs-audio-v2"]
        assert [m.key for m in s.config.models] == ["whisper-small", "higgs-audio-v2"]
    assert (predictor.env.max_batch_size, predictor.env.max_batch_wait_ms) == (4, 2.5)
    assert (job.env.max_batch_size, job.env.disable_cache_flush, job.env.job_completion_index) == (4, True, 3)
    assert (router.env.server_host, router.env.server_port, router.env.server_socket) == (
        "0.0.0.0",
        9000,
        "/tmp/a.sock",
    )
    assert router.env.predictor_url_template == "http://localhost:8080"


def test_single_model_key_and_namespace_default(tmp_path: Path) -> None:
    env = {"AUDIO_SCORE_MODEL_KEY": "whisper-small", "POD_NAMESPACE": "prod"}
    s = load_settings(RouterEnv, write(tmp_path, BASE), env=env)
    assert s.model_keys == ["whisper-small"]
    assert s.env.predictor_url_template == "http://{model}-predictor.prod.svc.cluster.local"
    # The CLI's keys win over both variables.
    assert load_settings(JobEnv, write(tmp_path, BASE), env=env, model_keys=["higgs-audio-v2"]).model_keys == [
        "higgs-audio-v2"
    ]


def test_unknown_model_key_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*known: whisper-small, higgs-audio-v2"):
        load_settings(PredictorEnv, write(tmp_path, BASE), env={"AUDIO_SCORE_MODEL_KEYS": "nope"})


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda c: c.update(video_clip_dirs="x"), r"video_clip_dirs: unknown field"),
        (lambda c: c.pop("cache_dir"), r"cache_dir: required field is missing"),
        (lambda c: c["models"][0].update(type="wav2vec"), r"models\.0\.type"),
        (lambda c: c["models"][1].pop("transcriber_id"), r"needs 'processor_id'.*'transcriber_id'"),
        (lambda c: c["models"][0].update(key="Bad_Key"), r"models\.0\.key"),
        (lambda c: c["models"].append(dict(c["models"][0])), r"repeated: whisper-small"),
        (lambda c: c.update(target_sampling_rate="fast"), r"target_sampling_rate"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, mutate, message: str) -> None:
    config = json.loads(json.dumps(BASE))
    mutate(config)
    with pytest.raises(ConfigError, match=message):
        load_settings(RouterEnv, write(tmp_path, config), env={})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; pass --config"):
        load_settings(JobEnv, tmp_path / "absent.json", env={})
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(JobEnv, bad, env={})


@pytest.mark.parametrize(
    ("part", "name", "value"),
    [
        (PredictorEnv, "AUDIO_SCORE_MAX_BATCH_SIZE", "0"),
        (JobEnv, "AUDIO_SCORE_MAX_BATCH_SIZE", "many"),
        (RouterEnv, "AUDIO_SCORE_DECODER", "pydub"),
        (RouterEnv, "AUDIO_SCORE_SERVER_PORT", "70000"),
        (RouterEnv, "AUDIO_SCORE_MAX_UPLOAD_BYTES", "10"),
        (PredictorEnv, "AUDIO_SCORE_MAX_AUDIO_SECONDS", "900"),
        (JobEnv, "JOB_COMPLETION_INDEX", "-1"),
        (PredictorEnv, "AUDIO_SCORE_DEVICE", " "),
    ],
)
def test_bad_environment_values(tmp_path: Path, part: type[PartEnv], name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{name}={value!r}"):
        load_settings(part, write(tmp_path, BASE), env={name: value})


# --- each part reads only its own variables ---------------------------------------------------------------------

#: A bad value of a variable only one part reads, for each part.
BAD_FOR = {
    "predictor": {"AUDIO_SCORE_MAX_QUEUE_SIZE": "0"},
    "cache build": {"AUDIO_SCORE_DISABLE_CACHE_FLUSH": "maybe"},
    "router": {"AUDIO_SCORE_PREDICTOR_TIMEOUT_S": "0"},
}


@pytest.mark.parametrize("part", sorted(PARTS))
def test_another_parts_bad_variable_does_not_stop_this_one(tmp_path: Path, part: str) -> None:
    path = write(tmp_path, BASE)
    for other, bad in BAD_FOR.items():
        if other == part:
            ((name, value),) = bad.items()
            with pytest.raises(ConfigError, match=rf"^{name}={value!r}"):
                load_settings(PARTS[part], path, env=bad)
        else:
            assert load_settings(PARTS[part], path, env=bad).model_keys == ["whisper-small", "higgs-audio-v2"]


def test_each_variable_is_read_by_the_parts_that_declare_it() -> None:
    """The table's "used by" column is the classes: a variable only the predictor reads is no router field."""
    fields = {part: set(cls.model_fields) for part, cls in PARTS.items()}
    assert "max_queue_size" in fields["predictor"] and "max_queue_size" not in fields["router"] | fields["cache build"]
    assert "max_audio_seconds" in fields["router"] & fields["predictor"]  # both enforce the duration limit
    assert "max_upload_bytes" in fields["router"] and "max_upload_bytes" not in fields["predictor"]
    assert {"device", "torch_threads"} <= fields["predictor"] & fields["cache build"] - fields["router"]
    assert set(PartEnv.model_fields) <= fields["router"] & fields["predictor"] & fields["cache build"]
    # An override is the config.json field's own type, so its bounds are declared once.
    for cls in PARTS.values():
        for name in set(cls.model_fields) & set(FileConfig.model_fields):
            (own,) = get_args(get_args(cls.model_fields[name].annotation)[0])[1:]
            assert own.metadata == FileConfig.model_fields[name].metadata, name


def test_an_override_wins_over_config_json_for_its_part_only(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "max_upload_bytes": 4096, "max_audio_seconds": 20})
    env = {"AUDIO_SCORE_MAX_UPLOAD_BYTES": "2048", "AUDIO_SCORE_MAX_AUDIO_SECONDS": "5"}
    router = load_settings(RouterEnv, path, env=env).config
    assert (router.max_upload_bytes, router.max_audio_seconds) == (2048, 5.0)
    predictor = load_settings(PredictorEnv, path, env=env).config
    assert (predictor.max_upload_bytes, predictor.max_audio_seconds) == (4096, 5.0)
    job = load_settings(JobEnv, path, env=env).config
    assert (job.max_upload_bytes, job.max_audio_seconds) == (4096, 20.0)


def test_the_router_process_starts_with_a_bad_predictor_variable_and_the_predictor_does_not(tmp_path: Path) -> None:
    """The real subcommands: ``AUDIO_SCORE_MAX_QUEUE_SIZE=0`` (a predictor's) leaves the router serving; the
    predictor stops at start-up with exit 2 and one line naming the variable."""
    config = write(tmp_path, BASE)
    env = {"AUDIO_SCORE_MAX_QUEUE_SIZE": "0", "AUDIO_SCORE_PREDICTOR_URL": f"http://127.0.0.1:{free_port()}"}
    port = free_port()
    argv = subcommand("router", "--config", str(config), "--port", str(port))
    log = tmp_path / "router.log"
    with started(argv, ready=http_ok(f"http://127.0.0.1:{port}/healthz"), timeout_s=60, log_path=log, env=env):
        pass
    done = subprocess.run(
        [*subcommand("predictor", "--config", str(config), "--no-grpc")],
        env={**_environ(), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "AUDIO_SCORE_MAX_QUEUE_SIZE='0': Input should be greater than or equal to 1" in done.stderr


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("AUDIO_SCORE_")} | {"PYTHONPATH": str(REPO_ROOT)}


def test_decoder_is_read_from_config_json_and_the_old_variable_may_only_repeat_it(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "decoder": "pydub"})
    for part in PARTS.values():
        assert load_settings(part, path, env={}).config.decoder == "pydub"
        assert load_settings(part, path, env={"AUDIO_SCORE_DECODER": " PyDub"}).config.decoder == "pydub"
        with pytest.raises(ConfigError, match=r"AUDIO_SCORE_DECODER='pyav' disagrees with decoder='pydub'"):
            load_settings(part, path, env={"AUDIO_SCORE_DECODER": "pyav"})
    assert load_settings(RouterEnv, write(tmp_path, BASE), env={}).config.decoder == "pyav"
    with pytest.raises(ConfigError, match="decoder"):
        load_settings(RouterEnv, write(tmp_path, {**BASE, "decoder": "sox"}), env={})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert load_settings(JobEnv, None, env={"AUDIO_SCORE_CONFIG": str(path)}).config_path == path


def test_audio_similarity_choice(tmp_path: Path) -> None:
    def audio_similarity(config: dict) -> str:
        return load_settings(PredictorEnv, write(tmp_path, config), env={}).config.audio_similarity

    assert audio_similarity(BASE) == "aligned"
    assert audio_similarity({**BASE, "audio_similarity": "pooled"}) == "pooled"
    with pytest.raises(ConfigError, match="audio_similarity"):
        audio_similarity({**BASE, "audio_similarity": "dtw"})


def test_text_similarity_choice(tmp_path: Path) -> None:
    def text_similarity(config: dict) -> str:
        return load_settings(PredictorEnv, write(tmp_path, config), env={}).config.text_similarity

    assert text_similarity(BASE) == "phonetic_word"
    assert text_similarity({**BASE, "text_similarity": "fuzzy_word"}) == "fuzzy_word"
    assert text_similarity({**BASE, "text_similarity": "word"}) == "word"
    assert text_similarity({**BASE, "text_similarity": "char"}) == "char"
    with pytest.raises(ConfigError, match="text_similarity"):
        text_similarity({**BASE, "text_similarity": "bleu"})


@pytest.mark.parametrize(
    ("given", "code"), [("en", "en"), ("German", "de"), ("<|fr|>", "fr"), ("castilian", "es"), (None, None)]
)
def test_language_is_checked_against_whispers_table_and_kept_as_its_code(tmp_path: Path, given, code) -> None:
    config = {**BASE, "models": [{"key": "w", "type": "whisper", "model_id": "openai/whisper-base", "language": given}]}
    assert load_settings(PredictorEnv, write(tmp_path, config), env={}).models[0].language == code


def test_an_unknown_language_is_refused_at_config_load_naming_the_valid_codes(tmp_path: Path) -> None:
    config = {**BASE, "models": [{"key": "w", "type": "whisper", "model_id": "openai/whisper-base", "language": "xx"}]}
    with pytest.raises(ConfigError, match=r"models\.0\.language: .*unknown language 'xx'.*\(en, zh, de, es,"):
        load_settings(PredictorEnv, write(tmp_path, config), env={})


def test_the_language_table_is_transformers_own() -> None:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    from audio_score import whisper_languages

    assert whisper_languages.LANGUAGES == LANGUAGES
    assert {**{n: c for c, n in whisper_languages.LANGUAGES.items()}, **whisper_languages.ALIASES} == TO_LANGUAGE_CODE


# --- the documentation's tables are the declarations ------------------------------------------------------------


@pytest.mark.parametrize("document", ["README.md", "docs/architecture.md"])
def test_the_settings_tables_are_generated_from_the_declarations(document: str) -> None:
    """README's and the architecture doc's tables are exactly what the declarations render (run
    ``python -m audio_score_tools.settings_tables`` after changing a setting)."""
    from audio_score_tools.settings_tables import render

    text = (REPO_ROOT / document).read_text(encoding="utf-8")
    assert render(document, text) == text, f"{document}: stale; run python -m audio_score_tools.settings_tables"


def test_the_tables_show_every_declared_setting_with_its_default_and_bounds() -> None:
    from audio_score.env_settings import env_name
    from audio_score_tools.settings_tables import TABLES

    readme = TABLES[("README.md", "environment")]()
    for part in PARTS.values():
        for name, field in part.model_fields.items():
            assert f"| `{env_name(name, field)}` |" in readme, name
    assert "| `AUDIO_SCORE_MAX_QUEUE_SIZE` | 64 | integer, ≥ 1 | predictor | queued requests" in readme
    assert "| `AUDIO_SCORE_MAX_AUDIO_SECONDS` | — | number, > 0, ≤ 600 | router, predictor |" in readme
    assert "| `AUDIO_SCORE_CONFIG` | `config.json` | path | all |" in readme
    config = TABLES[("README.md", "config")]()
    assert "| `max_upload_bytes` | 26214400 | integer, ≥ 1024 |" in config
    assert "| `models[].type` | required | `whisper` \\| `higgs_audio` |" in config
