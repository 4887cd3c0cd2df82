"""The core's exceptions: each names what went wrong so that a service can map it to a 4xx with a reason."""

from __future__ import annotations


class AudioScoreError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(AudioScoreError):
    """config.json or the environment is wrong; the message names the field and the fix."""


class InvalidIdentifier(AudioScoreError, ValueError):
    """A uid, cid or model key that could reach outside its folder or is otherwise malformed."""


class AudioError(AudioScoreError):
    """The audio cannot be scored. Subclasses tell which 4xx fits."""

    status_code = 400


class UndecodableAudio(AudioError):
    """FFmpeg could not read the input as audio."""


class EmptyAudio(AudioError):
    """The input decoded to no samples, or to silence only."""


class AudioTooLarge(AudioError):
    """The input is over the byte or duration limit."""

    status_code = 413


class UnknownClip(AudioScoreError, LookupError):
    """No reference clip (and no cache entry) exists for a uid/cid."""

    def __init__(self, uid: str, cid: str) -> None:
        super().__init__(f"no reference clip for uid={uid!r} cid={cid!r}")
        self.uid = uid
        self.cid = cid


class ModelLoadError(AudioScoreError):
    """A backend could not be loaded; callers log it and skip the model."""
