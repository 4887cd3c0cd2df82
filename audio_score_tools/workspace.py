"""A self-contained workspace (config.json, tiny models, reference clips, cache folder) for tests, the demo and
benchmarks: the same layout a user has, built on the spot, offline."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from audio_score_tools.media import synth_speechlike, write_clip_mov
from audio_score_tools.tiny_models import TinyModelSet, build_tiny_model_set

#: (uid, cid, layout, seconds, seed): both clip layouts of the design, distinct content per clip.
DEFAULT_CLIPS: tuple[tuple[str, str, str, float, int], ...] = (
    ("video1", "clip1", "nested", 2.0, 1),
    ("video1", "clip2", "nested", 2.5, 2),
    ("video2", "clip1", "flat", 1.5, 3),
)
SAMPLING_RATE = 16000


@dataclass
class Workspace:
    root: Path
    config_path: Path
    clip_dir: Path
    cache_dir: Path
    models: TinyModelSet
    clips: dict[tuple[str, str], Path] = field(default_factory=dict)
    samples: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)

    def copy_to(self, root: str | Path) -> Workspace:
        """A private copy (clips, config, cache) under ``root``; the models are shared, not copied."""
        root = Path(root)
        shutil.copytree(self.root, root)
        return Workspace(
            root=root,
            config_path=root / self.config_path.relative_to(self.root),
            clip_dir=root / self.clip_dir.relative_to(self.root),
            cache_dir=root / self.cache_dir.relative_to(self.root),
            models=self.models,
            clips={k: root / p.relative_to(self.root) for k, p in self.clips.items()},
            samples=dict(self.samples),
        )

    @property
    def model_keys(self) -> list[str]:
        return [m["key"] for m in json.loads(self.config_path.read_text())["models"]]


def clip_path(clip_dir: Path, uid: str, cid: str, layout: str, ext: str = ".mov") -> Path:
    return clip_dir / uid / f"{cid}{ext}" if layout == "nested" else clip_dir / f"{uid}_{cid}{ext}"


def model_entries(models: TinyModelSet, max_new_tokens: int = 8) -> list[dict[str, object]]:
    """config.json ``models`` for a tiny Whisper (``whisper-tiny``) and a tiny Higgs (``higgs-tiny``)."""
    return [
        {
            "key": "whisper-tiny",
            "type": "whisper",
            "model_id": str(models.whisper),
            "max_new_tokens": max_new_tokens,
        },
        {
            "key": "higgs-tiny",
            "type": "higgs_audio",
            "model_id": str(models.higgs),
            "processor_id": str(models.whisper),
            "transcriber_id": str(models.whisper),
            "max_new_tokens": max_new_tokens,
        },
    ]


def build_workspace(
    root: str | Path,
    *,
    models: TinyModelSet | None = None,
    clips: tuple[tuple[str, str, str, float, int], ...] = DEFAULT_CLIPS,
    model_keys: list[str] | None = None,
    max_new_tokens: int = 8,
    extra_config: dict[str, object] | None = None,
) -> Workspace:
    """Write clips (real .mov files), a config.json and, unless given, tiny models under ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    models = models or build_tiny_model_set(root / "models")
    clip_dir, cache_dir = root / "clips", root / "cache"
    clip_dir.mkdir(exist_ok=True)
    cache_dir.mkdir(exist_ok=True)
    entries = model_entries(models, max_new_tokens)
    if model_keys is not None:
        entries = [e for e in entries if e["key"] in model_keys]
    config = {
        "models": entries,
        "video_clip_dir": "clips",
        "cache_dir": "cache",
        "target_sampling_rate": SAMPLING_RATE,
        **(extra_config or {}),
    }
    config_path = root / "config.json"
    config_path.write_text(json.dumps(config, indent=2))
    ws = Workspace(root=root, config_path=config_path, clip_dir=clip_dir, cache_dir=cache_dir, models=models)
    for uid, cid, layout, seconds, seed in clips:
        samples = synth_speechlike(seconds, SAMPLING_RATE, seed=seed)
        path = clip_path(clip_dir, uid, cid, layout)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_clip_mov(path, samples, SAMPLING_RATE)
        ws.clips[(uid, cid)] = path
        ws.samples[(uid, cid)] = samples
    return ws
