"""What the try page needs from the reference store: a paged listing of a model's cache, one entry's texts, and
the reference clip's audio as WAV a browser plays.

The listing must stay cheap when a model's cache holds 100,000 entries, so no request walks the cache. The
sorted names of a folder (the uid folders under ``<cache_dir>/<model>/``, the cid folders under each uid) are kept
in memory and re-read only when the folder's mtime changes: adding or removing an entry renames a folder in its
uid folder (and a new uid adds one to the model folder), which moves that folder's mtime. A request then costs a
``stat`` of the folders it touches, a binary search for the uid prefix and the cursor, and one ``stat`` of
``meta.json`` per entry it returns. As in git's "racy clean" check, a listing read in the same second the folder
changed is not trusted, so an entry written just after a read is never missed. On NFS a new entry appears once
the client's attribute cache expires (``actimeo``, up to a minute by default).

The audio is decoded with the project's one decoder (:func:`audio_score.audio.decode_audio`, PyAV), resampled
to :data:`PLAY_RATE` and written as 16-bit PCM WAV with the standard library's :mod:`wave`: every browser plays
it, where a clip's own codec (AAC in QuickTime) is missing from builds without proprietary codecs (Debian's
Chromium). Its length is bounded by :data:`MAX_REFERENCE_SECONDS`.
"""

from __future__ import annotations

import bisect
import io
import os
import re
import threading
import time
import wave
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio_score.audio import decode_audio
from audio_score.cache import META, REFERENCE_TEXT, TRANSCRIPT, ReferenceCache
from audio_score.clips import find_clip
from audio_score.contract import ID_PATTERN, validate_id
from audio_score.errors import AudioTooLarge, InvalidIdentifier, ScoreError, quote_user_value

#: Sampling rate of the WAV the page plays: above the models' 16 kHz so that a listener hears the clip clearly.
PLAY_RATE = 24_000
#: The longest reference the page plays (a line of a lesson is seconds long): at most ~5.8 MB of WAV.
MAX_REFERENCE_SECONDS = 120.0
#: Entries per listing page: the default and the most a caller may ask for.
DEFAULT_PAGE = 50
MAX_PAGE = 500
#: Folders whose sorted names are kept (the model folders and the uid folders listed most recently).
MAX_CACHED_FOLDERS = 4096
#: A folder changed within this many seconds before it was read may change again unseen in the same mtime tick.
RACY_S = 1.0
_PREFIX_CHARS = ID_PATTERN.pattern.replace("{1,128}", "{0,128}")


class CacheUnreadable(ScoreError):
    """The router cannot see the reference cache folder (in the cluster: not mounted into the router)."""


@dataclass(frozen=True)
class _Names:
    mtime_ns: int
    trusted: bool
    names: list[str]


class FolderNames:
    """Sorted child folder names (those not starting with '.'), re-read only when the folder's mtime changes."""

    def __init__(self, max_folders: int = MAX_CACHED_FOLDERS) -> None:
        self._cache: OrderedDict[Path, _Names] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_folders

    def __call__(self, folder: Path) -> list[str]:
        """The names, or [] when the folder does not exist."""
        try:
            mtime_ns = folder.stat().st_mtime_ns
        except (FileNotFoundError, NotADirectoryError):
            return []
        with self._lock:
            cached = self._cache.get(folder)
            if cached is not None and cached.trusted and cached.mtime_ns == mtime_ns:
                self._cache.move_to_end(folder)
                return cached.names
        read_at_ns = time.time_ns()
        try:
            with os.scandir(folder) as it:
                names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_dir())
        except (FileNotFoundError, NotADirectoryError):
            return []
        trusted = read_at_ns - mtime_ns > RACY_S * 1e9
        with self._lock:
            self._cache[folder] = _Names(mtime_ns, trusted, names)
            self._cache.move_to_end(folder)
            while len(self._cache) > self._max:
                self._cache.popitem(last=False)
        return names


def parse_cursor(cursor: str | None) -> tuple[str, str] | None:
    """``uid/cid`` of the last entry a page returned; both parts are validated ids."""
    if not cursor:
        return None
    uid, sep, cid = cursor.partition("/")
    if not sep:
        raise InvalidIdentifier(f"invalid cursor {quote_user_value(cursor)}: pass the 'next' of the previous page")
    return validate_id(uid, "cursor uid"), validate_id(cid, "cursor cid")


