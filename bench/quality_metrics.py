"""What the quality benchmark measures: how well a score ranks right readings above wrong ones.

Kept apart from ``bench_quality.py`` (which makes the takes and runs the model) so the definitions can be read,
and tested, on their own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half): the area under the
    ROC curve, computed as the Mann-Whitney U statistic over every pair (the sets here are small)."""
    pos = np.asarray(positives, dtype=np.float64)[:, None]
    neg = np.asarray(negatives, dtype=np.float64)[None, :]
    if pos.size == 0 or neg.size == 0:
        raise ValueError("AUC needs at least one positive and one negative score")
    return float(((pos > neg).sum() + 0.5 * (pos == neg).sum()) / (pos.size * neg.size))


def worst_case_margin(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Lowest positive minus highest negative: > 0 means one threshold separates every pair."""
    return float(np.min(positives) - np.max(negatives))


def is_monotonic_decreasing(values: Sequence[float], tolerance: float = 0.0) -> bool:
    """True when each value is at most the one before it (plus ``tolerance``)."""
    v = np.asarray(values, dtype=np.float64)
    return bool(np.all(np.diff(v) <= tolerance))


def add_noise(samples: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """White Gaussian noise at ``snr_db`` relative to the signal's power over its non-silent samples."""
    x = np.asarray(samples, dtype=np.float64)
    voiced = x[np.abs(x) > 1e-3]
    power = float(np.mean((voiced if voiced.size else x) ** 2))
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power / (10.0 ** (snr_db / 10.0))), x.shape)
    out = x + noise
    peak = float(np.max(np.abs(out))) or 1.0
    return (out / max(1.0, peak)).astype(np.float32)


def per_reference_worst_margin(
    positives: Mapping[str, Sequence[float]], negatives: Mapping[str, Sequence[float]]
) -> tuple[float, str]:
    """For each reference with both positives and negatives: its lowest positive minus its highest negative; the
    smallest of those and the reference it belongs to. A threshold set per reference separates right from wrong
    when this is > 0 (a pooled margin asks one threshold to fit every reference at once)."""
    margins = {
        ref: worst_case_margin(positives[ref], negatives[ref])
        for ref in positives
        if len(positives[ref]) and len(negatives.get(ref, ()))
    }
    if not margins:
        raise ValueError("no reference has both positive and negative scores")
    worst = min(margins, key=lambda ref: (margins[ref], ref))
    return margins[worst], worst


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation, numpy's default)."""
    if not len(values):
        raise ValueError("percentile of no values")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def no_speech_takes(seconds: float = 3.0, rate: int = 16000, seed: int = 7) -> list[tuple[str, np.ndarray]]:
    """Takes in which nobody speaks, the same samples every run: digital silence, near-silence (a quiet room
    through a microphone, about -66 dBFS), white noise, a 440 Hz tone, mains hum (50 Hz and its third harmonic)
    and low rumble (low-passed noise)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    takes = {
        "silence": np.zeros(t.size),
        "near-silence": rng.normal(0, 5e-4, t.size),
        "white-noise": rng.normal(0, 0.05, t.size),
        "tone-440Hz": 0.2 * np.sin(2 * np.pi * 440 * t),
        "mains-hum": 0.1 * np.sin(2 * np.pi * 50 * t)
        + 0.05 * np.sin(2 * np.pi * 150 * t)
        + rng.normal(0, 0.002, t.size),
        "rumble": np.convolve(rng.normal(0, 0.2, t.size), np.ones(64) / 64, mode="same"),
    }
    return [(name, samples.astype(np.float32)) for name, samples in takes.items()]
