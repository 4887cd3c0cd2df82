"""The KServe custom model: one :class:`AudioScoreModel` per model key, speaking the V2 (Open Inference) protocol.

The tensors (names, datatypes, shapes, the id rule, the deadline header, the score and the embed-only outputs)
are :mod:`audio_score.contract`; the model name is the config key.

Status codes (KServe 0.21 maps exceptions by type; the same exception serves REST and gRPC):

- 400 / INVALID_ARGUMENT, ``InvalidInput``: a missing, unknown or repeated tensor, a wrong datatype or shape,
  data that does not fit its shape, empty, over-long (> ``max_audio_seconds``) or non-finite audio, an invalid
  uid/cid, an unknown requested output.
- 404 / NOT_FOUND, :class:`ClipNotFound` (a ``ModelNotFound`` whose message names the uid and cid): no cache
  entry and no clip for that uid/cid (the core's ``UnknownClip``).
- 503 / UNAVAILABLE, :class:`Unavailable` (a ``ModelNotReady``; the core's ``ModelUnavailable``): the model
  failed to load, its batch queue is full, or it cannot answer before the caller's deadline (header
  ``x-audio-score-deadline-ms``, see :mod:`predictors.batcher`); REST answers carry ``Retry-After``. KServe
  itself answers 503 on REST before ``predict`` when a model is not ready.
- 500, ``InferenceError``: the reference clip exists but cannot be decoded (the core's ``ReferenceUnavailable``:
  the operator's problem, not the caller's); kserve's gRPC interceptor reports it as INVALID_ARGUMENT.

The core raises its own family (:mod:`audio_score.errors`); :func:`kserve_error` is the one place it becomes
kserve's.

The response is built with ``use_binary_outputs=req.use_binary_outputs`` and the requested outputs, so the
binary tensor extension works both ways on REST, and raw contents on gRPC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from kserve import Model
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady
from kserve.protocol.infer_type import InferInput, InferOutput, InferRequest, InferResponse

from audio_score import contract
from audio_score.contract import AUDIO, CID, DEADLINE_HEADER, UID, parse_deadline_header, validate_id
from audio_score.errors import (
    InvalidIdentifier,
    ModelLoadError,
    ModelUnavailable,
    ReferenceUnavailable,
    ScoreError,
    UnknownClip,
    quote_user_value,
)
from audio_score.scoring import compare, forced_texts
from audio_score.settings import ModelSpec, PredictorSettings
from predictors.batcher import DynamicBatcher
from predictors.references import ReferenceStore

if TYPE_CHECKING:
    from audio_score.backends import Backend, Features

log = logging.getLogger(__name__)


class ClipNotFound(ModelNotFound):
    """404 with a message naming the uid and cid (``ModelNotFound``'s own message is fixed to the model)."""

    def __init__(self, model: str, uid: str, cid: str) -> None:
        self.model = model
        self.uid = uid
        self.cid = cid
        self.reason = (
            f"no reference clip for uid={quote_user_value(uid)} cid={quote_user_value(cid)} (model {model!r}): "
            "no cache entry and no clip <uid>/<cid>.<ext> or <uid>_<cid>.<ext> under video_clip_dir"
        )


class Unavailable(ModelNotReady):
    """503: the model is not loaded, its queue is full, or it cannot answer within the caller's deadline.
    Carries ``reason`` for KServe's gRPC interceptor and ``retry_after_s`` for REST's ``Retry-After``."""

    def __init__(self, model: str, detail: str, retry_after_s: float | None = None) -> None:
        super().__init__(model, detail)
        self.reason = self.error_msg
        self.retry_after_s = retry_after_s


def kserve_error(exc: ScoreError, model: str) -> Exception:
    """The one mapping from the core's exceptions to kserve's (which kserve turns into REST and gRPC codes)."""
    if isinstance(exc, UnknownClip):
        return ClipNotFound(model, exc.uid, exc.cid)
    if isinstance(exc, ModelUnavailable):
        return Unavailable(model, str(exc), exc.retry_after_s)
    if isinstance(exc, InvalidIdentifier):
        return InvalidInput(str(exc))
    if isinstance(exc, ReferenceUnavailable):
        return InferenceError(str(exc))
    return InferenceError(f"{type(exc).__name__}: {exc}")


def request_deadline(headers: dict[str, str] | None, received: float) -> float | None:
    """The ``time.perf_counter()`` instant the caller stops waiting: ``received`` (when the request arrived here)
    plus the wait :data:`DEADLINE_HEADER` gives (:func:`audio_score.contract.parse_deadline_header`); None
    without the header, 400 when it is malformed."""
    try:
        wait_s = parse_deadline_header((headers or {}).get(DEADLINE_HEADER))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    return None if wait_s is None else received + wait_s


@dataclass(frozen=True)
class Parsed:
    """A request after preprocess: its tensors checked, the audio as float32, the deadline resolved."""

    request: InferRequest
    audio: np.ndarray
    uid: str | None
    cid: str | None
    deadline: float | None


@dataclass(frozen=True)
class Upload:
    """One clip for the batch: its samples and the language to hear it in (its reference's; None: detect)."""

    audio: np.ndarray
    language: str | None = None
    #: The reference's texts to read through the recogniser on this audio (``Backend.embed``'s forced_texts).
    forced_texts: tuple[str, ...] = ()


def embed_uploads(backend: Backend) -> Any:
    """The batcher's call: one ``Backend.embed`` for the batch, each upload in its own language and read against
    its own reference's texts."""

    def run(uploads: list[Upload]) -> list[Features]:
        return backend.embed(
            [u.audio for u in uploads],
            languages=[u.language for u in uploads],
            forced_texts=[u.forced_texts for u in uploads],
        )

    return run


@dataclass(frozen=True)
class Scored:
    """A request after predict: the outputs it can return."""

    parsed: Parsed
    outputs: list[InferOutput]


class AudioScoreModel(Model):
    """One config model key served over V2, with dynamic batching and the reference store."""

    ready: bool  # set by kserve's Model.__init__ (False), which ships no type information

    def __init__(
        self,
        spec: ModelSpec,
        settings: PredictorSettings,
        *,
        backend: Backend | None = None,
        executor: Executor | None = None,
        load_error: str | None = None,
    ) -> None:
        """Give a loaded ``backend`` (and the ``executor`` of its device), or a ``load_error``, or neither and call
        :meth:`load`. ``executor`` must have a single worker: it is what makes batches run one at a time."""
        super().__init__(spec.key)
        self.spec = spec
        self.settings = settings
        self.executor = executor
        self.backend: Backend | None = None
        self.batcher: DynamicBatcher[Upload, Features] | None = None
        self.references: ReferenceStore | None = None
        self.load_error = load_error
        self._load_attempted = load_error is not None
        if backend is not None:
            self._attach(backend)

    # --- life cycle -------------------------------------------------------------------------------------------

    def load(self) -> bool:
        """Load the backend once; a failure is kept in ``load_error`` and the model stays not ready.

        KServe calls ``load()`` again on a request to a model that is not ready; it is not retried then (a broken
        checkpoint does not heal, and loading on the request path would stall the server).
        """
        if self._load_attempted:
            return self.ready
        self._load_attempted = True
        from audio_score.backends import load_backend

        try:
            backend = load_backend(self.spec, self.settings)
        except ModelLoadError as exc:
            self.load_error = str(exc)
            self.ready = False
            log.error("model skipped: it failed to load", extra={"model": self.name, "error": self.load_error})
            return False
        self._attach(backend)
        return True

    def _attach(self, backend: Backend) -> None:
        self._load_attempted = True
        self.backend = backend
        if self.executor is None:
            self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{self.name}")
        self.batcher = DynamicBatcher(
            embed_uploads(backend),
            name=self.name,
            executor=self.executor,
            max_batch_size=self.settings.env.max_batch_size,
            max_wait_s=self.settings.env.max_batch_wait_ms / 1000.0,
            max_queue_size=self.settings.env.max_queue_size,
        )
        self.references = ReferenceStore(self.settings, backend, self._run_on_model_thread)
        self.ready = True

    def start(self) -> None:
        """KServe's default flips ``ready`` to True for every model; readiness here means the backend loaded."""

    def stop(self) -> None:
        self.ready = False

    async def _run_on_model_thread(self, fn: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    # --- metadata ---------------------------------------------------------------------------------------------

    def get_input_types(self) -> list[dict[str, Any]]:
        return [spec.metadata() for spec in contract.INPUTS]

    def get_output_types(self) -> list[dict[str, Any]]:
        dim = self.backend.embedding_dim if self.backend is not None else -1
        # The score outputs, then what only an embed-only request (no uid/cid) returns.
        return [spec.metadata(embedding=dim) for spec in contract.ALL_OUTPUTS]

    # --- inference --------------------------------------------------------------------------------------------

    # kserve runs preprocess -> validate -> predict -> postprocess for every request (``Model.__call__``): the
    # tensors are parsed in preprocess, the batch and the comparison run in predict, and postprocess builds the
    # InferResponse. The core's errors become kserve's at each stage through :func:`kserve_error`.

    async def preprocess(self, payload: InferRequest | dict[str, Any], headers: dict[str, str] | None = None) -> Any:
        """The request's tensors checked and parsed (:class:`Parsed`), and the caller's deadline."""
        received = time.perf_counter()
        if not self.ready or self.batcher is None or self.references is None:
            detail = f"It failed to load: {self.load_error}" if self.load_error else "Its backend is not loaded."
            raise kserve_error(ModelUnavailable(detail), self.name)
        if not isinstance(payload, InferRequest):
            raise InvalidInput(
                f"model {self.name!r} speaks the V2 protocol only: POST /v2/models/{self.name}/infer with inputs "
                f"{AUDIO.describe()}, {UID.describe()} and {CID.describe()}"
            )
        audio, uid, cid = self._parse_inputs(payload)
        _check_requested_outputs(payload, scoring=uid is not None)
        return Parsed(payload, audio, uid, cid, request_deadline(headers, received))

    def validate(self, payload: Any) -> Any:
        """kserve's check is for raw payloads; a :class:`Parsed` request has been checked in preprocess."""
        return payload if isinstance(payload, Parsed) else super().validate(payload)

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        """Batch the clip through the backend and, when scoring, compare it with its reference (:class:`Scored`)."""
        try:
            return await self._score(payload)
        except ScoreError as exc:
            raise kserve_error(exc, self.name) from None

    async def postprocess(
        self, result: Any, headers: dict[str, str] | None = None, response_headers: dict[str, str] | None = None
    ) -> InferResponse:
        """The InferResponse: the outputs asked for (all by default), binary when the request was."""
        request, outputs = result.parsed.request, result.outputs
        sent = {o.name for o in outputs}
        missing = [o.name for o in request.request_outputs or [] if o.name not in sent]
        if missing:  # only the timing outputs can be absent: the reference has no word times
            raise InvalidInput(
                f"output(s) {', '.join(map(repr, missing))} are sent only when the reference clip has word times "
                "(per-word feedback) and a word was said; this answer has none"
            )
        return InferResponse(
            response_id=request.id or str(uuid.uuid4()),
            model_name=self.name,
            infer_outputs=outputs,
            use_binary_outputs=request.use_binary_outputs,
            requested_outputs=request.request_outputs,
        )

    async def _score(self, parsed: Parsed) -> Scored:
        assert self.batcher is not None and self.references is not None  # preprocess refused otherwise
        reference = None
        if parsed.uid is not None and parsed.cid is not None:
            reference = await self.references.get(parsed.uid, parsed.cid)
        # The upload is heard in its reference's language (detected once when the entry was built).
        language = reference.entry.language if reference is not None else None
        texts: tuple[str, ...] = ()
        if reference is not None and self.settings.config.forced_text:
            texts = forced_texts(reference.entry.reference_text, reference.entry.transcript)
        # QueueFull, DeadlineUnreachable, DeadlineExpired are the core's ModelUnavailable.
        features = await self.batcher.submit(Upload(parsed.audio, language, texts), deadline=parsed.deadline)
        guard_outputs = [
            _bool_output("no_speech", features.no_speech),
            _bool_output("looped", features.looped),
            _bytes_output("language", features.language or ""),
        ]

        if reference is None:
            outputs = [
                _bytes_output("transcript", features.transcript),
                _output("embedding", np.asarray(features.embedding, dtype=np.float32).reshape(1, -1), "FP32"),
                *guard_outputs,
            ]
            return Scored(parsed, outputs)
        entry, pool, backend = reference.entry, self.references.pool, self.backend
        assert backend is not None  # attached before the batcher and the references
        # DTW is a few ms of CPU: off the event loop, so other requests keep flowing meanwhile.
        result = await asyncio.to_thread(
            lambda: compare(
                embedding=features.embedding,
                frames=features.frames,
                transcript=features.transcript,
                reference_embedding=entry.embedding,
                reference_frames=reference.frames,
                reference_text=entry.reference_text,
                reference_transcript=entry.transcript,
                audio_similarity_kind=self.settings.config.audio_similarity,
                text_similarity_kind=self.settings.config.text_similarity,
                pool=pool,
                language=features.language,
                no_speech=features.no_speech,
                looped=features.looped,
                # The reference's word times (per-word feedback); entries built before them have none.
                reference_word_times=entry.word_times,
                frame_ms=backend.frame_ms,
                forced_scores=features.forced_scores,
            )
        )
        outputs = [_float_output(name, value) for name, value in result.scores().items()]
        outputs += [
            _bytes_output("transcript", features.transcript),
            _bytes_output("reference_transcript", entry.transcript),
            _bytes_output("audio_similarity", result.audio_similarity),
            _bytes_output("words", result.words_json()),
            _bytes_output("reference_text", entry.reference_text or ""),
            _bytes_output("text_similarity", result.text_similarity),
            *guard_outputs,
        ]
        timing = result.timing()
        if timing:
            outputs.append(_float_output("timing_score", timing["timing_score"]))
            if timing["rate"] is not None:
                outputs.append(_float_output("rate", timing["rate"]))
            outputs.append(_bytes_output("pauses", json.dumps(timing["pauses"], separators=(",", ":"))))
        return Scored(parsed, outputs)

    def _parse_inputs(self, req: InferRequest) -> tuple[np.ndarray, str | None, str | None]:
        by_name: dict[str, InferInput] = {}
        for tensor in req.inputs:
            if tensor.name not in contract.INPUT_NAMES:
                raise InvalidInput(
                    f"unknown input {quote_user_value(tensor.name)}; expected {AUDIO.describe()} and optionally "
                    f"{UID.describe()} and {CID.describe()}"
                )
            if tensor.name in by_name:
                raise InvalidInput(f"input {quote_user_value(tensor.name)} is given twice")
            by_name[tensor.name] = tensor
        if AUDIO.name not in by_name:
            raise InvalidInput(f"missing input {AUDIO.describe()}: {AUDIO.doc}")
        audio = self._parse_audio(by_name["audio"])
        if ("uid" in by_name) != ("cid" in by_name):
            missing = "cid" if "uid" in by_name else "uid"
            raise InvalidInput(f"missing input {missing!r}: give both 'uid' and 'cid' to score, or neither to embed")
        if "uid" not in by_name:
            return audio, None, None
        uid = _parse_id(by_name["uid"])
        cid = _parse_id(by_name["cid"])
        return audio, uid, cid

    def _parse_audio(self, tensor: InferInput) -> np.ndarray:
        rate = self.settings.config.target_sampling_rate
        if tensor.datatype != "FP32":
            raise InvalidInput(f"input 'audio' must be FP32, got {quote_user_value(tensor.datatype)}")
        shape = list(tensor.shape or [])
        if len(shape) != 2 or shape[0] != 1:
            raise InvalidInput(f"input 'audio' must have shape [1, N] (one mono clip), got {quote_user_value(shape)}")
        if shape[1] <= 0:
            raise InvalidInput("input 'audio' is empty: send at least one sample")
        seconds = shape[1] / rate
        if seconds > self.settings.config.max_audio_seconds:
            raise InvalidInput(
                f"input 'audio' is {seconds:.1f} s long ({shape[1]} samples at {rate} Hz); the limit is "
                f"{self.settings.config.max_audio_seconds:g} s"
            )
        try:
            samples = tensor.as_numpy()
        except Exception as exc:  # data length that does not fit the shape, non-numbers in JSON data
            raise InvalidInput(
                f"input 'audio' does not match its shape {quote_user_value(shape)} and datatype FP32: "
                f"{quote_user_value(str(exc), 200)}"
            ) from None
        samples = np.ascontiguousarray(samples, dtype=np.float32).reshape(-1)
        if samples.size != shape[1]:
            raise InvalidInput(f"input 'audio' holds {samples.size} values but its shape says {shape[1]}")
        if not np.isfinite(samples).all():
            raise InvalidInput("input 'audio' holds NaN or infinite values")
        return samples


def _check_requested_outputs(request: InferRequest, *, scoring: bool) -> None:
    """Refuse an unknown requested output before the request takes a place in a batch: the outputs a request can
    return are the contract's score outputs (with uid/cid) or its embed-only outputs (without)."""
    if not request.request_outputs:
        return
    names = (
        set(contract.SCORE_REQUIRED + contract.SCORE_OPTIONAL)
        if scoring
        else set(contract.EMBED_NAMES + contract.EMBED_OPTIONAL)
    )
    unknown = [o.name for o in request.request_outputs if o.name not in names]
    if unknown:
        shown = ", ".join(map(quote_user_value, unknown[:8])) + (" …" if len(unknown) > 8 else "")
        raise InvalidInput(f"unknown output(s) {shown} requested; this request can return {', '.join(sorted(names))}")


def _parse_id(tensor: InferInput) -> str:
    name = tensor.name
    if tensor.datatype != "BYTES":
        raise InvalidInput(f"input {name!r} must be BYTES, got {quote_user_value(tensor.datatype)}")
    if list(tensor.shape or []) != [1]:
        raise InvalidInput(f"input {name!r} must have shape [1], got {quote_user_value(list(tensor.shape or []))}")
    try:
        values = tensor.as_numpy().reshape(-1)
    except Exception as exc:
        raise InvalidInput(
            f"input {name!r} is not a BYTES tensor of shape [1]: {quote_user_value(str(exc), 200)}"
        ) from None
    if values.size != 1:
        raise InvalidInput(f"input {name!r} must hold exactly one string, got {values.size}")
    value = values[0]
    if isinstance(value, bytes | bytearray | np.bytes_):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidInput(f"input {name!r} is not valid UTF-8") from None
    if not isinstance(value, str):
        raise InvalidInput(f"input {name!r} must be a string, got {type(value).__name__}")
    try:
        return validate_id(value, name)
    except InvalidIdentifier as exc:
        raise InvalidInput(str(exc)) from None


def _output(name: str, data: np.ndarray, datatype: str) -> InferOutput:
    # kserve 0.21's InferResponse.to_grpc tests ``if infer_output.data`` for raw outputs, which raises on a numpy
    # array of more than one element (the embedding): those go in as a flat list, which it converts itself.
    values: np.ndarray | list[Any] = data if data.size <= 1 else data.reshape(-1).tolist()
    return InferOutput(name=name, shape=list(data.shape), datatype=datatype, data=values)


def _float_output(name: str, value: float) -> InferOutput:
    return _output(name, np.array([value], dtype=np.float32), "FP32")


def _bool_output(name: str, value: bool) -> InferOutput:
    return _output(name, np.array([value], dtype=np.bool_), "BOOL")


def _bytes_output(name: str, text: str) -> InferOutput:
    return _output(name, np.array([text.encode("utf-8")], dtype=np.object_), "BYTES")
