"""Binary V2 request bodies read straight into numpy: no per-sample Python objects on the event loop.

kserve 0.21's ``InferRequest.from_bytes`` calls ``set_data_from_numpy(tensor.as_numpy(), binary_data=False)`` on
every binary tensor: the raw little-endian samples become a Python list of floats (one object per sample), and
the model's ``as_numpy()`` turns the list back into an array. For a 30 s clip (480,000 samples) that is ~200 ms
on the predictor's single event loop, which caps one predictor at ~5 such requests/s whatever the GPU.

:func:`decode_binary_request` builds the same :class:`InferRequest` but keeps each binary tensor as a zero-copy
``memoryview`` of the received body, handed to kserve through the public ``raw_inputs`` argument (what kserve's
own gRPC path does with ``raw_input_contents``), so ``as_numpy()`` is an ``np.frombuffer`` view: microseconds.
It is plugged in by :mod:`predictors.kserve_patches`' data plane (``DataPlane.decode_inference_request``), the one
hook every REST V2 body passes through. gRPC needs no change: ``InferRequest.from_grpc`` already keeps
``raw_input_contents`` as bytes and ``as_numpy()`` reads them with ``np.frombuffer``.

Every malformed body is :class:`kserve.errors.InvalidInput` (400) with the reason: a header that is not a JSON
object, no ``inputs`` list, a tensor without name/shape/datatype, a ``binary_data_size`` that is not a
non-negative integer, a body shorter than the sizes declared, binary data whose length does not fit its shape
and datatype.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import orjson
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferInput, InferRequest, RequestedOutput
from kserve.utils.numpy_codec import to_np_dtype

from audio_score.contract import INFERENCE_HEADER


def _field(tensor: dict[str, Any], key: str, kind: type | tuple[type, ...], index: int) -> Any:
    value = tensor.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InvalidInput(f"malformed V2 request: input #{index} has no valid {key!r}")
    return value


def _shape(tensor: dict[str, Any], index: int) -> list[int]:
    shape = _field(tensor, "shape", list, index)
    if not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise InvalidInput(f"malformed V2 request: input #{index} has a shape that is not a list of sizes: {shape}")
    return shape


def _named(output: object) -> bool:
    return isinstance(output, dict) and isinstance(output.get("name"), str)


def _binary_size(name: str, parameters: dict[str, Any]) -> int:
    size = parameters.get("binary_data_size")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInput(f"input {name!r}: 'binary_data_size' must be a non-negative integer, got {size!r}")
    return size


def decode_binary_request(body: bytes | bytearray, json_length: int, model_name: str) -> InferRequest:
    """The :class:`InferRequest` of a REST body in the binary tensor extension, binary tensors kept as bytes.

    ``json_length`` is the :data:`~audio_score.contract.INFERENCE_HEADER` header: the JSON part's byte length.
    """
    if json_length < 0 or json_length > len(body):
        raise InvalidInput(
            f"malformed V2 request: {INFERENCE_HEADER} {json_length} is outside the body ({len(body)} bytes)"
        )
    view = memoryview(body)
    try:
        header = orjson.loads(view[:json_length])
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(f"Unrecognized request format: {exc}") from None
    if not isinstance(header, dict):
        raise InvalidInput("malformed V2 request: the JSON header is not an object")
    tensors = header.get("inputs")
    if not isinstance(tensors, list):
        raise InvalidInput("malformed V2 request: the JSON header has no field 'inputs' (a list of tensors)")

    inputs: list[InferInput] = []
    raws: list[memoryview | None] = []
    offset = json_length
    for index, tensor in enumerate(tensors):
        if not isinstance(tensor, dict):
            raise InvalidInput(f"malformed V2 request: input #{index} is not an object")
        name = _field(tensor, "name", str, index)
        shape = _shape(tensor, index)
        datatype = _field(tensor, "datatype", str, index).upper()
        parameters = tensor.get("parameters")
        if parameters is not None and not isinstance(parameters, dict):
            raise InvalidInput(f"malformed V2 request: input {name!r} has 'parameters' that are not an object")
        data = tensor.get("data")
        raw: memoryview | None = None
        if data is not None:
            if datatype == "FP16":
                raise InvalidInput(f"Receiving FP16 data via JSON is not supported; send input {name!r} as binary")
        elif parameters and "binary_data_size" in parameters:
            size = _binary_size(name, parameters)
            end = offset + size
            if end > len(body):
                raise InvalidInput(
                    f"input {name!r}: the body ends {end - len(body)} bytes before its binary_data_size ({size})"
                )
            raw = view[offset:end]
            offset = end
            if datatype != "BYTES":
                dtype = to_np_dtype(datatype)
                if dtype is None:
                    raise InvalidInput(f"input {name!r}: unknown datatype {datatype!r}")
                expected = math.prod(shape) * np.dtype(dtype).itemsize
                if size != expected:
                    raise InvalidInput(
                        f"input {name!r} does not match its shape {shape} and datatype {datatype}: "
                        f"{size} bytes of binary data, {expected} expected"
                    )
        else:
            raise InvalidInput(f"'data' field is missing for input {name!r} for model {model_name!r}")
        inputs.append(InferInput(name=name, shape=shape, datatype=datatype, data=data, parameters=parameters))
        raws.append(raw)

    outputs = header.get("outputs")
    requested = None
    if outputs is not None:
        named = isinstance(outputs, list) and all(_named(o) for o in outputs)
        if not named:
            raise InvalidInput("malformed V2 request: 'outputs' must be a list of objects with a 'name'")
        requested = [RequestedOutput(name=o["name"], parameters=o.get("parameters")) for o in outputs]
    parameters = header.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise InvalidInput("malformed V2 request: the request's 'parameters' are not an object")
    request_id = header.get("id")
    return InferRequest(
        model_name=model_name,
        infer_inputs=inputs,
        request_id=request_id if isinstance(request_id, str) else None,
        # kserve sets inputs[i]._raw_data from this list (None for JSON tensors); from_grpc stays False, so
        # use_binary_outputs still follows the request's own binary_data_output parameter.
        raw_inputs=raws if any(r is not None for r in raws) else None,
        parameters=parameters,
        request_outputs=requested,
    )
