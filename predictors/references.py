"""The predictor's view of the reference cache: an in-memory LRU bounded in bytes over the cache folder.

Nothing is read at start-up (the cache may hold 100,000 entries on a PVC): an entry is read the first time a
request names it and kept while it fits in ``AUDIO_SCORE_CACHE_MEMORY_MB``, least recently used first out.
Every lookup finds the clip (two globs, no folder walk) and checks freshness with the same rule as the Job
(:meth:`ReferenceCache.is_fresh`: model fingerprint, then the clip's size and mtime, hashing only when the mtime
moved). A missing or stale entry whose clip exists is decoded with the Job's decoder and computed with the Job's
code path (:func:`audio_score.entries.compute_entries`) on the model's worker thread, written atomically, then
used. Concurrent requests for the same missing entry share one build. An entry whose clip is gone but whose
fingerprint matches is still served (the clip folder need not stay mounted); no entry and no clip is a 404.

Memory: what scoring needs is kept: meta, transcript, reference text, pooled embedding, and the frame-level
features already prepared for time alignment (:func:`audio_score.alignment.prepare_frames`: pooled to ~40 ms,
centred, unit length, float32: as many bytes as Whisper's float16 frames on disk, twice Higgs's, whose 40 ms frames
are not pooled further). The LRU counts all of them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

import numpy as np

from audio_score.alignment import PreparedFrames, pool_for, prepare_frames
from audio_score.cache import CacheEntry, ReferenceCache
from audio_score.clips import ClipRef, find_clip
from audio_score.contract import validate_id
from audio_score.entries import compute_entries, decode_clip, entry_fingerprint
from audio_score.errors import ReferenceUnavailable, UnknownClip
from audio_score.settings import PredictorSettings
from predictors import metrics

if TYPE_CHECKING:
    from audio_score.backends import Backend

log = logging.getLogger(__name__)

V = TypeVar("V")


class _Sized(Protocol):
    @property
    def nbytes(self) -> int: ...


S = TypeVar("S", bound=_Sized)
#: Runs a synchronous function on the model's worker thread and awaits it.
RunOnModelThread = Callable[[Callable[[], V]], Awaitable[V]]


@dataclasses.dataclass(frozen=True)
class Cached:
    """An entry in memory (without its raw frames), its frames prepared for alignment, and the clip it was
    checked against (None: served without its clip)."""

    entry: CacheEntry
    frames: PreparedFrames
    clip: ClipRef | None

    @property
    def nbytes(self) -> int:
        return self.entry.nbytes + self.frames.nbytes

    def with_clip(self, clip: ClipRef | None) -> Cached:
        return dataclasses.replace(self, clip=clip)

    @classmethod
    def of(cls, entry: CacheEntry, clip: ClipRef | None, pool: int) -> Cached:
        """Prepare the entry's frames for alignment and drop the raw ones (CPU work: call it off the loop)."""
        return cls(_slim(entry), prepare_frames(entry.frames, pool), clip)


