"""Prometheus metrics of the predictor, beside KServe's own.

KServe 0.21 serves ``GET /metrics`` from ``prometheus_client``'s default ``REGISTRY``
(``kserve/protocol/rest/server.py``: ``metrics_handler``), and registers its own request histograms there
(``request_predict_seconds`` and friends, labelled by model name). These are registered on the same default
registry at import, so they appear on that endpoint with no extra server. Every series is labelled by ``model``
(the config key).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

_PREFIX = "audio_score_predictor"

BATCH_SIZE = Histogram(
    f"{_PREFIX}_batch_size",
    "Requests per backend call (one dynamic batch).",
    ["model"],
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64),
)
QUEUE_WAIT = Histogram(
    f"{_PREFIX}_queue_wait_seconds",
    "Time a request waited in the batch queue before its batch started on the backend.",
    ["model"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BACKEND_SECONDS = Histogram(
    f"{_PREFIX}_backend_seconds",
    "Wall time of one backend call (one batch) on the model's worker thread.",
    ["model"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
QUEUE_DEPTH = Gauge(f"{_PREFIX}_queue_depth", "Requests waiting for a batch (not yet running).", ["model"])
REJECTED = Counter(
    f"{_PREFIX}_rejected_total", "Requests refused with 503 because the batch queue was full.", ["model"]
)
DEADLINE_REFUSED = Counter(
    f"{_PREFIX}_deadline_refused_total",
    "Requests refused with 503 at once: the queue's expected wait already exceeded the caller's deadline.",
    ["model"],
)
DEADLINE_EXPIRED = Counter(
    f"{_PREFIX}_deadline_expired_total",
    "Queued requests dropped with 503 before reaching the model: they could no longer finish by their deadline.",
    ["model"],
)
COMPUTED_LATE = Counter(
    f"{_PREFIX}_computed_late_total",
    "Requests whose result was computed after their caller's deadline (the answer reached nobody); 0 is the goal.",
    ["model"],
)
BATCH_SECONDS_EWMA = Gauge(
    f"{_PREFIX}_batch_seconds_ewma", "EWMA of a batch's wall time: the unit of the queue's expected wait.", ["model"]
)
BATCH_FAILURES = Counter(
    f"{_PREFIX}_batch_failures_total",
    "Backend calls that raised; the batch's requests were then retried one by one.",
    ["model"],
)
REFERENCE_LOOKUPS = Counter(
    f"{_PREFIX}_reference_lookups_total",
    "Reference lookups by outcome: hit (memory), disk (read from the cache folder), built (computed on demand), "
    "missing (404).",
    ["model", "outcome"],
)
REFERENCE_ENTRIES = Gauge(f"{_PREFIX}_reference_cache_entries", "Reference entries held in memory.", ["model"])
REFERENCE_BYTES = Gauge(f"{_PREFIX}_reference_cache_bytes", "Bytes of reference entries held in memory.", ["model"])
