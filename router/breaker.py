"""A circuit breaker per model: once a predictor is known to be down, its requests fail fast.

Without it, a frozen predictor (it accepts connections and never answers) costs every request for its model the
whole predictor timeout before the 504. The breaker opens on the first timeout or connection failure (of an
inference or of a readiness check); while it is open, requests for that model get 503 with ``Retry-After`` at
once, without touching the network. The readiness poller keeps probing the model's ``/v2/models/{key}/ready`` in
the background and closes the breaker as soon as it answers 200. Each model has its own breaker, so one broken
predictor costs only its own share.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass
class Breaker:
    """Closed (requests flow) or open since ``opened_at`` because of ``reason``."""

    key: str
    retry_after_s: int = 2
    open: bool = False
    reason: str = ""
    opened_at: float = 0.0
    #: How many times it opened since the router started (shown in /models and the logs).
    trips: int = 0

    def trip(self, reason: str) -> None:
        if not self.open:
            self.trips += 1
            self.opened_at = time.time()
            log.warning("circuit opened", extra={"model": self.key, "reason": reason, "trips": self.trips})
        self.open, self.reason = True, reason

    def close(self) -> None:
        if self.open:
            log.info(
                "circuit closed",
                extra={"model": self.key, "open_s": round(time.time() - self.opened_at, 2), "trips": self.trips},
            )
        self.open, self.reason = False, ""

    def refusal(self) -> str:
        """The 503 detail while open."""
        return (
            f"model {self.key!r} is not ready: {self.reason} (failing fast while its predictor is down; it is "
            f"probed in the background, retry in {self.retry_after_s} s)"
        )


class Breakers:
    """One :class:`Breaker` per configured model; ``retry_after_s`` follows the readiness poll interval."""

    def __init__(self, keys: list[str], poll_interval_s: float) -> None:
        retry = max(1, math.ceil(poll_interval_s))
        self.retry_after_s = retry
        self._by_key = {key: Breaker(key, retry_after_s=retry) for key in keys}

    def __getitem__(self, key: str) -> Breaker:
        return self._by_key.setdefault(key, Breaker(key, retry_after_s=self.retry_after_s))

    def is_open(self, key: str) -> bool:
        breaker = self._by_key.get(key)
        return bool(breaker and breaker.open)
