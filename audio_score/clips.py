"""Reference clips on disk and the words said in them: what a cache entry is built from, and what names it.

Kept apart from the store (:mod:`audio_score.cache`) because the clip folder and the cache are two different
things with two different owners: the clip folder is people's files (read-only to every part), the cache is
written by the Job and the predictors. The router's try page and the score client read clips without any cache.

Clips are found as ``<uid>/<cid>.<ext>`` or ``<uid>_<cid>.<ext>`` under the clip folder; uid and cid are
validated (:func:`audio_score.contract.validate_id`) before any path is built from them.

Reference text: ``<cid>.txt`` beside ``<uid>/<cid>.<ext>``, or ``<uid>_<cid>.txt`` beside ``<uid>_<cid>.<ext>``
(else the same name with ``.srt`` or ``.vtt``, whose cue numbers, timings and tags are dropped). Its size, mtime
and sha256 are part of an entry's source identity (:func:`source_info`, :func:`same_file`): editing, adding or
removing it makes the entry stale.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from audio_score.contract import validate_id
from audio_score.errors import InvalidIdentifier

log = logging.getLogger(__name__)

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
#: Text beside a clip, in order of preference: plain words, then subtitles.
TEXT_EXTENSIONS = (".txt", ".srt", ".vtt")
#: A reference text is a line or a few; anything larger is not one (and is not read into memory).
MAX_TEXT_BYTES = 256 * 1024


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


def same_file(path: Path, recorded: dict[str, Any]) -> bool:
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
