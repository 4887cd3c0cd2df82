"""Synthesise the committed speech clips of ``tests/data/speech/`` with espeak-ng (run once; tests need no synthesiser).

Five short English sentences, each read as:

* ``reference``: the reference take, en-us at a normal rate, as a ``.mov`` (AAC audio + a tiny mpeg4 video, like
  a real reference video clip) at ``clips/lesson/<sid>.mov`` (the nested ``<uid>/<cid>.mov`` layout) with the
  sentence in ``clips/lesson/<sid>.txt`` beside it;
* ``same``: the same words in other voices (British, female variants) and at slow/fast rates, as Opus ``.ogg``
  learner takes;
* ``skip``: one word left out; ``add``: one word added (both Opus learner takes).

``manifest.json`` lists every file with the exact text spoken, voice, rate and variant. Needs ``espeak-ng`` (apt)
and the ffmpeg binary of imageio-ffmpeg (a dependency). The output is small (well under 1 MB) and committed.
Files are encoded by :func:`audio_score_tools.media.render_takes`, shared with ``scripts/make_corpus.py``; the
committed ``.mov`` files predate its explicit video length (a rerun writes the same audio, the video stream may end
one frame apart).

    python scripts/make_speech.py            # rewrites tests/data/speech/
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

from audio_score_tools.media import render_takes

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / "tests" / "data" / "speech"
UID = "lesson"
#: words per minute by rate name (espeak-ng's default is 175)
RATES = {"slow": 130, "normal": 165, "fast": 200}
#: sid -> (sentence, reading with one word skipped, reading with one word added)
SENTENCES: dict[str, tuple[str, str, str]] = {
    "s1": (
        "Please open the window before the meeting starts.",
        "Open the window before the meeting starts.",
        "Please open the big window before the meeting starts.",
    ),
    "s2": (
        "My sister drinks hot coffee every morning.",
        "My sister drinks coffee every morning.",
        "My little sister drinks hot coffee every morning.",
    ),
    "s3": (
        "We walked along the river after dinner.",
        "We walked along the river after.",
        "We walked slowly along the river after dinner.",
    ),
    "s4": (
        "Can you tell me where the library is?",
        "Can you tell me where the library?",
        "Can you please tell me where the library is?",
    ),
    "s5": (
        "The children are playing football in the park.",
        "The children are playing in the park.",
        "The young children are playing football in the park.",
    ),
}
#: (variant, voice, rate) per take; the voices rotate over the sentences so each sentence gets a different mix.
SAME_TAKES = (("en-gb", "slow"), ("en-us+f3", "fast"), ("en-gb+f4", "normal"))
OTHER_VOICES = ("en-us", "en-gb", "en-us+f3", "en-gb+m3", "en-us+f4")


def speak(text: str, voice: str, rate: str, wav: Path) -> None:
    subprocess.run(["espeak-ng", "-v", voice, "-s", str(RATES[rate]), "-w", str(wav), text], check=True)


def takes() -> list[dict[str, str]]:
    """Every take to synthesise: file (relative to the output folder), sentence, text, voice, rate, variant."""
    out: list[dict[str, str]] = []
    for index, (sid, (text, skipped, added)) in enumerate(SENTENCES.items()):
        out.append(
            {"file": f"clips/{UID}/{sid}.mov", "sentence": sid, "text": text, "voice": "en-us", "rate": "normal"}
            | {"variant": "reference", "uid": UID, "cid": sid}
        )
        for voice, rate in SAME_TAKES:
            name = f"takes/{sid}-same-{voice.replace('+', '-')}-{rate}.ogg"
            out.append({"file": name, "sentence": sid, "text": text, "voice": voice, "rate": rate, "variant": "same"})
        for offset, (variant, spoken) in enumerate((("skip", skipped), ("add", added))):
            voice = OTHER_VOICES[(index + offset) % len(OTHER_VOICES)]
            name = f"takes/{sid}-{variant}.ogg"
            out.append(
                {"file": name, "sentence": sid, "text": spoken, "voice": voice, "rate": "normal", "variant": variant}
            )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(OUT), help=f"default: {OUT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if shutil.which("espeak-ng") is None:
        print("make_speech: espeak-ng is not installed (apt-get install -y espeak-ng)", file=sys.stderr)
        return 1
    out = Path(args.out)
    shutil.rmtree(out / "clips", ignore_errors=True)
    shutil.rmtree(out / "takes", ignore_errors=True)
    manifest = takes()
    render_takes(
        manifest, out, lambda take, wav: speak(take["text"], take["voice"], take["rate"], wav), upload_rate=None
    )
    version = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout.strip()
    index = {"synthesiser": version, "rates_wpm": RATES, "takes": manifest}
    (out / "manifest.json").write_text(json.dumps(index, indent=2) + "\n")
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"wrote {len(manifest)} takes to {out} ({total / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
