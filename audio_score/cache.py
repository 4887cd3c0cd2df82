"""The reference cache (the store): one folder per model/video/clip, written whole or not at all.

Layout: ``<cache_dir>/<model key>/<uid>/<cid>/`` holding ``meta.json`` (which also records the language the clip
was heard in and the decoding guard's ``no_speech``/``looped`` flags), ``transcript.txt``, ``embedding.npy``
(float32, pooled), ``frames.npy`` (float16, the frames that hold audio) and, when the clip comes with the words
actually spoken, ``reference.txt``. An entry is written under a temporary name in the same folder and renamed
into place, so a crash never leaves half an entry and readers never see one.

This module is only the store: entries, their freshness and their atomic install. What an entry is built from
(clips, their ids and their reference text) is :mod:`audio_score.clips`; who wrote a temporary folder and
whether it still runs is :mod:`audio_score.writers` (a crashed writer's leftovers go at once, a live concurrent
writer's are kept: two shard processes share a cache).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio_score.clips import ClipRef, find_reference_text, read_reference_text, same_file, source_info
from audio_score.contract import validate_id
from audio_score.writers import temp_prefix, writer_alive

log = logging.getLogger(__name__)

#: Bump when the way features are computed or stored changes: every entry then becomes stale.
CACHE_FORMAT_VERSION = 3  # 2: reference text (reference.txt, source["text"]); 3: language, no_speech, looped
META = "meta.json"
TRANSCRIPT = "transcript.txt"
EMBEDDING = "embedding.npy"
FRAMES = "frames.npy"
REFERENCE_TEXT = "reference.txt"
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"


@dataclass(frozen=True)
class CacheEntry:
    """A cached reference: what the predictor compares an upload with."""

    meta: dict[str, Any]
    transcript: str
    embedding: np.ndarray
    frames: np.ndarray
    #: The words actually spoken in the clip (from its text file), or None: then the transcript stands in.
    reference_text: str | None = None

    @property
    def language(self) -> str | None:
        """The language the clip was heard in (detected once when the entry was built, or the model's
        ``language``); every upload scored against it is decoded in this language. None: the checkpoint does
        not say (legacy) or the entry predates format 3."""
        value = self.meta.get("language")
        return value if isinstance(value, str) and value else None

    @property
    def no_speech(self) -> bool:
        """The decoding guard heard no speech in the clip (its transcript is then empty)."""
        return bool(self.meta.get("no_speech", False))

    @property
    def looped(self) -> bool:
        """The clip's own transcript looped and was cut (logged by the Job: a reference worth checking)."""
        return bool(self.meta.get("looped", False))

    @property
    def nbytes(self) -> int:
        text = len(self.transcript.encode()) + len((self.reference_text or "").encode())
        return int(self.embedding.nbytes + self.frames.nbytes + text)

    @property
    def text(self) -> str:
        """What the upload's words are compared with: the reference text when there is one, else the transcript."""
        return self.reference_text if self.reference_text is not None else self.transcript


