"""The router's error answers: every one is ``{"detail": "..."}`` with a status that tells the caller what to fix.

FastAPI's own 422 (a missing or malformed form field) is rewritten from its list of dicts into one sentence that
still names the field; HTTP errors raised by Starlette (404 route, 405 method) get the same shape. An unexpected
exception is logged and answered 500 with a generic detail (never for a caller's bad input: every input error has
its own 4xx before the code gets that far).
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from audio_score.contract import ID_PATTERN
from audio_score.errors import (
    AudioError,
    AudioTooLarge,
    EmptyAudio,
    InvalidIdentifier,
    ModelUnavailable,
    ScoreError,
    UndecodableAudio,
    UnknownClip,
    UnknownModel,
)
from router.predictor_client import PredictorError

log = logging.getLogger("router")


class APIError(Exception):
    """An error answer of this API: a status and the reason to show the caller."""

    def __init__(self, status_code: int, detail: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        #: Extra answer headers, e.g. ``Retry-After`` on a 503 from an open circuit breaker.
        self.headers = headers


#: The router's one table from the core's exceptions to HTTP statuses (the first matching class wins). A
#: predictor's answer arrives as :class:`PredictorError`, whose status ``PredictorClient`` has already chosen from
#: the predictor's (400/404/413/503 kept, other failures 502, timeouts 504, unreachable 503).
STATUS_OF: tuple[tuple[type[ScoreError], int], ...] = (
    (InvalidIdentifier, 400),
    (UndecodableAudio, 400),
    (EmptyAudio, 400),
    (AudioTooLarge, 413),
    (UnknownModel, 404),
    (UnknownClip, 404),
    (ModelUnavailable, 503),
)


def api_error(exc: ScoreError | PredictorError) -> APIError:
    """The answer for a core error or a predictor's: its status from :data:`STATUS_OF`, its reason, and
    ``Retry-After`` when the error knows when to retry."""
    if isinstance(exc, PredictorError):
        status, detail, retry = exc.status_code, exc.detail, exc.retry_after_s
    else:
        status = next((code for kind, code in STATUS_OF if isinstance(exc, kind)), 500)
        detail, retry = str(exc), getattr(exc, "retry_after_s", None)
        if isinstance(exc, AudioError):
            detail = f"audio: {detail}"
        elif isinstance(exc, InvalidIdentifier):
            detail = f"{detail} (pattern {ID_PATTERN.pattern})"
    headers = {"Retry-After": str(max(1, math.ceil(retry)))} if retry else None
    return APIError(status, detail, headers=headers)


class ErrorBody(BaseModel):
    detail: str


def _example(text: str) -> dict[str, Any]:
    return {"application/json": {"example": {"detail": text}}}


#: The error answers of POST /score, for the OpenAPI document.
SCORE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {
        "model": ErrorBody,
        "description": "bad uid/cid, undecodable audio, or audio that is empty or silent",
        "content": _example("audio: could not decode the upload as audio (Invalid data found when processing input)"),
    },
    401: {
        "model": ErrorBody,
        "description": "missing or wrong API key (only when AUDIO_SCORE_API_KEYS is set)",
        "content": _example("missing or invalid API key: send it as 'X-API-Key: <key>' or 'Authorization: Bearer ...'"),
    },
    404: {
        "model": ErrorBody,
        "description": "no reference clip for uid/cid, or an unknown model key",
        "content": _example("no reference clip for uid='video1' cid='clip9'"),
    },
    408: {
        "model": ErrorBody,
        "description": "the request body stopped arriving for AUDIO_SCORE_BODY_TIMEOUT_S before it was complete",
        "content": _example("the request body stopped arriving: nothing for 30 s after 1024 bytes (...)"),
    },
    413: {
        "model": ErrorBody,
        "description": "the upload is over the byte limit (checked while it streams in) or the duration limit",
        "content": _example("the upload is over the limit of 26214400 bytes; send a shorter recording"),
    },
    422: {
        "model": ErrorBody,
        "description": "a form field is missing or malformed (the detail names it)",
        "content": _example("field 'audio' is required (send multipart/form-data with uid, cid and an audio file)"),
    },
    503: {
        "model": ErrorBody,
        "description": "the model is not ready, its predictor is unreachable or overloaded; retry later",
        "content": _example("model 'whisper-small' is not ready: predictor at http://... is unreachable"),
    },
    504: {
        "model": ErrorBody,
        "description": "the predictor did not answer within AUDIO_SCORE_PREDICTOR_TIMEOUT_S",
        "content": _example("the predictor for 'whisper-small' did not answer within 30 s"),
    },
}


def validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's validation errors as one sentence naming each field."""
    parts = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body", "form", "query", "header")]
        field = ".".join(loc) or "request body"
        msg = "is required" if err.get("type") == "missing" else str(err.get("msg", "is invalid"))
        parts.append(f"field '{field}' {msg}" if loc else f"{field}: {msg}")
    return "; ".join(parts or ["invalid request"]) + " (send multipart/form-data with uid, cid and an audio file)"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": validation_detail(exc)}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error", extra={"path": request.url.path})
        return JSONResponse({"detail": f"internal error ({type(exc).__name__}); see the router's log"}, 500)
