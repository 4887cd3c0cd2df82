"""The public entry point: ``POST /score`` (multipart) -> decode on CPU here -> V2 to the model's predictor.

The upload is decoded with the core library's decoder, the same code the cache Job runs on reference clips, so
a clip uploaded as itself scores 1.0. Decoding runs on a worker thread, never on the event loop and never on a
GPU pod. Every error is ``{"detail": "..."}`` with a 4xx that says what to fix, or 503/504 when a predictor is
down or slow; a caller's bad input never gets a 500.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Annotated, Any

import httpx
import numpy as np
from fastapi import APIRouter, Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from audio_score import __version__
from audio_score.audio import decode_audio
from audio_score.contract import DEADLINE_HEADER, AudioSimilarity, WordOp, parse_deadline_header, validate_id
from audio_score.env_settings import RouterEnv
from audio_score.errors import ModelUnavailable, ScoreError, UnknownModel
from audio_score.settings import RouterSettings, load_settings
from router.auth import APIKeyMiddleware
from router.breaker import Breakers
from router.clips import ClipListing
from router.errors import SCORE_ERRORS, APIError, ErrorBody, api_error, install_error_handlers
from router.limits import UploadLimitMiddleware
from router.metrics import RouterMetrics
from router.predictor_client import PredictorClient, PredictorError
from router.readiness import ReadinessTracker
from router.score_call import ScoreCall, Services
from router.try_page import page_files
from router.try_page import router as try_router

log = logging.getLogger("router")


class WordMark(BaseModel):
    """One step of the word alignment, in reading order."""

    op: WordOp = Field(
        description="match: said right; substitution: `said` instead of `word`; deletion: `word` missed; "
        "insertion: `said` added"
    )
    word: str | None = Field(description="the reference word (null for an insertion)")
    said: str | None = Field(description="what the learner said there (null for a deletion)")
    # Per-word feedback: present only when the reference clip has word times (null for an insertion).
    start: float | None = Field(
        default=None, description="seconds into the upload where the learner began this reference word"
    )
    end: float | None = Field(default=None, description="seconds into the upload where the learner ended it")
    ref_start: float | None = Field(default=None, description="seconds into the reference clip where it begins")
    ref_end: float | None = Field(default=None, description="seconds into the reference clip where it ends")
    audio_score: float | None = Field(
        default=None,
        description="the word's own aligned audio similarity in [0, 1] (the reference against itself: 1.0); for "
        "a word left out, what the take has where it should be",
    )
    lag: float | None = Field(
        default=None,
        description="seconds the learner began it later (+) or earlier (-) than the speaker, after removing the "
        "take's overall offset (the median over words)",
    )
    left_out: bool | None = Field(
        default=None, description="true when the learner left the word out: start and end are then null"
    )


class Pause(BaseModel):
    """A pause in the upload longer than the reference speaker's at the same place."""

    index: int = Field(description="index in the reference words of the word the pause comes before")
    word: str = Field(description="that word")
    start: float = Field(description="seconds into the upload where the learner's gap begins")
    duration: float = Field(description="the learner's gap between the two words' spans, seconds")
    reference_gap: float = Field(description="the speaker's gap at the same place, seconds")
    excess: float = Field(description="seconds longer than the speaker's there (scaled by the rate)")


def _example_timing(start: float, end: float, ref_start: float, ref_end: float) -> dict[str, Any]:
    """One word's feedback fields for the documented example."""
    return {
        "start": start,
        "end": end,
        "ref_start": ref_start,
        "ref_end": ref_end,
        "audio_score": 0.8,
        "lag": round(start - ref_start - 0.02, 2),
        "left_out": False,
    }


