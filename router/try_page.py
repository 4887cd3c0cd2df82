"""The try page (``GET /try/``) and the JSON it reads: the clips in a model's cache, one clip's texts, its audio.

The page is three static files in ``router/static/`` (HTML, one script, one style sheet: no build step, no
external script, font or CDN), served with a strict Content-Security-Policy (:data:`PAGE_HEADERS`: only this
origin's own script and style, no inline code, media from this origin or the page's own recordings as blob:
URLs). It loads without an API key; everything it fetches (``/models``, ``/clips``, ``/score``) needs one when
the deployment has keys, which the page sends as ``X-API-Key``. The listing and the audio read the cache and the
clip folder named in config.json; in the cluster the chart mounts both read-only into the router
(``router.tryPage.mountStorage``).
"""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.types import Scope

from audio_score.contract import validate_id
from audio_score.errors import ScoreError, UnknownClip, UnknownModel
from audio_score.settings import RouterSettings
from router.clips import (
    DEFAULT_PAGE,
    MAX_PAGE,
    CacheUnreadable,
    ClipListing,
    check_prefix,
    clip_audio_status,
    parse_cursor,
    read_entry,
    wav_bytes,
)
from router.errors import APIError, ErrorBody, api_error

STATIC_DIR = Path(__file__).resolve().parent / "static"
#: The page's security headers: its own script and style only, no inline code, no framing, no referrer; the
#: microphone for this origin only. ``media-src blob:`` plays the reference audio and the take the page recorded.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; media-src 'self' blob:; "
    "connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "microphone=(self)",
    "Cache-Control": "no-cache",
}

router = APIRouter()


class PageFiles(StaticFiles):
    """The page's static files, each answer with :data:`PAGE_HEADERS`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(PAGE_HEADERS)
        return response


def page_files() -> PageFiles:
    return PageFiles(directory=STATIC_DIR, html=True)


class ClipRef(BaseModel):
    uid: str
    cid: str


class ClipList(BaseModel):
    model: str = Field(description="the model whose cache is listed")
    clips: list[ClipRef] = Field(description="complete cache entries in uid, then cid order")
    next: str | None = Field(description="pass as `after` for the next page; null on the last page")


class ClipDetail(BaseModel):
    model: str
    uid: str
    cid: str
    transcript: str = Field(description="the model's transcript of the reference clip")
    reference_text: str | None = Field(description="the clip's text file (what /score compares with), or null")
    duration_s: float | None = Field(description="the clip's length in seconds")
    audio: bool = Field(description="whether GET /clips/{uid}/{cid}/audio can play it from here")
    audio_detail: str | None = Field(description="why the audio is not reachable (null when it is)")


def _model(request: Request, model: str | None) -> str:
    """The configured model named, else the first ready one, else the first configured."""
    settings: RouterSettings = request.app.state.settings
    if model:
        if model not in settings.model_keys:
            raise api_error(UnknownModel(model, settings.model_keys))
        return model
    return request.app.state.tracker.default_model() or settings.model_keys[0]


def _ids(uid: str, cid: str) -> None:
    try:
        validate_id(uid, "uid")
        validate_id(cid, "cid")
    except ScoreError as exc:
        raise api_error(exc) from None


@router.get(
    "/clips",
    response_model=ClipList,
    summary="The clips in a model's reference cache, paged, searchable by uid prefix",
    responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}, 503: {"model": ErrorBody}},
)
async def list_clips(
    request: Request,
    model: Annotated[str | None, Query(description="model key (default: the router's default model)")] = None,
    q: Annotated[str, Query(description="uid prefix (empty: every uid)", max_length=128)] = "",
    after: Annotated[str | None, Query(description="`next` of the previous page (uid/cid)")] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="entries per page")] = DEFAULT_PAGE,
) -> dict[str, Any]:
    key = _model(request, model)
    listing: ClipListing = request.app.state.clip_listing
    try:
        cursor = parse_cursor(after)
        prefix = check_prefix(q)
        clips, next_cursor = await asyncio.to_thread(listing.page, key, prefix=prefix, after=cursor, limit=limit)
    except CacheUnreadable as exc:
        raise APIError(503, str(exc)) from None
    except ScoreError as exc:
        raise api_error(exc) from None
    return {"model": key, "clips": [{"uid": u, "cid": c} for u, c in clips], "next": next_cursor}


@router.get(
    "/clips/{uid}/{cid}",
    response_model=ClipDetail,
    summary="One cache entry's texts and whether its audio can be played",
    responses={400: {"model": ErrorBody}, 404: {"model": ErrorBody}},
)
async def clip_detail(
    request: Request,
    uid: str,
    cid: str,
    model: Annotated[str | None, Query(description="model key (default: the router's default model)")] = None,
) -> dict[str, Any]:
    _ids(uid, cid)
    key = _model(request, model)
    settings: RouterSettings = request.app.state.settings
    entry = await asyncio.to_thread(read_entry, settings.config.cache_dir, key, uid, cid)
    if entry is None:
        raise APIError(404, f"{UnknownClip(uid, cid)} in the cache of model {key!r} (it is built on the first /score)")
    path, why = await asyncio.to_thread(clip_audio_status, settings.config.video_clip_dir, uid, cid)
    return {
        "model": key,
        "uid": uid,
        "cid": cid,
        **entry,
        "audio": path is not None,
        "audio_detail": why or None,
    }


@router.get(
    "/clips/{uid}/{cid}/audio",
    summary="The reference clip's audio as WAV (mono, 24 kHz)",
    response_class=Response,
    responses={
        200: {"content": {"audio/wav": {}}},
        400: {"model": ErrorBody},
        404: {"model": ErrorBody},
        413: {"model": ErrorBody},
    },
)
async def clip_audio(request: Request, uid: str, cid: str) -> Response:
    _ids(uid, cid)
    settings: RouterSettings = request.app.state.settings
    path, why = await asyncio.to_thread(clip_audio_status, settings.config.video_clip_dir, uid, cid)
    if path is None:
        raise APIError(404, why)
    pool = request.app.state.decode_pool
    try:
        data = await asyncio.get_running_loop().run_in_executor(
            pool, functools.partial(wav_bytes, path, backend=settings.config.decoder)
        )
    except ScoreError as exc:
        raise api_error(exc) from None
    return Response(data, media_type="audio/wav", headers={"Cache-Control": "private, max-age=300"})


@router.get("/", include_in_schema=False)
async def root() -> RedirectResponse:
    """The service's front door is the try page (relative, so it works behind a path prefix)."""
    return RedirectResponse("try/", status_code=307)
