"""torch's intra-op threads sized to the CPU this process is given, not to every core the node has.

torch defaults to one thread per core it sees (``os.cpu_count()``: the node's, in a container), so a predictor
pod limited to 2 CPUs on a 64-core node runs 64 threads that the CFS quota throttles: a 2-thread model call
took 3-4x the wall time of a 1-thread one on a shared node. The count comes from, in order:

1. ``AUDIO_SCORE_TORCH_THREADS`` (an explicit setting wins);
2. the container's CPU limit, passed by the chart through the downward API
   (``AUDIO_SCORE_CPU_LIMIT_MILLICORES`` from ``resourceFieldRef: limits.cpu``, divisor ``1m``), rounded up;
3. the cgroup's CPU quota (``/sys/fs/cgroup/cpu.max``, cgroup v2), rounded up;
4. ``os.cpu_count()``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

from audio_score.env_settings import ComputeEnv

log = logging.getLogger(__name__)

CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def cgroup_cpu_limit(path: Path = CGROUP_CPU_MAX) -> float | None:
    """Cores allowed by the cgroup v2 quota (``"<quota> <period>"``); None when unlimited or unreadable."""
    try:
        quota, period = path.read_text().split()[:2]
        if quota == "max":
            return None
        return int(quota) / int(period)
    except (OSError, ValueError):
        return None


def resolve_torch_threads(env: ComputeEnv, *, cgroup: Path = CGROUP_CPU_MAX) -> tuple[int, str]:
    """(threads, where the number came from) for this process."""
    if env.torch_threads:
        return env.torch_threads, "AUDIO_SCORE_TORCH_THREADS"
    if env.cpu_limit_millicores:
        return max(1, math.ceil(env.cpu_limit_millicores / 1000)), "container CPU limit (downward API)"
    limit = cgroup_cpu_limit(cgroup)
    if limit:
        return max(1, math.ceil(limit)), f"cgroup quota ({cgroup})"
    return max(1, os.cpu_count() or 1), "os.cpu_count()"


def apply_torch_threads(env: ComputeEnv) -> int:
    """Set torch's intra-op threads from :func:`resolve_torch_threads`; returns the count (logged once)."""
    import torch

    threads, source = resolve_torch_threads(env)
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("torch threads", extra={"threads": threads, "source": source})
    return threads


def threads_per_predictor(env: ComputeEnv, predictors: int, *, cgroup: Path = CGROUP_CPU_MAX) -> int:
    """``audio-score up``: the CPU this machine gives us (as :func:`resolve_torch_threads` finds it, the explicit
    setting aside) divided evenly between ``predictors`` processes, at least one thread each."""
    total, _source = resolve_torch_threads(env.model_copy(update={"torch_threads": 0}), cgroup=cgroup)
    return max(1, total // max(1, predictors))