class LRUBytes(Generic[S]):
    """A thread-safe LRU mapping whose values report their size in ``nbytes``; bounded by total bytes."""

    def __init__(self, max_bytes: int, model: str) -> None:
        self.max_bytes = max_bytes
        self.model = model
        self._data: OrderedDict[tuple[str, str], S] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._report()

    def __len__(self) -> int:
        return len(self._data)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[str, str]) -> S | None:
        with self._lock:
            entry = self._data.get(key)
            if entry is not None:
                self._data.move_to_end(key)
            return entry

    def put(self, key: tuple[str, str], entry: S) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            if entry.nbytes <= self.max_bytes:
                self._data[key] = entry
                self._bytes += entry.nbytes
                while self._bytes > self.max_bytes and self._data:
                    _, evicted = self._data.popitem(last=False)
                    self._bytes -= evicted.nbytes
            self._report()

    def discard(self, key: tuple[str, str]) -> None:
        with self._lock:
            old = self._data.pop(key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._report()

    def _report(self) -> None:
        metrics.REFERENCE_ENTRIES.labels(self.model).set(len(self._data))
        metrics.REFERENCE_BYTES.labels(self.model).set(self._bytes)


def _slim(entry: CacheEntry) -> CacheEntry:
    """The entry without its raw frames (kept prepared in :class:`Cached` instead)."""
    frames = np.zeros((0, int(np.asarray(entry.embedding).shape[-1])), dtype=np.float16)
    return dataclasses.replace(entry, frames=frames)


class ReferenceStore:
    """Reference entries of one model: memory, then disk, then an on-demand build; else :class:`UnknownClip`."""

    def __init__(
        self, settings: PredictorSettings, backend: Backend, run_on_model_thread: RunOnModelThread[Any]
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.key = backend.key
        self.cache = ReferenceCache(settings.config.cache_dir, backend.key)
        self.fingerprint = entry_fingerprint(backend, settings)
        #: Frames averaged before alignment; uploads must be prepared with the same (:attr:`pool`).
        self.pool = pool_for(backend.frame_ms)
        self.memory: LRUBytes[Cached] = LRUBytes(settings.env.cache_memory_bytes, backend.key)
        self._run_on_model_thread = run_on_model_thread
        self._builds: dict[tuple[str, str], asyncio.Future[Cached]] = {}
        self.built = 0

    async def get(self, uid: str, cid: str) -> Cached:
        """The fresh entry for uid/cid with its prepared frames.

        Raises InvalidIdentifier (bad id), UnknownClip, ReferenceUnavailable."""
        validate_id(uid, "uid")
        validate_id(cid, "cid")
        key = (uid, cid)
        cached = self.memory.get(key)
        # The clip found last time is stat-ed directly: a flat clip folder of 100,000 files is not globbed on
        # every request. A clip that moved or vanished takes the full lookup below.
        if (
            cached is not None
            and cached.clip is not None
            and await asyncio.to_thread(self.cache.is_fresh, cached.entry.meta, self.fingerprint, cached.clip)
        ):
            metrics.REFERENCE_LOOKUPS.labels(self.key, "hit").inc()
            return cached
        clip = await asyncio.to_thread(find_clip, self.settings.config.video_clip_dir, uid, cid)
        if cached is not None:
            if clip is None or await asyncio.to_thread(self.cache.is_fresh, cached.entry.meta, self.fingerprint, clip):
                metrics.REFERENCE_LOOKUPS.labels(self.key, "hit").inc()
                cached = cached.with_clip(clip)
                self.memory.put(key, cached)
                return cached
            self.memory.discard(key)
        loaded = await asyncio.to_thread(self._read_fresh, uid, cid, clip)
        if loaded is not None:
            metrics.REFERENCE_LOOKUPS.labels(self.key, "disk").inc()
            self.memory.put(key, loaded)
            return loaded
        if clip is None:
            metrics.REFERENCE_LOOKUPS.labels(self.key, "missing").inc()
            raise UnknownClip(uid, cid)
        return await self._build_once(key, clip)

    def _read_fresh(self, uid: str, cid: str, clip: ClipRef | None) -> Cached | None:
        meta = self.cache.read_meta(uid, cid)
        if not self.cache.is_fresh(meta, self.fingerprint, clip):
            return None
        entry = self.cache.read(uid, cid)
        return None if entry is None else Cached.of(entry, clip, self.pool)

    async def _build_once(self, key: tuple[str, str], clip: ClipRef) -> Cached:
        running = self._builds.get(key)
        if running is not None:
            return await asyncio.shield(running)
        future: asyncio.Future[Cached] = asyncio.get_running_loop().create_future()
        self._builds[key] = future
        try:
            entry = await self._build(clip)
        except BaseException as exc:
            if not future.done():
                future.set_exception(exc)
                future.exception()  # mark retrieved: waiters (if any) re-raise it
            raise
        else:
            future.set_result(entry)
            return entry
        finally:
            self._builds.pop(key, None)

    async def _build(self, clip: ClipRef) -> Cached:
        # Decoding is CPU work with no model: a plain thread, not the model's worker.
        decoded = await asyncio.to_thread(decode_clip, clip, self.settings)
        if decoded.error:
            raise ReferenceUnavailable(f"reference clip {clip.name} ({clip.path.name}) cannot be used: {decoded.error}")
        log.info("building missing reference entry", extra={"model": self.key, "clip": clip.name})
        entries = await self._run_on_model_thread(
            lambda: compute_entries(self.backend, self.cache, [decoded], self.settings)
        )
        self.built += 1
        metrics.REFERENCE_LOOKUPS.labels(self.key, "built").inc()
        if not entries:
            raise ReferenceUnavailable(f"reference clip {clip.name} ({clip.path.name}) gave no entry")
        built = await asyncio.to_thread(Cached.of, entries[0], clip, self.pool)
        self.memory.put((clip.uid, clip.cid), built)
        return built
