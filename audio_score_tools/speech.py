"""The committed real-speech clips (``tests/data/speech/``, made by ``scripts/make_speech.py``) and a workspace that
scores them with real Whisper tiny.en weights, for the real-voices tests and ``make demo``."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

SPEECH_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "speech"
MODEL_KEY = "whisper-tiny-en"
SAMPLING_RATE = 16000


@dataclass(frozen=True)
class Take:
    """One synthesised reading: ``variant`` is reference, same (other voice/rate), skip or add (one word)."""

    path: Path
    sentence: str
    text: str
    voice: str
    rate: str
    variant: str
    uid: str | None = None
    cid: str | None = None


def load_takes(folder: str | Path = SPEECH_DIR) -> list[Take]:
    """Every take of ``manifest.json``, paths resolved; FileNotFoundError when the folder is not there."""
    folder = Path(folder)
    manifest = folder / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} is missing: the speech clips ship in the repository (tests/data/speech)")
    takes = json.loads(manifest.read_text())["takes"]
    return [Take(path=folder / t.pop("file"), **t) for t in takes]


def pick(takes: list[Take], sentence: str, variant: str, voice: str | None = None) -> Take:
    """The first take of ``sentence`` in ``variant`` (and ``voice``, if given)."""
    for take in takes:
        if take.sentence == sentence and take.variant == variant and voice in (None, take.voice):
            return take
    raise KeyError(f"no {variant} take of {sentence} (voice {voice})")


@dataclass(frozen=True)
class SpeechWorkspace:
    root: Path
    config_path: Path
    clip_dir: Path
    cache_dir: Path


def build_speech_workspace(
    root: str | Path, model_dir: str | Path, *, speech_dir: str | Path = SPEECH_DIR, max_new_tokens: int = 48
) -> SpeechWorkspace:
    """A workspace whose reference clips are the committed speech clips and whose one model is ``model_dir``
    (a Whisper checkpoint folder, e.g. from :func:`audio_score_tools.ct2_whisper.ensure_tiny_en`)."""
    root = Path(root)
    clip_dir, cache_dir = root / "clips", root / "cache"
    if clip_dir.exists():
        shutil.rmtree(clip_dir)
    shutil.copytree(Path(speech_dir) / "clips", clip_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    model = {"key": MODEL_KEY, "type": "whisper", "model_id": str(model_dir), "max_new_tokens": max_new_tokens}
    config = {
        "models": [model],
        "video_clip_dir": "clips",
        "cache_dir": "cache",
        "target_sampling_rate": SAMPLING_RATE,
    }
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config, indent=2) + "\n")
    return SpeechWorkspace(root=root, config_path=config_path, clip_dir=clip_dir, cache_dir=cache_dir)
