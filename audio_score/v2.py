"""A small V2 (Open Inference Protocol) client codec for the predictor: build requests, parse responses.

No kserve, no torch, no HTTP library: the router's image has none of the first two, and callers bring their own
``httpx`` client. The request uses the binary tensor extension (the audio travels as raw little-endian float32
after a JSON header, not as a JSON list of numbers: ~4 bytes a sample instead of ~10, and no JSON parsing of
480,000 floats); the response may be JSON or binary, both are parsed.

Why this framing is written here rather than taken from a library: tritonclient has the same codec
(``InferenceServerClient.generate_request_body`` and ``parse_response_body``), but ``tritonclient.http`` imports
gevent and geventhttpclient, a second networking stack the asyncio router would carry for ~100 lines of framing;
kserve's (``InferRequest.from_bytes``) needs kserve, which the router's image does not have. The tests hold this
codec to both: ``tests/test_predictor_server.py`` talks to a real kserve server with it and with tritonclient.

Typical use (the router)::

    body, headers = build_score_request(samples, uid="video1", cid="clip1")
    response = await client.post(infer_url(base_url, "whisper-small"), content=body, headers=headers)
    if response.status_code != 200:
        raise SomeError(response.status_code, error_message(response.content))
    result = parse_score_response(response.content, response.headers)
    result["sim_score"], result["transcript"]

The tensors are :mod:`audio_score.contract` (scoring with uid/cid, embed-only without). Errors come back as JSON
``{"error": "..."}`` with 400 (bad tensors), 404 (unknown clip or model), 503 (model not ready or queue full).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from audio_score.contract import (
    AUDIO,
    AUDIO_SIMILARITY_KINDS,
    CID,
    EMBED_NAMES,
    EMBED_OPTIONAL,
    INFERENCE_HEADER,
    PAUSE_KEYS,
    SCORE_OPTIONAL,
    SCORE_REQUIRED,
    UID,
    WORD_OPS,
    WORD_TIMING_KEYS,
    kinds_text,
    parse_inference_header,
)

_NP_DTYPES = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


class V2ProtocolError(ValueError):
    """A response body that is not a valid V2 inference response."""


def infer_url(base_url: str, model: str) -> str:
    """``{base_url}/v2/models/{model}/infer`` (a trailing slash on ``base_url`` is fine)."""
    return f"{base_url.rstrip('/')}/v2/models/{model}/infer"


def ready_url(base_url: str, model: str) -> str:
    """``{base_url}/v2/models/{model}/ready``: 200 when the model is loaded, 503 when not, 404 when unknown."""
    return f"{base_url.rstrip('/')}/v2/models/{model}/ready"


def encode_bytes_tensor(values: list[str | bytes]) -> bytes:
    """BYTES elements in the binary extension: each is a 4-byte little-endian length, then the bytes."""
    out = []
    for value in values:
        raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        out.append(struct.pack("<I", len(raw)))
        out.append(raw)
    return b"".join(out)


def decode_bytes_tensor(raw: bytes) -> list[bytes]:
    """The inverse of :func:`encode_bytes_tensor`."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise V2ProtocolError("truncated BYTES tensor")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise V2ProtocolError("truncated BYTES tensor")
        values.append(raw[offset : offset + length])
        offset += length
    return values


