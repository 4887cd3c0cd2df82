"""Which models are ready: a background poll of each predictor's V2 readiness, read by /models and /score.

Each model is polled by its own task, so a frozen predictor whose readiness check waits for its timeout delays
only its own model's updates. The same poll is the circuit breaker's probe: its 200 closes the breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass

from router.predictor_client import PredictorClient

log = logging.getLogger(__name__)


@dataclass
class ModelState:
    ready: bool = False
    reason: str = "not checked yet"


class ReadinessTracker:
    """Polls every configured model every ``interval_s``; a request may force a fresh check of one model."""

    def __init__(self, client: PredictorClient, keys: list[str], interval_s: float = 2.0) -> None:
        self.client = client
        self.keys = keys
        self.interval_s = interval_s
        self._states = {key: ModelState() for key in keys}
        self._tasks: list[asyncio.Task[None]] = []

    async def check(self, key: str) -> ModelState:
        ready, reason = await self.client.ready(key)
        state = self._states[key]
        if state.ready != ready:
            log.info("model readiness changed", extra={"model": key, "ready": ready, "reason": reason})
        state.ready, state.reason = ready, reason
        return state

    def mark_unready(self, key: str, reason: str) -> None:
        """A call just failed with 503: stop choosing this model as the default until the next poll says ready."""
        state = self._states[key]
        if state.ready:
            log.info("model marked not ready", extra={"model": key, "reason": reason})
        state.ready, state.reason = False, reason

    async def check_all(self, *, skip_open: bool = False) -> None:
        """Check every model now; ``skip_open`` leaves out models whose breaker is open (their check would wait
        for a frozen predictor; the background poll is already probing them)."""
        breakers = self.client.breakers
        keys = [k for k in self.keys if not (skip_open and breakers.is_open(k))]
        await asyncio.gather(*(self.check(key) for key in keys))

    async def _loop(self, key: str) -> None:
        while True:
            with contextlib.suppress(Exception):
                await self.check(key)
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._loop(key), name=f"readiness-{key}") for key in self.keys]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def knows(self, key: str | None) -> bool:
        """Whether ``key`` is a configured model."""
        return key in self._states

    def label(self, asked: str | None) -> str:
        """The metric label for a request that asked for ``asked``: the key when it is configured, else "unknown"
        (or "default" when it asked for none), so a caller's arbitrary text never creates a series."""
        if self.knows(asked):
            return str(asked)
        return "unknown" if asked else "default"

    async def ensure_checked(self, key: str) -> tuple[bool, str]:
        """(ready, reason) of ``key``, checked now if the last poll said not ready (it may be a moment behind)."""
        state = self._states[key]
        if not state.ready:
            state = await self.check(key)
        return state.ready, state.reason

    def snapshot(self) -> list[tuple[str, ModelState]]:
        """(key, a copy of its state) for every model, in configured order."""
        return [(k, ModelState(s.ready, s.reason)) for k, s in self._states.items()]

    def reasons(self) -> str:
        """``key: reason; ...`` for every model: the detail of a 'no model is ready' answer."""
        return "; ".join(f"{k}: {s.reason}" for k, s in self._states.items())

    def ready_keys(self) -> list[str]:
        return [k for k in self.keys if self._states[k].ready]

    def default_model(self) -> str | None:
        """The first configured model that is ready."""
        ready = self.ready_keys()
        return ready[0] if ready else None
