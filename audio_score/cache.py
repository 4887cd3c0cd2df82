"""The reference cache: one folder per model/video/clip, written whole or not at all.

Layout: ``<cache_dir>/<model key>/<uid>/<cid>/`` holding ``meta.json`` (which also records the language the clip
was heard in and the decoding guard's ``no_speech``/``looped`` flags), ``transcript.txt``, ``embedding.npy``
(float32, pooled), ``frames.npy`` (float16, the frames that hold audio) and, when the clip comes with the words
actually spoken, ``reference.txt``. An entry is written under a
temporary name in the same folder and renamed into place, so a crash never leaves half an entry and readers
never see one. Clips are found as ``<uid>/<cid>.<ext>`` or ``<uid>_<cid>.<ext>`` under the clip folder; uid and
cid are validated before any path is built from them.

A temporary folder's name records its writer (host+boot tag, pid, process start time), so the next build removes
a crashed writer's leftovers at once and never a live concurrent writer's (two shard processes share a cache).

Reference text: ``<cid>.txt`` beside ``<uid>/<cid>.<ext>``, or ``<uid>_<cid>.txt`` beside ``<uid>_<cid>.<ext>``
(else the same name with ``.srt`` or ``.vtt``, whose cue numbers, timings and tags are dropped). Its size, mtime
and sha256 are part of the entry's source identity: editing, adding or removing it makes the entry stale.

Word times (``word_times.json``, :mod:`audio_score.reference_word_times`): the ``.srt`` (else ``.vtt``) beside
the clip is also read for per-word cue times; its identity is recorded the same way (``source["word_subtitles"]``).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from audio_score.contract import ID_PATTERN
from audio_score.errors import InvalidIdentifier, quote_user_value
from audio_score.word_times import WordTimes

log = logging.getLogger(__name__)

#: Bump when the way features are computed or stored changes: every entry then becomes stale.
CACHE_FORMAT_VERSION = 3  # 2: reference text (reference.txt, source["text"]); 3: language, no_speech, looped
#: Extensions walked as clips: the seed's .mov plus whatever else FFmpeg reads that people keep clips in.
CLIP_EXTENSIONS = frozenset(
    {
        ".mov",
        ".mp4",
        ".m4v",
        ".mkv",
        ".webm",
        ".avi",
        ".wav",
        ".mp3",
        ".m4a",
        ".aac",
        ".ogg",
        ".opus",
        ".flac",
    }
)
META = "meta.json"
TRANSCRIPT = "transcript.txt"
EMBEDDING = "embedding.npy"
FRAMES = "frames.npy"
REFERENCE_TEXT = "reference.txt"
#: The reference's word times (:class:`audio_score.word_times.WordTimes` as JSON; see reference_word_times.py).
WORD_TIMES = "word_times.json"
#: Subtitle files read for per-word timing, in order (the first one beside the clip is the one read).
SUBTITLE_EXTENSIONS = (".srt", ".vtt")
#: Text beside a clip, in order of preference: plain words, then subtitles.
TEXT_EXTENSIONS = (".txt", ".srt", ".vtt")
#: A reference text is a line or a few; anything larger is not one (and is not read into memory).
MAX_TEXT_BYTES = 256 * 1024
_TMP_PREFIX = ".tmp-"
_OLD_PREFIX = ".old-"
#: Separates the writer fields in a temporary folder's name: never in an id (ID_PATTERN) nor in the tag.
_WRITER_SEP = "+"


def validate_id(value: str, what: str = "id") -> str:
    """Refuse anything that could leave its folder: letters, digits, '.', '_', '-' only, and not '.'/'..'."""
    if not isinstance(value, str) or not ID_PATTERN.fullmatch(value) or set(value) == {"."}:
        raise InvalidIdentifier(
            f"invalid {what} {quote_user_value(value)}: use 1-128 letters, digits, '.', '_' or '-' "
            "(no path separators, not '..')"
        )
    if value.startswith("."):
        raise InvalidIdentifier(f"invalid {what} {quote_user_value(value)}: must not start with '.'")
    return value


@dataclass(frozen=True)
class ClipRef:
    """A reference clip on disk and the uid/cid its path gives it."""

    uid: str
    cid: str
    path: Path

    @property
    def name(self) -> str:
        return f"{self.uid}/{self.cid}"


def parse_clip_path(path: Path, clip_root: Path) -> ClipRef:
    """``<uid>/<cid>.<ext>`` or ``<uid>_<cid>.<ext>`` (split at the last ``_``) relative to the clip folder."""
    rel = path.relative_to(clip_root)
    if len(rel.parts) == 2:
        uid, cid = rel.parts[0], rel.stem
    elif len(rel.parts) == 1 and "_" in rel.stem:
        uid, _, cid = rel.stem.rpartition("_")
    else:
        raise InvalidIdentifier(f"{rel}: expected <uid>/<cid>.<ext> or <uid>_<cid>.<ext>")
    return ClipRef(validate_id(uid, "uid"), validate_id(cid, "cid"), path)


def discover_clips(clip_root: Path) -> list[ClipRef]:
    """Every clip under the folder, sorted by uid/cid so that shards agree on the order.

    A file whose name does not parse is logged and skipped; two files claiming the same uid/cid keep the first
    in path order and log the other.
    """
    if not clip_root.is_dir():
        raise FileNotFoundError(f"clip folder {clip_root} does not exist (video_clip_dir in config.json)")
    found: dict[tuple[str, str], ClipRef] = {}
    for path in sorted(clip_root.rglob("*")):
        if path.suffix.lower() not in CLIP_EXTENSIONS or not path.is_file() or path.name.startswith("."):
            continue
        try:
            clip = parse_clip_path(path, clip_root)
        except InvalidIdentifier as exc:
            log.warning("skipping clip with an unusable name", extra={"path": str(path), "reason": str(exc)})
            continue
        key = (clip.uid, clip.cid)
        if key in found:
            log.warning(
                "duplicate clip id, keeping the first",
                extra={"clip": clip.name, "kept": str(found[key].path), "skipped": str(path)},
            )
            continue
        found[key] = clip
    return [found[k] for k in sorted(found)]


def find_clip(clip_root: Path, uid: str, cid: str) -> ClipRef | None:
    """The clip for a uid/cid without walking the whole folder (the predictor's on-demand path)."""
    validate_id(uid, "uid")
    validate_id(cid, "cid")
    candidates: list[Path] = []
    nested = clip_root / uid
    if nested.is_dir():
        candidates += sorted(p for p in nested.glob(f"{glob_escape(cid)}.*"))
    candidates += sorted(clip_root.glob(f"{glob_escape(uid)}_{glob_escape(cid)}.*"))
    for path in candidates:
        if path.suffix.lower() in CLIP_EXTENSIONS and path.is_file():
            return ClipRef(uid, cid, path)
    return None


def glob_escape(text: str) -> str:
    """Ids are validated, so only '[' could matter; keep glob metacharacters literal anyway."""
    return re.sub(r"([*?\[])", r"[\1]", text)


def shard(clips: list[ClipRef], index: int, count: int) -> list[ClipRef]:
    """Shard ``index`` of ``count``: a stable partition by position in the sorted list."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"shard {index}/{count}: need 0 <= index < count")
    return clips[index::count]


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def source_info(path: Path) -> dict[str, Any]:
    """What identifies a clip's content: size and sha256 (mtime only as a shortcut to skip hashing)."""
    stat = path.stat()
    return {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": file_sha256(path),
    }


_SUBTITLE_TIMING = re.compile(r"-->")
_SUBTITLE_TAG = re.compile(r"<[^>]*>")


def find_reference_text(clip: ClipRef) -> Path | None:
    """The text file beside a clip (same folder and name stem, ``.txt``/``.srt``/``.vtt``), or None.

    The name comes from the clip's own path, whose uid/cid were validated, so it cannot leave the clip folder;
    only regular files count (not folders, not dangling links).
    """
    for ext in TEXT_EXTENSIONS:
        candidate = clip.path.with_suffix(ext)
        if candidate != clip.path and candidate.is_file():
            return candidate
    return None


def word_subtitle_file(clip: ClipRef) -> Path | None:
    """The subtitle file beside a clip that may time its words (``.srt``, else ``.vtt``), or None; found like
    :func:`find_reference_text`. Whether its cues are one word each is decided when it is read."""
    for ext in SUBTITLE_EXTENSIONS:
        candidate = clip.path.with_suffix(ext)
        if candidate != clip.path and candidate.is_file():
            return candidate
    return None


def subtitle_text(raw: str) -> str:
    """The spoken words of an SRT or WebVTT file: cue numbers and identifiers (the line before a timing line),
    timing lines, the WEBVTT header, NOTE/STYLE/REGION blocks and tags dropped; cues joined with spaces."""
    lines = [line.strip() for line in raw.splitlines()]
    words: list[str] = []
    skipping_block = False
    for index, text in enumerate(lines):
        if not text:
            skipping_block = False
            continue
        if skipping_block:
            continue
        if text.startswith("WEBVTT") or text.split(" ", 1)[0] in ("NOTE", "STYLE", "REGION"):
            skipping_block = True
            continue
        next_line = lines[index + 1] if index + 1 < len(lines) else ""
        if _SUBTITLE_TIMING.search(text) or _SUBTITLE_TIMING.search(next_line):
            continue
        words.append(_SUBTITLE_TAG.sub("", text))
    return " ".join(w for w in words if w)


def read_reference_text(clip: ClipRef) -> tuple[str | None, dict[str, Any] | None]:
    """(text, source identity) of the clip's reference text file, or (None, None) when it has none.

    Raises ``OSError``/``ValueError`` for a file that cannot be used (too large, not UTF-8): a clip whose words
    file is broken must fail loudly, not fall back to its transcript unnoticed.
    """
    path = find_reference_text(clip)
    if path is None:
        return None, None
    stat = path.stat()
    if stat.st_size > MAX_TEXT_BYTES:
        raise ValueError(f"reference text {path.name} is {stat.st_size} bytes; the limit is {MAX_TEXT_BYTES}")
    data = path.read_bytes()
    try:
        raw = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"reference text {path.name} is not UTF-8: {exc}") from None
    text = raw if path.suffix.lower() == ".txt" else subtitle_text(raw)
    info = {
        "path": str(path),
        "size": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    return " ".join(text.split()), info


def _same_file(path: Path, recorded: dict[str, Any]) -> bool:
    """Size and mtime equal: unchanged without hashing; size equal and mtime moved: compare the hash."""
    try:
        stat = path.stat()
    except OSError:
        return False
    if stat.st_size != recorded.get("size"):
        return False
    if stat.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return file_sha256(path) == recorded.get("sha256")


def _same_beside(path: Path | None, recorded: dict[str, Any] | None) -> bool:
    """A file beside the clip (text, subtitles) is unchanged: both absent, or the same name and the same file."""
    if path is None or recorded is None:
        return path is None and recorded is None
    # The file name, not the full path: the Job and the predictors may mount the clip folder at different
    # paths; a .txt replacing an .srt (or the reverse) still counts as a change.
    recorded_name = Path(str(recorded.get("path", ""))).name
    return path.name == recorded_name and _same_file(path, recorded)


@dataclass(frozen=True)
class CacheEntry:
    """A cached reference: what the predictor compares an upload with."""

    meta: dict[str, Any]
    transcript: str
    embedding: np.ndarray
    frames: np.ndarray
    #: The words actually spoken in the clip (from its text file), or None: then the transcript stands in.
    reference_text: str | None = None
    #: When each word of :attr:`text` was said in the clip, and where the times came from; None only for an
    #: entry built without them.
    word_times: WordTimes | None = None

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
        # A word time in memory: the word's string and two floats in a small object, about 100 bytes.
        times = 0 if self.word_times is None else 100 * len(self.word_times.words)
        return int(self.embedding.nbytes + self.frames.nbytes + text + times)

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
            word_times = None
            if meta.get("word_times_source") is not None:
                word_times = WordTimes.from_json((folder / WORD_TIMES).read_text(encoding="utf-8"))
            if with_frames:
                frames = np.load(folder / FRAMES, allow_pickle=False)
            else:
                frames = np.zeros((0, int(embedding.shape[-1])), dtype=np.float16)
        except (OSError, ValueError) as exc:
            log.warning("unreadable cache entry", extra={"entry": f"{uid}/{cid}", "error": str(exc)})
            return None
        return CacheEntry(
            meta=meta,
            transcript=transcript,
            embedding=embedding,
            frames=frames,
            reference_text=reference_text,
            word_times=word_times,
        )

    def is_fresh(self, meta: dict[str, Any] | None, fingerprint: dict[str, Any], clip: ClipRef | None) -> bool:
        """An entry is fresh when its model fingerprint matches and neither its source clip, the clip's
        reference text nor the subtitle file read for its word times has changed (a text or subtitle file added,
        removed or edited makes it stale).

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
        if not _same_file(clip.path, source):
            return False
        return _same_beside(find_reference_text(clip), source.get("text")) and _same_beside(
            word_subtitle_file(clip), source.get("word_subtitles")
        )

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
        word_times: WordTimes | None = None,
    ) -> CacheEntry:
        """Write an entry atomically, replacing a stale one.

        The files go to a temporary folder beside the final one (same filesystem), are fsynced, then the folder
        is renamed into place. ``source`` (:func:`source_info` plus ``"text"``, the text
        file's identity from :func:`read_reference_text`) names the clip and text as they were read; without it
        both are read now. Replacing an existing entry renames the old one aside first; a reader in that
        instant sees no entry and takes the missing-entry path, never a half-written one.
        """
        final = self.entry_dir(clip.uid, clip.cid)
        final.parent.mkdir(parents=True, exist_ok=True)
        if source is None:
            text, text_info = read_reference_text(clip)
            subtitles = word_subtitle_file(clip)
            source = {
                **source_info(clip.path),
                "text": text_info,
                "word_subtitles": None if subtitles is None else source_info(subtitles),
            }
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
            "word_times_source": None if word_times is None else word_times.source,
            "created_at": time.time(),
        }
        entry = CacheEntry(
            meta=meta,
            transcript=transcript,
            embedding=np.asarray(embedding, dtype=np.float32),
            frames=np.asarray(frames, dtype=np.float16),
            reference_text=reference_text,
            word_times=word_times,
        )
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(_TMP_PREFIX, clip.cid), dir=final.parent))
        try:
            _write_file(tmp / TRANSCRIPT, transcript.encode("utf-8"))
            _save_npy(tmp / EMBEDDING, entry.embedding)
            _save_npy(tmp / FRAMES, entry.frames)
            if reference_text is not None:
                _write_file(tmp / REFERENCE_TEXT, reference_text.encode("utf-8"))
            if word_times is not None:
                _write_file(tmp / WORD_TIMES, word_times.to_json().encode("utf-8"))
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


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """This host and boot, short: a pid and a start time mean something only within one boot of one host."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return hashlib.sha256(f"{socket.gethostname()}/{boot}".encode()).hexdigest()[:12]


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), "0" where it cannot be read.

    With the pid it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    # Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else "0"


def _temp_prefix(kind: str, name: str) -> str:
    """``.tmp-<name>+<host tag>+<pid>+<start>+`` (the caller appends a unique suffix)."""
    pid = os.getpid()
    return _WRITER_SEP.join((f"{kind}{name}", host_tag(), str(pid), process_start(pid), ""))


def writer_alive(folder_name: str) -> bool | None:
    """Whether the writer recorded in a temporary folder's name still runs: None when it cannot be told (no
    writer fields, or another host or boot)."""
    parts = folder_name.split(_WRITER_SEP)
    if len(parts) != 5 or parts[1] != host_tag() or not parts[2].isdigit():
        return None
    pid, start = int(parts[2]), parts[3]
    if start != "0":
        return process_start(pid) == start  # "0" (no such process now) or another process's start: gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _install(tmp: Path, final: Path) -> None:
    """Rename the finished folder into place; if an entry exists, move it aside first, then drop it."""
    try:
        os.rename(tmp, final)
        return
    except OSError:
        if not final.exists():
            raise
    trash = final.parent / f"{_temp_prefix(_OLD_PREFIX, final.name)}{time.monotonic_ns()}"
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
