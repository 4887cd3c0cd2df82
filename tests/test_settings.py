"""Settings: config.json + environment in one object, with errors that name the field and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from audio_score.errors import ConfigError
from audio_score.settings import load_settings

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
    settings = load_settings(REPO_ROOT / "config.json", env={})
    assert settings.model_keys == ["whisper-small", "higgs-audio-v2"]
    assert settings.video_clip_dir == (REPO_ROOT / "data/reference-videos").resolve()
    assert settings.cache_dir == (REPO_ROOT / "data/cache").resolve()
    assert settings.max_batch_size == 8
    assert settings.max_batch_wait_ms == 10.0
    assert settings.disable_cache_flush is False
    assert settings.predictor_url == "http://{model}-predictor.default.svc.cluster.local"


def test_relative_paths_resolve_against_the_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sub = tmp_path / "conf"
    sub.mkdir()
    path = write(sub, BASE)
    monkeypatch.chdir(tmp_path)
    settings = load_settings(path, env={})
    assert settings.cache_dir == sub / "data/cache"


def test_local_model_folder_resolves_and_hub_id_stays(tmp_path: Path) -> None:
    (tmp_path / "models" / "w").mkdir(parents=True)
    settings = load_settings(write(tmp_path, BASE), env={})
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
    s = load_settings(write(tmp_path, BASE), env=env)
    assert s.model_keys == ["higgs-audio-v2"]
    assert [m.key for m in s.all_models] == ["whisper-small", "higgs-audio-v2"]
    assert (s.max_batch_size, s.max_batch_wait_ms, s.disable_cache_flush) == (4, 2.5, True)
    assert (s.server_host, s.server_port, s.server_socket) == ("0.0.0.0", 9000, "/tmp/a.sock")
    assert s.predictor_url == "http://localhost:8080"
    assert s.job_completion_index == 3


def test_single_model_key_and_namespace_default(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, BASE), env={"AUDIO_SCORE_MODEL_KEY": "whisper-small", "POD_NAMESPACE": "prod"})
    assert s.model_keys == ["whisper-small"]
    assert s.predictor_url == "http://{model}-predictor.prod.svc.cluster.local"


def test_unknown_model_key_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'nope'.*known: whisper-small, higgs-audio-v2"):
        load_settings(write(tmp_path, BASE), env={"AUDIO_SCORE_MODEL_KEYS": "nope"})


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
        load_settings(write(tmp_path, config), env={})


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found; pass --config"):
        load_settings(tmp_path / "absent.json", env={})
    bad = tmp_path / "bad.json"
    bad.write_text("{ not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_settings(bad, env={})


@pytest.mark.parametrize(
    ("name", "value"),
    [("AUDIO_SCORE_MAX_BATCH_SIZE", "0"), ("AUDIO_SCORE_MAX_BATCH_SIZE", "many"), ("AUDIO_SCORE_DECODER", "pydub")],
)
def test_bad_environment_values(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name):
        load_settings(write(tmp_path, BASE), env={name: value})


def test_decoder_is_read_from_config_json_and_the_old_variable_may_only_repeat_it(tmp_path: Path) -> None:
    path = write(tmp_path, {**BASE, "decoder": "pydub"})
    assert load_settings(path, env={}).decoder == "pydub"
    assert load_settings(path, env={"AUDIO_SCORE_DECODER": "pydub"}).decoder == "pydub"
    with pytest.raises(ConfigError, match=r"AUDIO_SCORE_DECODER='pyav' disagrees with decoder='pydub'"):
        load_settings(path, env={"AUDIO_SCORE_DECODER": "pyav"})
    assert load_settings(write(tmp_path, BASE), env={}).decoder == "pyav"
    with pytest.raises(ConfigError, match="decoder"):
        load_settings(write(tmp_path, {**BASE, "decoder": "sox"}), env={})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = write(tmp_path, BASE)
    assert load_settings(None, env={"AUDIO_SCORE_CONFIG": str(path)}).config_path == path


def test_audio_similarity_choice(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, BASE), env={}).audio_similarity == "aligned"
    assert load_settings(write(tmp_path, {**BASE, "audio_similarity": "pooled"}), env={}).audio_similarity == "pooled"
    with pytest.raises(ConfigError, match="audio_similarity"):
        load_settings(write(tmp_path, {**BASE, "audio_similarity": "dtw"}), env={})


def test_text_similarity_choice(tmp_path: Path) -> None:
    assert load_settings(write(tmp_path, BASE), env={}).text_similarity == "phonetic_word"
    assert load_settings(write(tmp_path, {**BASE, "text_similarity": "fuzzy_word"}), env={}).text_similarity == (
        "fuzzy_word"
    )
    assert load_settings(write(tmp_path, {**BASE, "text_similarity": "word"}), env={}).text_similarity == "word"
    assert load_settings(write(tmp_path, {**BASE, "text_similarity": "char"}), env={}).text_similarity == "char"
    with pytest.raises(ConfigError, match="text_similarity"):
        load_settings(write(tmp_path, {**BASE, "text_similarity": "bleu"}), env={})


@pytest.mark.parametrize(
    ("given", "code"), [("en", "en"), ("German", "de"), ("<|fr|>", "fr"), ("castilian", "es"), (None, None)]
)
def test_language_is_checked_against_whispers_table_and_kept_as_its_code(tmp_path: Path, given, code) -> None:
    config = {**BASE, "models": [{"key": "w", "type": "whisper", "model_id": "openai/whisper-base", "language": given}]}
    assert load_settings(write(tmp_path, config)).models[0].language == code


def test_an_unknown_language_is_refused_at_config_load_naming_the_valid_codes(tmp_path: Path) -> None:
    config = {**BASE, "models": [{"key": "w", "type": "whisper", "model_id": "openai/whisper-base", "language": "xx"}]}
    with pytest.raises(ConfigError, match=r"models\.0\.language: .*unknown language 'xx'.*\(en, zh, de, es,"):
        load_settings(write(tmp_path, config))


def test_the_language_table_is_transformers_own() -> None:
    from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

    from audio_score import whisper_languages

    assert whisper_languages.LANGUAGES == LANGUAGES
    assert {**{n: c for c, n in whisper_languages.LANGUAGES.items()}, **whisper_languages.ALIASES} == TO_LANGUAGE_CODE