class ScoreResponse(BaseModel):
    model: str = Field(description="the model key that scored the upload")
    sim_score: float = Field(description="mean of audio_sim_score and text_sim_score, in [0, 1]")
    audio_sim_score: float = Field(
        description="the audio similarity named by `audio_similarity` (config.json): audio_aligned_sim_score or "
        "audio_pooled_sim_score, in [0, 1]"
    )
    text_sim_score: float = Field(
        description="text_transcript_score, or (config.json's `forced_text`, on by default) the mean of "
        "text_transcript_score and text_forced_score, in [0, 1]"
    )
    transcript: str = Field(description="the upload's transcript")
    reference_transcript: str = Field(description="the reference clip's transcript")
    audio_pooled_sim_score: float | None = Field(
        default=None, description="cosine of the pooled (mean) encoder features, clipped to [0, 1]"
    )
    audio_aligned_sim_score: float | None = Field(
        default=None,
        description="mean cosine of the standardised encoder frames aligned in time (DTW), clipped to [0, 1]: "
        "the order of the sounds counts, so a different sentence in the same voice scores low",
    )
    audio_similarity: AudioSimilarity | None = Field(
        default=None, description="which audio similarity feeds audio_sim_score and sim_score"
    )
    word_accuracy: float | None = Field(
        default=None, description="max(0, 1 - word error rate) of the transcript against the reference text"
    )
    words: list[WordMark] | None = Field(default=None, description="the reference words aligned to the learner's words")
    reference_text: str | None = Field(
        default=None,
        description="the words spoken in the reference clip, from its text file; null when it has none (text "
        "scores then use reference_transcript)",
    )
    text_similarity: str | None = Field(
        default=None, description="which text similarity feeds text_sim_score (config.json's `text_similarity`)"
    )
    text_transcript_score: float | None = Field(
        default=None,
        description="the similarity (`text_similarity`) of the upload's transcript to the reference text or the "
        "reference's own transcript, whichever is higher; null when text_sim_score is it",
    )
    text_forced_score: float | None = Field(
        default=None,
        description="how well the upload's audio supports the reference's words: each read through the "
        "recogniser on the upload (geometric mean over its tokens of p(expected) / p(most likely)); null when "
        "not measured",
    )
    no_speech: bool | None = Field(
        default=None,
        description="true when no speech was heard in the upload (silence, noise, a tone: Whisper's no-speech "
        "rule); the transcript is then empty and every score is 0",
    )
    looped: bool | None = Field(
        default=None,
        description="true when the transcript looped or ran past what the audio can hold: it is cut before the "
        "repeats, and text_sim_score is text_forced_score alone (without one, the text half does not count in "
        "sim_score)",
    )
    language: str | None = Field(
        default=None,
        description="the language code the upload was transcribed in: the model's `language`, else the one "
        "detected in the reference clip (null when the checkpoint does not say)",
    )
    timing_score: float | None = Field(
        default=None,
        description="1 - mean of the rate, pause and lag penalties, in [0, 1]; null when the reference clip has "
        "no word times",
    )
    rate: float | None = Field(
        default=None,
        description="reference speech time / learner speech time over the words said (1.25: 25 % faster than "
        "the speaker); null without word times or when no word was said",
    )
    pauses: list[Pause] | None = Field(
        default=None,
        description="pauses longer than the speaker's at the same place (null without word times)",
    )

    model_config = {
        "json_schema_extra": {
            "examples": [
                {
                    "model": "whisper-small",
                    "sim_score": 0.81,
                    "audio_sim_score": 0.74,
                    "text_sim_score": 0.88,
                    "transcript": "the cat sat on a mat",
                    "reference_transcript": "The cat sat on the mat.",
                    "audio_pooled_sim_score": 0.97,
                    "audio_aligned_sim_score": 0.74,
                    "audio_similarity": "aligned",
                    "word_accuracy": 0.83,
                    "words": [
                        {"op": "match", "word": "the", "said": "the", **_example_timing(0.32, 0.44, 0.30, 0.42)},
                        {"op": "match", "word": "cat", "said": "cat", **_example_timing(0.44, 0.80, 0.42, 0.78)},
                        {"op": "match", "word": "sat", "said": "sat", **_example_timing(0.80, 1.12, 0.78, 1.10)},
                        {"op": "match", "word": "on", "said": "on", **_example_timing(1.84, 2.00, 1.10, 1.26)},
                        {"op": "substitution", "word": "the", "said": "a", **_example_timing(2.00, 2.08, 1.26, 1.36)},
                        {"op": "match", "word": "mat", "said": "mat", **_example_timing(2.08, 2.48, 1.36, 1.80)},
                    ],
                    "reference_text": "The cat sat on the mat.",
                    "text_similarity": "char",
                    "text_transcript_score": 0.92,
                    "text_forced_score": 0.84,
                    "no_speech": False,
                    "looped": False,
                    "language": "en",
                    "timing_score": 0.71,
                    "rate": 0.97,
                    "pauses": [
                        {"index": 3, "word": "on", "start": 1.12, "duration": 0.72, "reference_gap": 0.0, "excess": 0.7}
                    ],
                }
            ]
        }
    }


class ModelInfo(BaseModel):
    key: str
    type: str
    ready: bool
    reason: str
    predictor_url: str


class ModelsResponse(BaseModel):
    default: str | None = Field(description="the model used when /score gets no 'model': first ready one")
    models: list[ModelInfo]


# --- dependencies: what a route needs, from the app's state (set by create_app and its lifespan) -------------


def get_settings(request: Request) -> RouterSettings:
    return request.app.state.settings


def get_metrics(request: Request) -> RouterMetrics:
    return request.app.state.metrics


def get_predictor(request: Request) -> PredictorClient:
    return request.app.state.predictor


def get_tracker(request: Request) -> ReadinessTracker:
    return request.app.state.tracker


