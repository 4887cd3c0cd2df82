"""What the quality benchmark measures: how well a score ranks right readings above wrong ones.

Kept apart from ``bench_quality.py`` (which makes the takes and runs the model) so the definitions can be read,
and tested, on their own.
"""

from __future__ import annotations

from collections.abc import Sequence

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
