"""What one ``POST /score`` carries through the router (:class:`ScoreCall`) and what it uses of the app
(:class:`Services`): the score path's steps in :mod:`router.app` take these two instead of a list of loose
arguments, so a step added later reads what it needs from the call and the refusal log and metrics see whatever
was settled before a step failed.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from audio_score.contract import DEADLINE_HEADER
from audio_score.settings import RouterSettings
from router.errors import APIError
from router.metrics import RouterMetrics
from router.predictor_client import PredictorClient
from router.readiness import ReadinessTracker


@dataclass(frozen=True)
class Services:
    """What the score path uses of the app (its settings, metrics, predictor client, readiness tracker and decode
    pool): one argument instead of five, so each step takes ``(services, call)``."""

    settings: RouterSettings
    metrics: RouterMetrics
    predictor: PredictorClient
    tracker: ReadinessTracker
    decode_pool: ThreadPoolExecutor


@dataclass
class ScoreCall:
    """One ``POST /score`` on its way through the router: what it asked, what has been settled so far, and when it
    began. The steps fill it in order (deadline, model, samples); the log lines and metrics read it at the end, so
    a refusal at any step is logged and counted with whatever was known by then."""

    uid: str
    cid: str
    #: The ``model`` form field as sent ('' and absent both mean the default model).
    asked_model: str | None
    #: ``time.perf_counter()`` when the route began: the caller's deadline counts from here.
    started: float
    #: The metric label: a configured key, or "default"/"unknown", never a caller's arbitrary text.
    label: str
    #: Seconds the caller will still wait (:data:`DEADLINE_HEADER`), None when it did not say.
    caller_wait_s: float | None = None
    #: The model key chosen (set by :func:`router.app.choose_model`).
    key: str | None = None
    #: The decoded upload: mono float32 at the target rate.
    samples: np.ndarray | None = field(default=None, repr=False)
    status: int = 500

    def predictor_budget_s(self, timeout_s: float) -> float:
        """How long the predictor call may take: ``timeout_s``, or less if the caller's deadline is nearer; 504
        when that deadline has already passed."""
        if self.caller_wait_s is None:
            return timeout_s
        budget = min(timeout_s, self.caller_wait_s - (time.perf_counter() - self.started))
        if budget <= 0:
            raise APIError(504, f"the caller's deadline ({DEADLINE_HEADER}) passed before scoring began")
        return budget

    def log_fields(self, **more: Any) -> dict[str, Any]:
        return {"model": self.key or self.label, "uid": self.uid, "cid": self.cid, **more}