def get_decode_pool(request: Request) -> ThreadPoolExecutor:
    return request.app.state.decode_pool


SettingsDep = Annotated[RouterSettings, Depends(get_settings)]
MetricsDep = Annotated[RouterMetrics, Depends(get_metrics)]
PredictorDep = Annotated[PredictorClient, Depends(get_predictor)]
TrackerDep = Annotated[ReadinessTracker, Depends(get_tracker)]
DecodePoolDep = Annotated[ThreadPoolExecutor, Depends(get_decode_pool)]


def get_services(request: Request) -> Services:
    state = request.app.state
    return Services(state.settings, state.metrics, state.predictor, state.tracker, state.decode_pool)


ServicesDep = Annotated[Services, Depends(get_services)]


router = APIRouter()


async def choose_model(tracker: ReadinessTracker, predictor: PredictorClient, model: str | None) -> str:
    """The model asked for (UnknownModel; ModelUnavailable when not ready, PredictorError while its breaker is
    open: fail fast, no readiness check, no call), else the first ready one (ModelUnavailable when none is)."""
    if model:
        if not tracker.knows(model):
            raise UnknownModel(model, tracker.keys)
        predictor.raise_if_open(model)
        ready, reason = await tracker.ensure_checked(model)  # the poll may be a moment behind
        if not ready:
            raise ModelUnavailable(f"model {model!r} is not ready: {reason}")
        return model
    default = tracker.default_model()
    if default is None:
        await tracker.check_all(skip_open=True)
        default = tracker.default_model()
    if default is None:
        raise ModelUnavailable(
            f"no model is ready ({tracker.reasons()})", retry_after_s=predictor.breakers.retry_after_s
        )
    return default


@router.post(
    "/score",
    response_model=ScoreResponse,
    # A field the predictor did not send (an older release) is left out rather than sent as null.
    response_model_exclude_unset=True,
    responses=SCORE_ERRORS,
    summary="Score a recording against a reference clip",
    description=(
        "Multipart form: `uid` and `cid` name the reference clip, `audio` is the recording (any format FFmpeg "
        "decodes), `model` optionally picks the model. Example:\n\n"
        "`curl -F uid=video1 -F cid=clip1 -F model=whisper-small -F audio=@take.wav http://HOST/score`\n\n"
        'Every error answer is `{"detail": "..."}` saying what to fix.'
    ),
)
async def score(
    request: Request,
    services: ServicesDep,
    uid: Annotated[str, Form(description="video id of the reference clip", examples=["video1"])],
    cid: Annotated[str, Form(description="clip id within the video", examples=["clip1"])],
    audio: Annotated[UploadFile, File(description="the recording: any format FFmpeg reads (wav, mp3, m4a, ...)")],
    model: Annotated[
        str | None,
        Form(
            description="model key from GET /models (default: the first configured model that is ready)",
            examples=["whisper-small"],
        ),
    ] = None,
) -> dict[str, Any]:
    settings, metrics, tracker = services.settings, services.metrics, services.tracker
    call = ScoreCall(
        uid=uid, cid=cid, asked_model=model or None, started=time.perf_counter(), label=tracker.label(model)
    )
    # One line per request only when asked for (AUDIO_SCORE_DEBUG_REQUEST_LOGS=1): metrics carry the counts.
    request_log_level = logging.INFO if settings.env.debug_request_logs else logging.DEBUG
    try:
        try:
            call.caller_wait_s = _caller_wait_s(request)
            validate_id(uid, "uid")
            validate_id(cid, "cid")
            call.key = call.label = await choose_model(tracker, services.predictor, call.asked_model)
            call.samples = await _decode(services, await audio.read())
            result = await _call_predictor(services, call)
        except (ScoreError, PredictorError) as exc:
            raise api_error(exc) from None
        call.status = 200
        log.log(request_log_level, "scored", extra=call.log_fields(sim_score=round(result["sim_score"], 4)))
        if "reference_text" in result:
            result["reference_text"] = result["reference_text"] or None  # "" on the wire: the clip has none
        if "language" in result:
            result["language"] = result["language"] or None  # "" on the wire: the checkpoint does not say
        return {"model": call.key, **result}
    except APIError as exc:
        call.status = exc.status_code
        log.log(request_log_level, "score refused", extra=call.log_fields(status=call.status, detail=exc.detail))
        raise
    finally:
        metrics.requests.labels(call.label, str(call.status)).inc()
        metrics.latency.labels(call.label).observe(time.perf_counter() - call.started)


