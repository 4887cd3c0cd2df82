"""Finding checkpoint files and naming a checkpoint's identity, for hub ids and local folders alike."""

from __future__ import annotations

import hashlib
from pathlib import Path

_EDGE = 1 << 16


def is_local(ref: str) -> bool:
    return Path(ref).is_dir()


def checkpoint_file(ref: str, filename: str, revision: str | None = None) -> Path | None:
    """A file of a local folder or of a hub repo (through the hub cache); None when the repo lacks it."""
    if is_local(ref):
        path = Path(ref) / filename
        return path if path.is_file() else None
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        return Path(hf_hub_download(ref, filename, revision=revision))
    except EntryNotFoundError:
        return None


def checkpoint_identity(ref: str, revision: str | None, commit_hash: str | None = None) -> str:
    """The hub commit a model came from, or for a local folder a digest of its configs and weight files.

    A local digest reads each weight file's size plus its first and last 64 KiB rather than the whole file:
    cheap at start-up even for GBs of weights, and any re-save of the checkpoint changes it.
    """
    if not is_local(ref):
        return commit_hash or revision or "main"
    digest = hashlib.sha256()
    for path in sorted(Path(ref).iterdir()):
        if not path.is_file():
            continue
        digest.update(path.name.encode())
        if path.suffix == ".json":
            digest.update(path.read_bytes())
        elif path.suffix in {".safetensors", ".bin", ".pt"}:
            size = path.stat().st_size
            digest.update(str(size).encode())
            with path.open("rb") as handle:
                digest.update(handle.read(_EDGE))
                handle.seek(max(0, size - _EDGE))
                digest.update(handle.read(_EDGE))
    return "local-" + digest.hexdigest()[:16]
