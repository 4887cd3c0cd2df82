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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from predictors import metrics

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class QueueFull(Exception):
    """The batch queue is at ``max_queue_size``: the caller should retry later (HTTP 503)."""


@dataclass
class _Pending(Generic[T]):
    item: T
    future: asyncio.Future[Any]
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
        self.batches_run = 0

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

    async def submit(self, item: T) -> R:
        """Queue one request and wait for its result; :class:`QueueFull` when the queue is full."""
        self._ensure_started()
        if len(self._queue) >= self.max_queue_size:
            metrics.REJECTED.labels(self.name).inc()
            raise QueueFull(
                f"model {self.name!r} is at capacity ({self.max_queue_size} requests queued); retry shortly"
            )
        assert self._loop is not None and self._wakeup is not None
        pending: _Pending[T] = _Pending(item, self._loop.create_future())
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

    def _runner_free(self) -> bool:
        return self._running is None or self._running.done()

    async def _collect(self) -> None:
        assert self._wakeup is not None
        wakeup = self._wakeup
        while True:
            self._drop_cancelled()
            if not self._queue:
                wakeup.clear()
                await wakeup.wait()
                continue
            deadline = self._queue[0].enqueued + self.max_wait_s
            size = len(self._queue)
            now = time.perf_counter()
            if self._runner_free() and (size >= self.max_batch_size or now >= deadline):
                batch = [self._queue.popleft() for _ in range(min(size, self.max_batch_size))]
                metrics.QUEUE_DEPTH.labels(self.name).set(len(self._queue))
                self._running = asyncio.create_task(self._execute(batch))
                continue
            # Wait for whichever comes first: a new request, the running batch finishing, the deadline.
            wakeup.clear()
            waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(wakeup.wait())}
            if not self._runner_free():
                assert self._running is not None
                waiters.add(self._running)
            timeout = None if (now >= deadline or size >= self.max_batch_size) else deadline - now
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
        self.batches_run += 1
        items = [p.item for p in batch]
        try:
            results = await loop.run_in_executor(self.executor, self._call, items)
        except Exception as exc:
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
        for p, result in zip(batch, results, strict=True):
            _settle(p.future, result=result)

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