async def _decode(services: Services, data: bytes) -> np.ndarray:
    """The upload through the one decoder (config.json's), on a worker thread; the core's AudioError if it fails."""
    settings = services.settings
    decode_started = time.perf_counter()
    try:
        return await asyncio.get_running_loop().run_in_executor(
            services.decode_pool,
            functools.partial(
                decode_audio,
                data,
                sampling_rate=settings.config.target_sampling_rate,
                max_bytes=settings.config.max_upload_bytes,
                max_seconds=settings.config.max_audio_seconds,
                backend=settings.config.decoder,
            ),
        )
    finally:
        services.metrics.decode.observe(time.perf_counter() - decode_started)


async def _call_predictor(services: Services, call: ScoreCall) -> dict[str, Any]:
    """The model's scores, within what is left of the caller's deadline; marks the model unready when its
    predictor is unreachable or its breaker opened."""
    assert call.key is not None and call.samples is not None, "choose the model and decode the upload first"
    predictor, key = services.predictor, call.key
    call_started = time.perf_counter()
    budget = call.predictor_budget_s(services.settings.env.predictor_timeout_s)
    try:
        return await predictor.score(key, call.samples, call.uid, call.cid, wait_s=budget)
    except PredictorError as exc:
        if exc.unreachable or predictor.breakers.is_open(key):
            services.tracker.mark_unready(key, exc.detail)
        raise
    finally:
        services.metrics.predictor.labels(key).observe(time.perf_counter() - call_started)


@router.get("/models", response_model=ModelsResponse, summary="Configured models, readiness and the default")
async def models(settings: SettingsDep, predictor: PredictorDep, tracker: TrackerDep) -> dict[str, Any]:
    types = {m.key: m.type for m in settings.models}
    return {
        "default": tracker.default_model(),
        "models": [
            {"key": k, "type": types[k], "ready": s.ready, "reason": s.reason, "predictor_url": predictor.base_url(k)}
            for k, s in tracker.snapshot()
        ],
    }


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Readiness: at least one model is ready", responses={503: {"model": ErrorBody}})
async def readyz(tracker: TrackerDep) -> JSONResponse:
    ready = tracker.ready_keys()
    if ready:
        return JSONResponse({"status": "ready", "models": ready})
    return JSONResponse({"detail": f"no model is ready ({tracker.reasons()})"}, status_code=503)


@router.get("/metrics", include_in_schema=False)
async def prometheus_metrics(metrics: MetricsDep) -> PlainTextResponse:
    return PlainTextResponse(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


# --- assembly -----------------------------------------------------------------------------------------------


def create_app(settings: RouterSettings, *, readiness_interval_s: float = 2.0) -> FastAPI:
    """The router for ``settings``: the routes above, one pooled httpx client and a readiness poller per process."""
    keys = settings.model_keys

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=64)
        timeout = httpx.Timeout(settings.env.predictor_timeout_s, connect=min(5.0, settings.env.predictor_timeout_s))
        # Decoding is CPU work in C (FFmpeg, soxr) that releases the GIL: a bounded pool of threads, one per core,
        # keeps the event loop free and caps how many uploads sit decoded in memory at once.
        pool = ThreadPoolExecutor(max_workers=max(1, os.cpu_count() or 1), thread_name_prefix="decode")
        app.state.decode_pool = pool
        async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
            predictor = PredictorClient(settings, client, Breakers(keys, readiness_interval_s))
            tracker = ReadinessTracker(predictor, keys, readiness_interval_s)
            app.state.predictor, app.state.tracker = predictor, tracker
            await tracker.check_all()
            tracker.start()
            log.info("router started", extra={"models": keys, "ready": tracker.ready_keys()})
            try:
                yield
            finally:
                await tracker.stop()
                pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="audio-score",
        version=__version__,
        description=(
            "Scores how closely a learner's recording matches a line of a reference video clip, by sound "
            "(encoder features) and by words (transcripts)."
        ),
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = RouterMetrics()
    app.state.clip_listing = ClipListing(settings.config.cache_dir)
    install_error_handlers(app)
    app.add_middleware(
        UploadLimitMiddleware,
        max_upload_bytes=settings.config.max_upload_bytes,
        body_timeout_s=settings.env.body_timeout_s,
    )
    if settings.env.api_keys:
        app.add_middleware(APIKeyMiddleware, keys=settings.env.api_keys)
    app.include_router(router)
    app.include_router(try_router)
    app.mount("/try", page_files(), name="try")
    return app


def _caller_wait_s(request: Request) -> float | None:
    """Seconds the router's caller will still wait, from its optional :data:`DEADLINE_HEADER`; 400 if malformed."""
    try:
        return parse_deadline_header(request.headers.get(DEADLINE_HEADER))
    except ValueError as exc:
        raise APIError(400, str(exc)) from None


def app_factory() -> FastAPI:
    """For ``uvicorn --factory`` and worker processes: settings from AUDIO_SCORE_CONFIG and the environment."""
    from audio_score.logs import configure_logging

    configure_logging()
    return create_app(load_settings(RouterEnv))