def build_infer_request(
    audio: np.ndarray,
    uid: str | None = None,
    cid: str | None = None,
    *,
    request_id: str | None = None,
    binary_outputs: bool = True,
) -> tuple[bytes, dict[str, str]]:
    """Body and headers of ``POST /v2/models/{model}/infer`` for one mono clip.

    ``audio``: 1-D float32 samples at the predictor's ``target_sampling_rate`` (the router decodes with
    :func:`audio_score.audio.decode_audio` first). ``uid``/``cid``: both to score against that reference, neither
    to only embed. ``binary_outputs``: ask for the outputs as raw bytes too (smaller, and exact float32).
    Returns ``(body, headers)``; post ``body`` as ``content=`` with those headers.
    """
    samples = np.ascontiguousarray(np.asarray(audio, dtype="<f4").reshape(-1))
    if (uid is None) != (cid is None):
        raise ValueError("give both uid and cid (to score) or neither (to embed)")
    raw = samples.tobytes()
    inputs: list[dict[str, Any]] = [
        {
            "name": AUDIO.name,
            "datatype": AUDIO.datatype,
            "shape": [1, int(samples.size)],
            "parameters": {"binary_data_size": len(raw)},
        }
    ]
    if uid is not None and cid is not None:
        for spec, value in ((UID, uid), (CID, cid)):
            inputs.append({"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape), "data": [value]})
    header: dict[str, Any] = {"inputs": inputs}
    if request_id:
        header["id"] = request_id
    if binary_outputs:
        header["parameters"] = {"binary_data_output": True}
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    headers = {INFERENCE_HEADER: str(len(head)), "content-type": "application/octet-stream"}
    return head + raw, headers


def build_score_request(audio: np.ndarray, uid: str, cid: str, **kwargs: Any) -> tuple[bytes, dict[str, str]]:
    """:func:`build_infer_request` for scoring (uid and cid required)."""
    return build_infer_request(audio, uid, cid, **kwargs)


def parse_infer_response(body: bytes, headers: Mapping[str, str] | None = None) -> dict[str, np.ndarray]:
    """Every output of a V2 response as a numpy array shaped as declared (BYTES become arrays of ``bytes``).

    Works for JSON responses and for the binary extension (``headers`` must then carry
    :data:`~audio_score.contract.INFERENCE_HEADER`; header names are matched case-insensitively).
    """
    lowered = {k.lower(): v for k, v in (headers or {}).items()}
    try:
        json_length = parse_inference_header(lowered.get(INFERENCE_HEADER))
        head_len = len(body) if json_length is None else json_length
        doc = json.loads(body[:head_len])
    except (ValueError, UnicodeDecodeError) as exc:
        raise V2ProtocolError(f"not a V2 inference response: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("outputs"), list):
        raise V2ProtocolError("not a V2 inference response: no 'outputs' list")
    offset = head_len
    result: dict[str, np.ndarray] = {}
    for out in doc["outputs"]:
        name, datatype, shape = out.get("name"), out.get("datatype"), out.get("shape", [])
        size = (out.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = body[offset : offset + int(size)]
            if len(raw) != int(size):
                raise V2ProtocolError(f"output {name!r}: body shorter than its binary_data_size")
            offset += int(size)
            if datatype == "BYTES":
                array = np.array(decode_bytes_tensor(raw), dtype=np.object_)
            elif datatype in _NP_DTYPES:
                array = np.frombuffer(raw, dtype=np.dtype(_NP_DTYPES[datatype]).newbyteorder("<"))
            else:
                raise V2ProtocolError(f"output {name!r}: unsupported datatype {datatype!r}")
        elif "data" in out:
            if datatype == "BYTES":
                array = np.array([v.encode("utf-8") if isinstance(v, str) else v for v in out["data"]], np.object_)
            elif datatype in _NP_DTYPES:
                array = np.asarray(out["data"], dtype=_NP_DTYPES[datatype])
            else:
                raise V2ProtocolError(f"output {name!r}: unsupported datatype {datatype!r}")
        else:
            raise V2ProtocolError(f"output {name!r} has neither 'data' nor 'binary_data_size'")
        try:
            result[name] = array.reshape(shape)
        except ValueError:
            raise V2ProtocolError(f"output {name!r}: {array.size} values do not fit shape {shape}") from None
    return result


def _text(value: Any) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def parse_score_response(body: bytes, headers: Mapping[str, str] | None = None) -> dict[str, Any]:
    """A scoring response as plain Python: ``sim_score``, ``audio_sim_score``, ``text_sim_score`` (float),
    ``transcript``, ``reference_transcript`` (str), and when sent ``audio_pooled_sim_score``,
    ``audio_aligned_sim_score``, ``word_accuracy`` (float), ``audio_similarity``, ``reference_text``,
    ``text_similarity``, ``language`` (str), ``no_speech``, ``looped`` (bool), ``words`` (list of dicts,
    decoded from its JSON; with the timing keys when sent), ``timing_score``, ``rate`` (float) and ``pauses``
    (list of dicts). An embed-only response gives ``transcript`` (str), ``embedding`` (1-D float32
    array) and when sent ``no_speech``, ``looped``, ``language``. :class:`V2ProtocolError` when an expected
    output is missing or ``words``
    is not a JSON list."""
    outputs = parse_infer_response(body, headers)
    result: dict[str, Any] = {}
    if "embedding" in outputs and "sim_score" not in outputs:
        names: tuple[str, ...] = EMBED_NAMES + tuple(n for n in EMBED_OPTIONAL if n in outputs)
    else:
        names = SCORE_REQUIRED + tuple(n for n in SCORE_OPTIONAL if n in outputs)
    for name in names:
        if name not in outputs:
            raise V2ProtocolError(f"response has no output {name!r} (got {', '.join(outputs) or 'none'})")
        value = outputs[name]
        if name == "embedding":
            result[name] = np.asarray(value, dtype=np.float32).reshape(-1)
        elif name == "words":
            result[name] = _word_list(_text(value.reshape(-1)[0]))
        elif name == "pauses":
            result[name] = _pause_list(_text(value.reshape(-1)[0]))
        elif value.dtype == np.bool_:
            result[name] = bool(value.reshape(-1)[0])
        elif value.dtype == np.object_:
            result[name] = _text(value.reshape(-1)[0])
            if name == "audio_similarity" and result[name] not in AUDIO_SIMILARITY_KINDS:
                kinds = kinds_text(AUDIO_SIMILARITY_KINDS)
                raise V2ProtocolError(f"output 'audio_similarity' is {result[name]!r}, not {kinds}")
        else:
            result[name] = float(value.reshape(-1)[0])
    return result


def _json_list(name: str, text: str) -> list[Any]:
    try:
        items = json.loads(text)
    except ValueError as exc:
        raise V2ProtocolError(f"output {name!r} is not JSON: {exc}") from None
    if not isinstance(items, list):
        raise V2ProtocolError(f"output {name!r} is not a JSON list")
    return items


def _number_or_null(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def _word_list(text: str) -> list[dict[str, Any]]:
    """``words`` checked item by item, so that a malformed one is a protocol error here, not a bad answer later.
    The timing keys (:data:`WORD_TIMING_KEYS`) are kept when an item has them."""
    words = _json_list("words", text)
    out: list[dict[str, Any]] = []
    for item in words:
        if (
            not isinstance(item, dict)
            or item.get("op") not in WORD_OPS
            or not all(isinstance(item.get(k), str | None) for k in ("word", "said"))
            or not all(_number_or_null(item[k]) for k in WORD_TIMING_KEYS[:-1] if k in item)
            or not isinstance(item.get("left_out", False), bool)
        ):
            raise V2ProtocolError(f"output 'words' holds an invalid item: {json.dumps(item)[:200]}")
        word = {"op": item["op"], "word": item.get("word"), "said": item.get("said")}
        word.update({k: item[k] for k in WORD_TIMING_KEYS if k in item})
        out.append(word)
    return out


def _pause_list(text: str) -> list[dict[str, Any]]:
    """``pauses`` checked item by item (:data:`PAUSE_KEYS`)."""
    pauses = _json_list("pauses", text)
    for item in pauses:
        if (
            not isinstance(item, dict)
            or set(item) != set(PAUSE_KEYS)
            or not isinstance(item["word"], str)
            or not isinstance(item["index"], int)
            or not all(_number_or_null(item[k]) and item[k] is not None for k in PAUSE_KEYS[2:])
        ):
            raise V2ProtocolError(f"output 'pauses' holds an invalid item: {json.dumps(item)[:200]}")
    return [{k: item[k] for k in PAUSE_KEYS} for item in pauses]


def error_message(body: bytes) -> str:
    """The reason in a predictor's error body (KServe: ``{"error": ...}``; FastAPI: ``{"detail": ...}``)."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return body[:500].decode("utf-8", "replace")
    if isinstance(doc, dict):
        for key in ("error", "detail", "message"):
            if key in doc:
                value = doc[key]
                return value if isinstance(value, str) else json.dumps(value)
    return json.dumps(doc)[:500]
