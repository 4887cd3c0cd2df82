"""What the fuzz tests share: hypothesis profiles, the seed files, and the mutations made of them.

Profiles (``HYPOTHESIS_PROFILE``, default ``ci``):

- ``ci``: what ``make test`` runs, about a minute for every fuzz test together; derandomized, so a run is
  reproducible and CI never fails on an example it did not try before.
- ``fuzz``: what ``make fuzz`` runs, about ten minutes, random, with hypothesis' example database so a failure
  found once is replayed first next time.

Each profile has a per-example deadline: an example that takes longer is a failure (a hang), not a slow pass.
Seeds are real short files of every supported format written with :mod:`audio_score_tools.media`; a mutation
is a few of: byte flips, a truncation, an inserted chunk (random bytes or a copy of another part of the file, as
a broken muxer writes), and header field edits (1, 2 or 4 bytes in the first 128 set to an extreme value).
"""

from __future__ import annotations

import functools
import os
import tempfile
from datetime import timedelta
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from audio_score_tools.media import synth_speechlike, write_audio, write_clip_mov

RATE = 16000
SEED_SECONDS = 1.0
#: The formats uploads come in: extension -> how to write one.
SEED_FORMATS = (".wav", ".mp3", ".mov", ".webm", ".ogg", ".flac")

_COMMON = {
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
settings.register_profile(
    "ci", max_examples=80, deadline=timedelta(seconds=20), derandomize=True, database=None, **_COMMON
)
settings.register_profile("fuzz", max_examples=3500, deadline=timedelta(seconds=20), **_COMMON)
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "ci")
settings.load_profile(PROFILE)


def examples(ci: int) -> settings:
    """``ci`` examples under the ci profile (the tests differ in cost per example), the profile's own count
    under any other."""
    return settings(max_examples=ci) if PROFILE == "ci" else settings()


@functools.cache
def seed_media() -> dict[str, bytes]:
    """One short, loud file per format (AAC in MOV with its video track, Opus in WebM and Ogg, ...)."""
    signal = synth_speechlike(SEED_SECONDS, RATE, seed=11)
    with tempfile.TemporaryDirectory(prefix="audio-score-fuzz-") as tmp:
        root = Path(tmp)
        files = {}
        for ext in SEED_FORMATS:
            if ext == ".mov":
                files[ext] = write_clip_mov(root / "seed.mov", signal, RATE).read_bytes()
            else:
                files[ext] = write_audio(root / f"seed{ext}", signal, RATE).read_bytes()
    return files


_EXTREMES = st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF])


def mutate(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` with one to four mutations applied in turn."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        size = len(data)
        position = draw(st.integers(0, max(0, size - 1)))
        op = draw(st.sampled_from(["flip", "truncate", "insert", "copy", "field"]))
        if op == "flip" and size:
            data[position] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del data[position:]
        elif op == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        elif op == "copy" and size:
            start = draw(st.integers(0, size - 1))
            data[position:position] = data[start : start + draw(st.integers(1, 512))]
        elif op == "field":
            width = draw(st.sampled_from([1, 2, 4]))
            at = draw(st.integers(0, min(size, 128)))
            value = draw(_EXTREMES | st.integers(0, 2**32 - 1)) & ((1 << (8 * width)) - 1)
            data[at : at + width] = value.to_bytes(width, draw(st.sampled_from(["little", "big"])))
    return bytes(data)


@st.composite
def mutated_media(draw: st.DrawFn) -> tuple[str, bytes]:
    """``(format, bytes)``: a seed file of a drawn format, mutated."""
    fmt = draw(st.sampled_from(SEED_FORMATS))
    return fmt, mutate(draw, seed_media()[fmt])


@st.composite
def mutated_bytes(draw: st.DrawFn, original: bytes) -> bytes:
    """``original`` (e.g. a whole multipart body), mutated."""
    return mutate(draw, original)


def check_samples(samples: np.ndarray, max_seconds: float) -> None:
    """What a successful decode promises: mono float32, finite, in [-1, 1], not empty, within the duration limit."""
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert 0 < samples.size <= max_seconds * RATE * 1.01 + 64, samples.size
    assert np.isfinite(samples).all()
    assert float(np.max(np.abs(samples))) <= 1.0
