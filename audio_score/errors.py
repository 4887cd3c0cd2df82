"""The core's one exception family: each names what went wrong, none knows an HTTP or gRPC code.

Each service maps the family once, at its edge: the predictor to kserve's exceptions
(:func:`predictors.model.kserve_error`), the router to HTTP statuses (``router.errors.STATUS_OF``). So an
unknown clip is :class:`UnknownClip` from the reference store to the predictor's edge, and a 404 after it.

    ScoreError
    ├── ConfigError          config.json or the environment is wrong
    ├── InvalidIdentifier    a uid, cid or model key that is malformed
    ├── UnknownModel         a model key nobody serves
    ├── UnknownClip          no reference clip (and no cache entry) for a uid/cid
    ├── AudioError           the audio cannot be scored
    │   ├── UndecodableAudio
    │   ├── EmptyAudio
    │   └── AudioTooLarge
    ├── ReferenceUnavailable the clip exists but gives no entry (the operator's problem)
    ├── ModelUnavailable     not loaded, queue full, or the caller's deadline cannot be met
    └── ModelLoadError       a backend could not be loaded
"""

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


class ScoreError(Exception):
    """Base of every error the core raises on purpose."""


class ConfigError(ScoreError):
    """config.json or the environment is wrong; the message names the field and the fix."""


class InvalidIdentifier(ScoreError, ValueError):
    """A uid, cid or model key that could reach outside its folder or is otherwise malformed."""


class AudioError(ScoreError):
    """The audio cannot be scored; the subclass says why."""


class UndecodableAudio(AudioError):
    """FFmpeg could not read the input as audio."""


class EmptyAudio(AudioError):
    """The input decoded to no samples, or to silence only."""


class AudioTooLarge(AudioError):
    """The input is over the byte or duration limit."""


class UnknownClip(ScoreError, LookupError):
    """No reference clip (and no cache entry) exists for a uid/cid."""

    def __init__(self, uid: str, cid: str) -> None:
        super().__init__(f"no reference clip for uid={quote_user_value(uid)} cid={quote_user_value(cid)}")
        self.uid = uid
        self.cid = cid


class UnknownModel(ScoreError, LookupError):
    """A model key that is not configured (or not served here)."""

    def __init__(self, model: str, known: list[str]) -> None:
        super().__init__(f"unknown model {quote_user_value(model)}; known: {', '.join(known)}")
        self.model = model


class ReferenceUnavailable(ScoreError):
    """The clip exists but no entry could be built from it (e.g. it does not decode): a server-side problem."""


class ModelUnavailable(ScoreError):
    """The model cannot answer now: not loaded, its queue is full, or the caller's deadline cannot be met.

    ``retry_after_s``: when trying again makes sense, if known.
    """

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class ModelLoadError(ScoreError):
    """A backend could not be loaded; callers log it and skip the model."""

    #: True when loading again cannot succeed: config.json and the checkpoint disagree (a language the checkpoint
    #: does not know). A predictor none of whose models can load for such a reason exits with
    #: :data:`EXIT_CONFIG`, and ``audio-score up`` does not restart it.
    permanent: bool = False


class CheckpointMismatch(ModelLoadError):
    """config.json asks for something the checkpoint does not have; the message names the valid values."""

    permanent = True


#: The predictor's exit status when no model can load and retrying cannot help (sysexits' EX_CONFIG).
EXIT_CONFIG = 78


class LoadFailure(str):
    """A model's load failure as its message (callers log and show it as a string), and whether it is permanent."""

    permanent: bool

    def __new__(cls, message: str, permanent: bool = False) -> LoadFailure:
        value = super().__new__(cls, message)
        value.permanent = permanent
        return value