def check_prefix(prefix: str) -> str:
    """A uid prefix: the id characters only (it never reaches a path, but a bad one is told, not ignored)."""
    if not re.fullmatch(_PREFIX_CHARS, prefix):
        raise InvalidIdentifier(
            f"invalid uid prefix {quote_user_value(prefix)}: use up to 128 letters, digits, '.', '_' or '-'"
        )
    return prefix


class ClipListing:
    """Pages of ``(uid, cid)`` of one model's complete cache entries, in uid/cid order."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.names = FolderNames()

    def page(
        self, model: str, *, prefix: str = "", after: tuple[str, str] | None = None, limit: int = DEFAULT_PAGE
    ) -> tuple[list[tuple[str, str]], str | None]:
        """Up to ``limit`` entries whose uid starts with ``prefix``, after the cursor; and the next cursor (None
        on the last page)."""
        if not self.cache_dir.is_dir():
            raise CacheUnreadable(
                f"the router cannot read the reference cache folder {self.cache_dir} (config.json's cache_dir); "
                "in the cluster, mount it into the router (chart value router.tryPage.mountStorage)"
            )
        root = ReferenceCache(self.cache_dir, model).root
        uids = self.names(root)
        start_uid = prefix if after is None or after[0] < prefix else after[0]
        found: list[tuple[str, str]] = []
        for index in range(bisect.bisect_left(uids, start_uid), len(uids)):
            uid = uids[index]
            if not uid.startswith(prefix):
                break
            cids = self.names(root / uid)
            first = bisect.bisect_right(cids, after[1]) if after is not None and uid == after[0] else 0
            for cid in cids[first:]:
                if (root / uid / cid / META).is_file():
                    found.append((uid, cid))
                    if len(found) > limit:
                        return found[:limit], "/".join(found[limit - 1])
        return found, None


def read_entry(cache_dir: Path, model: str, uid: str, cid: str) -> dict[str, Any] | None:
    """The texts and duration of one cache entry, or None when it has no complete entry."""
    cache = ReferenceCache(cache_dir, model)
    meta = cache.read_meta(uid, cid)
    if meta is None:
        return None
    folder = cache.entry_dir(uid, cid)
    try:
        transcript = (folder / TRANSCRIPT).read_text(encoding="utf-8")
        reference_text = (folder / REFERENCE_TEXT).read_text(encoding="utf-8") if meta.get("has_text") else None
    except (OSError, ValueError):
        return None
    duration = meta.get("duration_s")
    return {
        "transcript": transcript,
        "reference_text": reference_text,
        "duration_s": float(duration) if isinstance(duration, int | float) else None,
    }


def clip_audio_status(clip_dir: Path, uid: str, cid: str) -> tuple[Path | None, str]:
    """The clip's file and "" when the router can read it, else None and the sentence that says why."""
    if not clip_dir.is_dir():
        return None, (
            f"the router cannot read the clip folder {clip_dir} (config.json's video_clip_dir); in the cluster, "
            "mount it into the router (chart value router.tryPage.mountStorage)"
        )
    clip = find_clip(clip_dir, uid, cid)
    if clip is None:
        return None, f"no reference clip file for uid={quote_user_value(uid)} cid={quote_user_value(cid)}"
    return clip.path, ""


def wav_bytes(path: Path, *, backend: Any = "pyav") -> bytes:
    """The clip's audio as mono 16-bit WAV at :data:`PLAY_RATE` (AudioTooLarge past the length bound)."""
    try:
        samples = decode_audio(
            path, sampling_rate=PLAY_RATE, max_seconds=MAX_REFERENCE_SECONDS, backend=backend, reject_silence=False
        )
    except AudioTooLarge:
        raise AudioTooLarge(
            f"the reference clip is longer than the {MAX_REFERENCE_SECONDS:g} s the page plays; listen to it "
            "in the clip folder"
        ) from None
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(PLAY_RATE)
        handle.writeframes(pcm.tobytes())
    return out.getvalue()
