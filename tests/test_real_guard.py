"""The decoding guard on real weights (issue 15): OpenAI's tiny.en and multilingual base on real speech.

- Every no-speech take (digital silence, -60 dBFS noise, white noise, a 440 Hz tone) is flagged and gets an empty
  transcript; no committed reading (references and takes, three voices, three rates) is flagged or looped.
- A take whose words repeat is decoded to the end of its first phrase plus the loop's start, not to the cap.
- whisper base hears each clip in its language: the references' languages are detected (English, French,
  German), and an upload forced to its reference's language comes back in it, even read with another accent.

French and German speech is made with espeak-ng at test time (skipped when it is not installed); the English
readings are the committed ones. Select this tier with ``pytest -m real_voices``.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from audio_score.audio import decode_audio
from audio_score.backends import load_backend
from audio_score.env_settings import PredictorEnv
from audio_score.settings import load_settings
from audio_score_tools.speech import load_takes

# base decodes every committed reading on the CPU: minutes on a shared 2-core machine.
pytestmark = [pytest.mark.real_voices, pytest.mark.timeout(1500)]
RATE = 16000


def backend_for(tmp_path: Path, checkpoint: Path, key: str = "w"):
    config = tmp_path / "config.json"
    config.write_text(
        f'{{"models": [{{"key": "{key}", "type": "whisper", "model_id": "{checkpoint}"}}],'
        f' "video_clip_dir": "clips", "cache_dir": "cache"}}'
    )
    settings = load_settings(PredictorEnv, config)
    return load_backend(settings.models[0], settings)


def no_speech_takes() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    n = 3 * RATE
    t = np.arange(n) / RATE
    return {
        "silence": np.zeros(n, np.float32),
        "noise -60 dBFS": (rng.standard_normal(n) * 10 ** (-60 / 20)).astype(np.float32),
        "white noise": (rng.standard_normal(n) * 0.3).astype(np.float32),
        "tone 440 Hz": (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32),
    }


def espeak(tmp_path: Path, voice: str, text: str) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: no French/German speech to test with")
    out = tmp_path / f"{voice}-{abs(hash(text))}.wav"
    subprocess.run(["espeak-ng", "-v", voice, "-w", str(out), text], check=True, capture_output=True)
    return decode_audio(out, sampling_rate=RATE)


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory: pytest.TempPathFactory, real_tiny_en: Path):
    return backend_for(tmp_path_factory.mktemp("tiny-en"), real_tiny_en)


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory, real_base: Path):
    return backend_for(tmp_path_factory.mktemp("base"), real_base)


@pytest.mark.parametrize("model", ["tiny_en", "base"])
def test_no_speech_takes_are_flagged_and_no_reading_is(request, model: str) -> None:
    backend = request.getfixturevalue(model)
    silent = no_speech_takes()
    heard = backend.embed(list(silent.values()), languages=["en"] * len(silent))
    for name, features in zip(silent, heard, strict=True):
        assert features.no_speech, (name, features)
        assert features.transcript == "" and not features.looped
    readings = [decode_audio(t.path, sampling_rate=RATE) for t in load_takes()]
    for start in range(0, len(readings), 8):
        for features in backend.embed(readings[start : start + 8], languages=["en"] * 8):
            assert not features.no_speech and not features.looped, features.transcript
            assert features.transcript and features.language == "en"
            # Whisper's own "decoding failed" bound (transcribe's logprob_threshold) is -1.0: clear readings
            # are well above it.
            assert features.avg_logprob is not None and -1.0 < features.avg_logprob <= 0.0, features


def test_a_repeating_take_is_cut_after_the_phrase_and_stops_early(tiny_en) -> None:
    reading = next(t for t in load_takes() if t.variant == "reference" and t.sentence == "s1")
    once = decode_audio(reading.path, sampling_rate=RATE)
    gap = np.zeros(RATE // 5, np.float32)
    five_times = np.concatenate([np.concatenate([once, gap])] * 5)
    runner = tiny_en.runner
    features, _ = runner.log_mel([five_times])
    (heard,) = runner.transcribe(runner.encode(features), [len(five_times) / RATE])
    assert heard.looped
    assert heard.text.lower().count("window") == 1, heard.text
    assert heard.tokens < heard.budget  # stopped when the loop showed, not at the budget


FRENCH = "Ouvrez la fenêtre avant le début de la réunion, s'il vous plaît."
GERMAN = "Bitte öffnen Sie das Fenster, bevor die Besprechung beginnt."
ENGLISH = "Please open the window before the meeting starts."


def test_base_detects_each_reference_language_and_forces_it_on_uploads(tmp_path: Path, base) -> None:
    references = {
        "fr": espeak(tmp_path, "fr", FRENCH),
        "de": espeak(tmp_path, "de", GERMAN),
        "en": decode_audio(next(t for t in load_takes() if t.variant == "reference").path, sampling_rate=RATE),
    }
    detected = base.embed(list(references.values()))  # no language: detected, as when an entry is built
    assert [f.language for f in detected] == list(references)
    uploads = [
        espeak(tmp_path, "fr+f3", FRENCH),
        espeak(tmp_path, "de+f3", GERMAN),
        espeak(tmp_path, "fr", ENGLISH),  # English read with a French accent, against an English reference
        espeak(tmp_path, "de", ENGLISH),
    ]
    languages = ["fr", "de", "en", "en"]
    heard = base.embed(uploads, languages=languages)
    assert [f.language for f in heard] == languages
    # French words, whatever base makes of espeak-ng's female French voice (it may mishear the sentence)
    assert {"la", "le", "de", "vous", "je", "avant", "fenêtre", "réunion"} & set(heard[0].transcript.lower().split())
    assert "fenster" in heard[1].transcript.lower()
    assert all("window" in f.transcript.lower() for f in heard[2:])
