"""The core's exceptions: each names what went wrong so that a service can map it to a 4xx with a reason."""

from __future__ import annotations

#: How many characters of a caller's value an error message echoes.
USER_VALUE_LIMIT = 64


def quote_user_value(value: object, limit: int = USER_VALUE_LIMIT) -> str:
    """A caller's value as an error message may echo it: quoted like ``repr``, at most ``limit`` characters of it.

    Quoting escapes newlines and other control characters (so the value cannot forge a log line or break a
    message), and the cut keeps a megabyte-long uid from coming back whole in an error body and in the logs.
    A cut value ends with ``…(N chars)``, naming its full length. Strings and bytes are quoted; anything else
    (a shape list, a number) is shown by its ``repr``, cut the same way.
    """
    if isinstance(value, str | bytes | bytearray):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}…({len(value)} {'chars' if isinstance(value, str) else 'bytes'})"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}…({len(text)} chars)"


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
        super().__init__(f"no reference clip for uid={quote_user_value(uid)} cid={quote_user_value(cid)}")
        self.uid = uid
        self.cid = cid


class ModelLoadError(AudioScoreError):
    """A backend could not be loaded; callers log it and skip the model."""
