"""Dynamic batching inside the predictor: concurrent requests to one model become one backend call.

KServe's own batcher is an agent sidecar that only understands V1 ``:predict`` (see the project notes), so the
predictor batches itself, the way Triton's dynamic batcher does:

- ``submit(item)`` puts the request in a bounded queue and awaits its result. When ``max_queue_size`` requests are
  already waiting, it raises :class:`QueueFull` at once (the model answers 503) instead of letting memory grow.
- One collector task per model forms batches: it takes up to ``max_batch_size`` waiting requests, and while a
  batch is not full it waits until ``max_wait_s`` after the oldest request arrived. While the previous batch is
  still running it keeps filling the next one, so the next batch forms while one runs and starts the moment the
  worker is free.
- Batches run one at a time on ``executor`` (a single thread per device, shared by every model on that device
  and by on-demand reference builds), so the synchronous torch code never blocks the event loop and two batches
  never compete for one GPU.
- A request cancelled before its batch starts (client gone, timeout) is dropped from the batch; one cancelled
  while its batch runs simply has its result discarded. When a backend call raises, every request of the batch
  is retried alone, so one input that breaks the model fails only its own request.
- Deadlines: ``submit(item, deadline=t)`` (a ``time.perf_counter()`` instant: when the caller stops waiting).
  The batcher keeps an EWMA of its batch wall time. A request whose expected finish (the rest of the running
  batch + one batch time per batch ahead of it + its own) is already past its deadline is refused at once with
  :class:`DeadlineUnreachable` (503 + ``Retry-After``); a queued request that can no longer finish in time
  (``now + batch time > deadline``) is dropped before it reaches the model with :class:`DeadlineExpired`.
  Overload then costs fast 503s, never answers computed for callers that already gave up. Estimates carry a
  25 % headroom (``SAFETY``); before the first batch there is no estimate and only passed deadlines are refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from audio_score.errors import ModelUnavailable
from predictors import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


#: Headroom on the batch-time estimate: a batch may run this much slower than the EWMA and still finish in time.
SAFETY = 1.25
#: Weight of the newest batch in the EWMA of batch wall time.
EWMA_ALPHA = 0.3


class QueueFull(ModelUnavailable):
    """The batch queue is at ``max_queue_size``: the caller should retry later.

    ``retry_after_s``: when the queue is expected to have room again (for ``Retry-After``).
    """

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message, retry_after_s)
        self.retry_after_s: float = retry_after_s


class DeadlineUnreachable(QueueFull):
    """Refused at admission: the queue's expected wait already exceeds the caller's deadline."""


class DeadlineExpired(QueueFull):
    """Dropped from the queue: the request could no longer finish before its deadline."""


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[Any]
    deadline: float | None = None
    enqueued: float = field(default_factory=time.perf_counter)


class DynamicBatcher(Generic[T, R]):
    """Group concurrent ``submit`` calls into calls of ``fn(list_of_items) -> list_of_results``.

    ``fn`` runs on ``executor`` and must return one result per item, in order.
    """

    def __init__(
        self,
        fn: Callable[[list[T]], Sequence[R]],
        *,
        name: str,
        executor: Executor,
        max_batch_size: int = 8,
        max_wait_s: float = 0.010,
        max_queue_size: int = 64,
    ) -> None:
        if max_batch_size < 1 or max_queue_size < 1 or max_wait_s < 0:
            raise ValueError("max_batch_size and max_queue_size must be >= 1 and max_wait_s >= 0")
        self.fn = fn
        self.name = name
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_wait_s = max_wait_s
        self.max_queue_size = max_queue_size
        self._queue: deque[_Pending[T]] = deque()
        self._wakeup: asyncio.Event | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running_started = 0.0
        #: EWMA of a batch's wall time in seconds; None until the first batch has run.
        self.batch_seconds: float | None = None

    @property
    def depth(self) -> int:
        """Requests waiting (not counting the batch that is running)."""
        return len(self._queue)

    def _ensure_started(self) -> None:
        loop = asyncio.get_running_loop()
        if self._collector is None or self._collector.done() or self._loop is not loop:
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._collector = loop.create_task(self._collect(), name=f"batcher-{self.name}")

    def expected_finish_s(self, now: float | None = None) -> float | None:
        """Seconds until a request queued now would have its result: the rest of the running batch, one batch
        per full batch waiting ahead, and its own (each the EWMA with :data:`SAFETY` headroom). None before the
        first batch has run (nothing to estimate from)."""
        if self.batch_seconds is None:
            return None
        now = time.perf_counter() if now is None else now
        batch = self.batch_seconds * SAFETY
        running = 0.0 if self._runner_free() else max(0.0, batch - (now - self._running_started))
        return running + batch * math.ceil((len(self._queue) + 1) / self.max_batch_size)

    def _retry_after(self) -> float:
        return self.expected_finish_s() or 1.0

    async def submit(self, item: T, *, deadline: float | None = None) -> R:
        """Queue one request and wait for its result.

        ``deadline`` (``time.perf_counter()`` time) is when the caller stops waiting. Raises :class:`QueueFull`
        when the queue is full, :class:`DeadlineUnreachable` when the request cannot finish by ``deadline``, and
        :class:`DeadlineExpired` when it is dropped from the queue for that reason before it runs.
        """
        self._ensure_started()
        if len(self._queue) >= self.max_queue_size:
            metrics.REJECTED.labels(self.name).inc()
            raise QueueFull(
                f"model {self.name!r} is at capacity ({self.max_queue_size} requests queued); retry shortly",
                self._retry_after(),
            )
        if deadline is not None:
            now = time.perf_counter()
            expected = self.expected_finish_s(now)
            if now >= deadline or (expected is not None and now + expected > deadline):
                metrics.DEADLINE_REFUSED.labels(self.name).inc()
                wait = f"{expected:.2f} s" if expected is not None else "unknown"
                raise DeadlineUnreachable(
                    f"model {self.name!r} cannot answer within the caller's deadline "
                    f"({max(0.0, deadline - now):.2f} s left, expected wait {wait}); retry later",
                    expected or 1.0,
                )
        assert self._loop is not None and self._wakeup is not None
        pending: _Pending[T] = _Pending(item, self._loop.create_future(), deadline)
        self._queue.append(pending)
        metrics.QUEUE_DEPTH.labels(self.name).set(len(self._queue))
        self._wakeup.set()
        # Cancelling the caller cancels this future; the collector then skips the request.
        return await pending.future

    async def close(self) -> None:
        """Stop the collector; requests still queued fail with :class:`asyncio.CancelledError`."""
        for task in (self._collector, self._running):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        while self._queue:
            self._queue.popleft().future.cancel()

    def _drop_cancelled(self) -> None:
        if any(p.future.done() for p in self._queue):
            self._queue = deque(p for p in self._queue if not p.future.done())

    def _drop_hopeless(self, now: float) -> float | None:
        """Answer :class:`DeadlineExpired` to every queued request that could no longer finish in time even if
        its batch started now; returns the earliest instant another one becomes hopeless (None: none will)."""
        batch = (self.batch_seconds or 0.0) * SAFETY
        next_check: float | None = None
        dropped = False
        for p in self._queue:
            if p.deadline is None or p.future.done():
                continue
            if now + batch > p.deadline:
                metrics.DEADLINE_EXPIRED.labels(self.name).inc()
                _settle(
                    p.future,
                    exc=DeadlineExpired(
                        f"model {self.name!r} dropped the request before running it: it could not finish "
                        "within the caller's deadline; retry later",
                        self._retry_after(),
                    ),
                )
                dropped = True
            else:
                at = p.deadline - batch
                next_check = at if next_check is None else min(next_check, at)
        if dropped:
            self._drop_cancelled()
            metrics.QUEUE_DEPTH.labels(self.name).set(len(self._queue))
        return next_check

    def _runner_free(self) -> bool:
        return self._running is None or self._running.done()

    async def _collect(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            self._drop_cancelled()
            now = time.perf_counter()
            next_check = self._drop_hopeless(now)
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait_s
            size = len(self._queue)
            if self._runner_free() and (size >= self.max_batch_size or now >= deadline):
                batch = [self._queue.popleft() for _ in range(min(size, self.max_batch_size))]
                metrics.QUEUE_DEPTH.labels(self.name).set(len(self._queue))
                self._running_started = now
                self._running = asyncio.create_task(self._execute(batch))
                continue
            # Wait for whichever comes first: a new request, the running batch finishing, the deadline.
            wakeup.clear()
            waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(wakeup.wait())}
            if not self._runner_free():
                assert self._running is not None
                waiters.add(self._running)
            timeout = None if (now >= deadline or size >= self.max_batch_size) else deadline - now
            if next_check is not None:  # wake up to answer a request the moment it becomes hopeless
                timeout = max(0.0, next_check - now) if timeout is None else min(timeout, max(0.0, next_check - now))
            _done, pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            for waiter in pending:
                if waiter is not self._running:
                    waiter.cancel()

    async def _execute(self, batch: list[_Pending[T]]) -> None:
        batch = [p for p in batch if not p.future.done()]
        if not batch:
            return
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        for p in batch:
            metrics.QUEUE_WAIT.labels(self.name).observe(started - p.enqueued)
        metrics.BATCH_SIZE.labels(self.name).observe(len(batch))
        items = [p.item for p in batch]
        try:
            results = await loop.run_in_executor(self.executor, self._call, items)
        except Exception as exc:
            self._observe_batch(time.perf_counter() - started)
            metrics.BATCH_FAILURES.labels(self.name).inc()
            if len(batch) == 1:
                _settle(batch[0].future, exc=exc)
                return
            log.warning(
                "batch failed; retrying its requests one by one",
                extra={"model": self.name, "batch_size": len(batch), "error": f"{type(exc).__name__}: {exc}"},
            )
            for p in batch:
                if p.future.done():
                    continue
                try:
                    (result,) = await loop.run_in_executor(self.executor, self._call, [p.item])
                except Exception as single_exc:
                    _settle(p.future, exc=single_exc)
                else:
                    _settle(p.future, result=result)
            return
        finished = time.perf_counter()
        self._observe_batch(finished - started)
        for p, result in zip(batch, results, strict=True):
            if p.deadline is not None and finished > p.deadline:
                metrics.COMPUTED_LATE.labels(self.name).inc()
            _settle(p.future, result=result)

    def _observe_batch(self, seconds: float) -> None:
        previous = self.batch_seconds
        self.batch_seconds = seconds if previous is None else EWMA_ALPHA * seconds + (1 - EWMA_ALPHA) * previous
        metrics.BATCH_SECONDS_EWMA.labels(self.name).set(self.batch_seconds)

    def _call(self, items: list[T]) -> Sequence[R]:
        started = time.perf_counter()
        try:
            results = self.fn(items)
        finally:
            metrics.BACKEND_SECONDS.labels(self.name).observe(time.perf_counter() - started)
        if len(results) != len(items):
            raise RuntimeError(f"backend returned {len(results)} results for {len(items)} inputs")
        return results


def _settle(future: asyncio.Future[Any], *, result: Any = None, exc: BaseException | None = None) -> None:
    """Set a result unless the caller already gave up (cancelled)."""
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)