class ReferenceCache:
    """The entries of one model under ``<cache_dir>/<model key>/``."""

    def __init__(self, cache_dir: Path, model_key: str) -> None:
        self.root = Path(cache_dir) / validate_id(model_key, "model key")

    def entry_dir(self, uid: str, cid: str) -> Path:
        return self.root / validate_id(uid, "uid") / validate_id(cid, "cid")

    def read_meta(self, uid: str, cid: str) -> dict[str, Any] | None:
        """The entry's meta.json, or None when there is no (readable) entry."""
        try:
            return json.loads((self.entry_dir(uid, cid) / META).read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except (OSError, ValueError) as exc:
            log.warning("unreadable cache entry", extra={"entry": f"{uid}/{cid}", "error": str(exc)})
            return None

    def read(self, uid: str, cid: str, *, with_frames: bool = True) -> CacheEntry | None:
        """The entry, or None when it is missing or unreadable (then it is rebuilt, never trusted).

        ``with_frames=False`` skips the frame-level features (the largest file), which scoring does not read:
        ``frames`` is then an empty ``[0, D]`` array.
        """
        folder = self.entry_dir(uid, cid)
        meta = self.read_meta(uid, cid)
        if meta is None:
            return None
        try:
            transcript = (folder / TRANSCRIPT).read_text(encoding="utf-8")
            reference_text = (folder / REFERENCE_TEXT).read_text(encoding="utf-8") if meta.get("has_text") else None
            embedding = np.load(folder / EMBEDDING, allow_pickle=False)
            if with_frames:
                frames = np.load(folder / FRAMES, allow_pickle=False)
            else:
                frames = np.zeros((0, int(embedding.shape[-1])), dtype=np.float16)
        except (OSError, ValueError) as exc:
            log.warning("unreadable cache entry", extra={"entry": f"{uid}/{cid}", "error": str(exc)})
            return None
        return CacheEntry(
            meta=meta, transcript=transcript, embedding=embedding, frames=frames, reference_text=reference_text
        )

    def is_fresh(self, meta: dict[str, Any] | None, fingerprint: dict[str, Any], clip: ClipRef | None) -> bool:
        """An entry is fresh when its model fingerprint matches and neither its source clip nor the clip's
        reference text has changed (a text file added, removed or edited makes it stale).

        Size and mtime equal: unchanged without hashing. Size equal but mtime moved (a copy, a touch): hash and
        compare, so a touched but identical clip is not rebuilt.
        """
        if not meta or meta.get("format_version") != CACHE_FORMAT_VERSION:
            return False
        if meta.get("fingerprint") != fingerprint:
            return False
        if clip is None:
            return True
        source = meta.get("source") or {}
        if not same_file(clip.path, source):
            return False
        recorded_text = source.get("text")
        text_path = find_reference_text(clip)
        if text_path is None or recorded_text is None:
            return text_path is None and recorded_text is None
        # The file name, not the full path: the Job and the predictors may mount the clip folder at different
        # paths; a .txt replacing an .srt (or the reverse) still counts as a change.
        recorded_name = Path(str(recorded_text.get("path", ""))).name
        return text_path.name == recorded_name and same_file(text_path, recorded_text)

    def write(
        self,
        clip: ClipRef,
        *,
        transcript: str,
        embedding: np.ndarray,
        frames: np.ndarray,
        fingerprint: dict[str, Any],
        sampling_rate: int,
        duration_s: float,
        source: dict[str, Any] | None = None,
        reference_text: str | None = None,
        language: str | None = None,
        no_speech: bool = False,
        looped: bool = False,
    ) -> CacheEntry:
        """Write an entry atomically, replacing a stale one.

        The files go to a temporary folder beside the final one (same filesystem), are fsynced, then the folder
        is renamed into place. ``source`` (:func:`~audio_score.clips.source_info` plus ``"text"``, the text
        file's identity from :func:`~audio_score.clips.read_reference_text`) names the clip and text as they
        were read; without it both are read now. Replacing an existing entry renames the old one aside first; a
        reader in that instant sees no entry and takes the missing-entry path, never a half-written one.
        """
        final = self.entry_dir(clip.uid, clip.cid)
        final.parent.mkdir(parents=True, exist_ok=True)
        if source is None:
            text, text_info = read_reference_text(clip)
            source = {**source_info(clip.path), "text": text_info}
            reference_text = text if reference_text is None else reference_text
        meta = {
            "format_version": CACHE_FORMAT_VERSION,
            "model_key": self.root.name,
            "uid": clip.uid,
            "cid": clip.cid,
            "fingerprint": fingerprint,
            "source": source,
            "has_text": reference_text is not None,
            "sampling_rate": sampling_rate,
            "duration_s": duration_s,
            "embedding_dim": int(np.asarray(embedding).shape[-1]),
            "frames": int(np.asarray(frames).shape[0]),
            "language": language,
            "no_speech": no_speech,
            "looped": looped,
            "created_at": time.time(),
        }
        entry = CacheEntry(
            meta=meta,
            transcript=transcript,
            embedding=np.asarray(embedding, dtype=np.float32),
            frames=np.asarray(frames, dtype=np.float16),
            reference_text=reference_text,
        )
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(_TMP_PREFIX, clip.cid), dir=final.parent))
        try:
            _write_file(tmp / TRANSCRIPT, transcript.encode("utf-8"))
            _save_npy(tmp / EMBEDDING, entry.embedding)
            _save_npy(tmp / FRAMES, entry.frames)
            if reference_text is not None:
                _write_file(tmp / REFERENCE_TEXT, reference_text.encode("utf-8"))
            # meta.json last: its presence is what marks an entry as complete.
            _write_file(tmp / META, json.dumps(meta, indent=1, sort_keys=True).encode("utf-8"))
            _install(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        _fsync_dir(final.parent)
        return entry

    def entries(self) -> Iterator[tuple[str, str]]:
        """(uid, cid) of every complete entry; temporary and half-deleted folders are not entries."""
        if not self.root.is_dir():
            return
        for uid_dir in sorted(self.root.iterdir()):
            if not uid_dir.is_dir() or uid_dir.name.startswith("."):
                continue
            for cid_dir in sorted(uid_dir.iterdir()):
                if not cid_dir.name.startswith(".") and (cid_dir / META).is_file():
                    yield uid_dir.name, cid_dir.name

    def sweep_temporaries(self, older_than_s: float = 3600.0) -> int:
        """Delete leftovers of writers that crashed (``.tmp-*``/``.old-*``).

        A leftover whose writer ran on this host (same boot) is removed as soon as that writer is gone, and kept
        while it lives (two shard processes may share the cache). One written elsewhere (a shared volume) or
        without writer fields (an older version) cannot be checked, so it is removed only once it is older than
        ``older_than_s``.
        """
        removed = 0
        if not self.root.is_dir():
            return 0
        cutoff = time.time() - older_than_s
        for uid_dir in self.root.iterdir():
            if not uid_dir.is_dir():
                continue
            for leftover in uid_dir.iterdir():
                if not leftover.name.startswith((_TMP_PREFIX, _OLD_PREFIX)):
                    continue
                alive = writer_alive(leftover.name)
                with contextlib.suppress(OSError):
                    if alive is False or (alive is None and leftover.stat().st_mtime < cutoff):
                        shutil.rmtree(leftover, ignore_errors=True)
                        removed += 1
                        log.info(
                            "removed a crashed writer's temporary folder",
                            extra={"path": str(leftover), "writer_checked": alive is not None},
                        )
        return removed


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished folder into place; if an entry exists, move it aside first, then drop it."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    trash = final.parent / f"{temp_prefix(_OLD_PREFIX, final.name)}{time.monotonic_ns()}"
    with contextlib.suppress(FileNotFoundError):  # another writer moved it away first
        os.rename(final, trash)
    try:
        os.rename(tmp, final)
    except OSError:
        # Another writer installed its own copy in between: both were computed from the same clip, keep theirs.
        if not final.exists():
            raise
    if trash.exists():
        shutil.rmtree(trash, ignore_errors=True)


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, array, allow_pickle=False)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
