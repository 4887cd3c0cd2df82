"""One exception family in the core, mapped once at each service's edge: the predictor's ``kserve_error`` and the
router's ``STATUS_OF``/``api_error``. The end-to-end statuses are asserted in the predictor and router tests;
here, that each edge maps the whole family and that no core error carries an HTTP code."""

from __future__ import annotations

import pytest
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady

from audio_score import errors
from predictors.batcher import DeadlineExpired, QueueFull
from predictors.model import kserve_error
from router.errors import api_error

#: What a caller of the router can cause, and the status it gets.
ROUTER_CASES = [
    (errors.InvalidIdentifier("uid '..' is not allowed"), 400),
    (errors.UndecodableAudio("could not decode"), 400),
    (errors.EmptyAudio("silent"), 400),
    (errors.AudioTooLarge("over 25 MiB"), 413),
    (errors.UnknownModel("nope", ["alpha"]), 404),
    (errors.UnknownClip("video1", "clip9"), 404),
    (errors.ModelUnavailable("no model is ready", retry_after_s=2), 503),
    (QueueFull("at capacity", retry_after_s=0.4), 503),
]


@pytest.mark.parametrize(
    ("exc", "status"), ROUTER_CASES, ids=lambda v: type(v).__name__ if isinstance(v, Exception) else str(v)
)
def test_the_router_maps_each_core_error_once(exc: errors.ScoreError, status: int) -> None:
    answer = api_error(exc)
    assert answer.status_code == status
    assert str(exc) in answer.detail
    if isinstance(exc, errors.AudioError):
        assert answer.detail.startswith("audio: ")
    if isinstance(exc, errors.ModelUnavailable):
        assert answer.headers == {"Retry-After": str(max(1, round(exc.retry_after_s + 0.49)))}


def test_no_core_error_knows_an_http_code() -> None:
    family = [errors.ScoreError, *errors.ScoreError.__subclasses__(), *errors.AudioError.__subclasses__()]
    assert all(not hasattr(kind, "status_code") for kind in family), family


def test_the_predictor_maps_each_core_error_once() -> None:
    clip = kserve_error(errors.UnknownClip("video1", "clip9"), "alpha")
    assert isinstance(clip, ModelNotFound) and "uid='video1' cid='clip9'" in clip.reason
    busy = kserve_error(DeadlineExpired("dropped", retry_after_s=1.5), "alpha")
    assert isinstance(busy, ModelNotReady) and busy.retry_after_s == 1.5
    assert isinstance(kserve_error(errors.InvalidIdentifier("bad uid"), "alpha"), InvalidInput)
    assert isinstance(kserve_error(errors.ReferenceUnavailable("clip does not decode"), "alpha"), InferenceError)
