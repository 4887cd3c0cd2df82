"""The few places the predictor reaches into kserve beyond its public Model / ModelServer API, in one module.

Checked against kserve 0.21.0 (pyproject pins ``kserve>=0.21,<0.22``); re-check each one when moving the pin.
Each exists because kserve offers no public hook for it:

- :func:`install_safe_dataplane`: ``ModelServer.dataplane`` replaced by a subclass whose
  ``decode_inference_request`` reads binary-extension bodies straight into numpy views
  (:mod:`predictors.v2_decode`: kserve's own turns every sample into a Python float, ~10x slower for 30 s of
  audio) and answers a malformed body 400 instead of kserve's 500. Both servers read ``server.dataplane`` when
  they start, so it is set between construction and ``start``.
- :func:`raise_grpc_message_limit`: kserve sizes gRPC messages from ``model_server.args`` (8 MiB by default,
  fixed at import from the command line); the longest allowed upload needs more.
- :func:`answer_unavailable_with_retry_after`: an exception handler on kserve's REST app
  (``kserve.model_server.app``) so the model's 503s carry ``Retry-After`` and skip kserve's traceback log line.
"""

from __future__ import annotations

import struct
from typing import Any


def _decode_binary(body: bytes | bytearray, headers: dict[str, str], model_name: str) -> Any:
    """A binary-extension body through :func:`predictors.v2_decode.decode_binary_request` (numpy views, no
    per-sample lists), the header length checked first."""
    from kserve.errors import InvalidInput

    from audio_score.contract import INFERENCE_HEADER, parse_inference_header
    from predictors.v2_decode import decode_binary_request

    try:
        json_length = parse_inference_header(headers.get(INFERENCE_HEADER))
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None
    if json_length is None:
        raise InvalidInput(f"received byte inputs, but the '{INFERENCE_HEADER}' header is missing")
    return decode_binary_request(body, json_length, model_name)


def _safe_dataplane_class() -> type:
    """KServe's DataPlane, with binary bodies read straight into numpy and malformed ones a 400, not a 500.

    ``InferRequest.from_bytes`` turns each binary tensor into a Python list (see :mod:`predictors.v2_decode`)
    and indexes the JSON header without checks, so a header missing ``inputs`` or a tensor's ``shape`` raised
    KeyError (500), and a non-numeric :data:`~audio_score.contract.INFERENCE_HEADER` ValueError. Binary bodies go
    through :func:`predictors.v2_decode.decode_binary_request` instead; JSON bodies keep kserve's decoder.
    """
    from kserve.errors import InvalidInput
    from kserve.protocol.dataplane import DataPlane

    class SafeDataPlane(DataPlane):
        def decode_inference_request(self, body, headers, model_name):
            try:
                if isinstance(body, bytes | bytearray):
                    return _decode_binary(body, headers, model_name)
                return super().decode_inference_request(body, headers, model_name)
            except InvalidInput:
                raise
            except KeyError as exc:
                raise InvalidInput(f"malformed V2 request: the JSON header has no field {exc}") from None
            except (ValueError, TypeError, IndexError, AttributeError, struct.error) as exc:
                raise InvalidInput(f"malformed V2 request: {type(exc).__name__}: {exc}") from None

    return SafeDataPlane


async def _unavailable_handler(_request: Any, exc: Exception) -> Any:
    """REST answer of :class:`predictors.model.Unavailable`: 503 ``{"error": ...}`` as kserve's, plus
    ``Retry-After`` when the batcher estimated one, and without kserve's traceback log line per refusal (metrics
    count them)."""
    import math

    from fastapi.responses import JSONResponse

    retry_after = getattr(exc, "retry_after_s", None)
    headers = {"Retry-After": str(max(1, math.ceil(retry_after)))} if retry_after is not None else None
    return JSONResponse(status_code=503, content={"error": str(exc)}, headers=headers)


def install_safe_dataplane(server: Any) -> None:
    """Give ``server`` (a ``kserve.ModelServer``, not started yet) the data plane of :func:`_safe_dataplane_class`."""
    server.dataplane = _safe_dataplane_class()(model_registry=server.registered_models)


def raise_grpc_message_limit(needed: int) -> None:
    """At least ``needed`` bytes for gRPC messages both ways (kserve reads these args when its gRPC server starts)."""
    from kserve import model_server

    for name in ("grpc_max_receive_message_length", "grpc_max_send_message_length"):
        if getattr(model_server.args, name, 0) < needed:
            setattr(model_server.args, name, needed)


def answer_unavailable_with_retry_after(exc_type: type[Exception]) -> None:
    """REST answers of ``exc_type`` through :func:`_unavailable_handler` on kserve's REST app."""
    from kserve import model_server

    model_server.app.add_exception_handler(exc_type, _unavailable_handler)
