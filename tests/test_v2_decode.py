"""Binary V2 bodies decoded straight into numpy (:mod:`predictors.v2_decode`), through the predictor's data plane:
the same request kserve's decoder builds, with the audio a view of the received bytes, and every malformed body
a 400 (``InvalidInput``) with its reason."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kserve.errors import InvalidInput
from kserve.protocol.dataplane import DataPlane

from audio_score import contract, v2
from predictors.kserve_patches import _safe_dataplane_class
from predictors.v2_decode import decode_binary_request

OURS = _safe_dataplane_class()(model_registry=None)
STOCK = DataPlane(model_registry=None)


def _decode(plane: DataPlane, body: bytes, headers: dict[str, str]):  # type: ignore[no-untyped-def]
    return plane.decode_inference_request(body, {k.lower(): v for k, v in headers.items()}, "m")


def test_score_request_matches_kserves_decoder_and_the_audio_is_a_view_of_the_body() -> None:
    audio = np.random.default_rng(1).normal(0, 0.1, 16000 * 3).astype(np.float32)
    body, headers = v2.build_score_request(audio, "video1", "clip1", request_id="r-1")
    ours, stock = _decode(OURS, body, headers), _decode(STOCK, body, headers)
    assert [t.name for t in ours.inputs] == [t.name for t in stock.inputs] == ["audio", "uid", "cid"]
    for a, b in zip(ours.inputs, stock.inputs, strict=True):
        assert (a.datatype, a.shape) == (b.datatype, b.shape)
        np.testing.assert_array_equal(a.as_numpy(), b.as_numpy())
    assert ours.id == stock.id == "r-1"
    assert ours.use_binary_outputs and stock.use_binary_outputs
    samples = ours.inputs[0].as_numpy()
    # No per-sample Python objects: the samples are the body's own bytes, not a copy (kserve's are a list).
    assert np.shares_memory(samples, np.frombuffer(body, np.uint8))
    assert stock.inputs[0].data is not None and ours.inputs[0].data is None
    assert [str(x) for x in ours.inputs[1].as_numpy()] == [str(x) for x in stock.inputs[1].as_numpy()]


def test_json_tensors_and_requested_outputs_beside_binary_ones() -> None:
    raw = np.array([0.5, -0.5], np.float32).tobytes()
    head = json.dumps(
        {
            "inputs": [
                {"name": "uid", "datatype": "BYTES", "shape": [1], "data": ["video1"]},
                {"name": "audio", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
            ],
            "outputs": [{"name": "sim_score"}],
        }
    ).encode()
    request = decode_binary_request(head + raw, len(head), "m")
    assert request.inputs[0].data == ["video1"]
    np.testing.assert_array_equal(request.inputs[1].as_numpy(), [[0.5, -0.5]])
    assert [o.name for o in request.request_outputs] == ["sim_score"]
    assert not request.use_binary_outputs  # no binary_data_output parameter: JSON outputs, as kserve does


def _head(tensors: object, **extra: object) -> bytes:
    return json.dumps({"inputs": tensors, **extra}).encode()


AUDIO = {"name": "audio", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
BAD = {
    "header not an object": (b"[1, 2]", "not an object"),
    "no inputs": (b'{"inpts": []}', "'inputs'"),
    "tensor not an object": (_head([3]), "not an object"),
    "no name": (_head([{k: v for k, v in AUDIO.items() if k != "name"}]), "'name'"),
    "no shape": (_head([{k: v for k, v in AUDIO.items() if k != "shape"}]), "'shape'"),
    "shape of strings": (_head([{**AUDIO, "shape": ["1", "2"]}]), "list of sizes"),
    "negative size": (_head([{**AUDIO, "parameters": {"binary_data_size": -8}}]), "non-negative"),
    "size not a number": (_head([{**AUDIO, "parameters": {"binary_data_size": "8"}}]), "non-negative"),
    "bytes do not fit the shape": (_head([{**AUDIO, "shape": [1, 3]}]), "does not match its shape"),
    "body shorter than declared": (_head([{**AUDIO, "parameters": {"binary_data_size": 800}}]), "body ends"),
    "neither data nor binary": (_head([{"name": "audio", "datatype": "FP32", "shape": [1, 2]}]), "'data'"),
    "unknown datatype": (_head([{**AUDIO, "datatype": "FP128"}]), "unknown datatype"),
    "outputs not a list": (_head([AUDIO], outputs={"name": "x"}), "'outputs'"),
    "broken json": (b"{nope", "Unrecognized request format"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_malformed_bodies_are_invalid_input_with_a_reason(case: str) -> None:
    head, reason = BAD[case]
    body = head + np.array([0.1, 0.2], np.float32).tobytes()
    with pytest.raises(InvalidInput, match=reason):
        _decode(OURS, body, {contract.INFERENCE_HEADER: str(len(head))})


@pytest.mark.parametrize(
    ("length", "reason"), [("abc", "not a byte count"), ("99999", "outside the body"), ("-1", "not a byte count")]
)
def test_bad_header_lengths_are_invalid_input(length: str, reason: str) -> None:
    head = _head([AUDIO])
    with pytest.raises(InvalidInput, match=reason):
        _decode(OURS, head + bytes(8), {contract.INFERENCE_HEADER: length})
    with pytest.raises(InvalidInput, match="header is missing"):
        _decode(OURS, head + bytes(8), {})


@settings(max_examples=60, deadline=None)
@given(
    samples=st.lists(st.floats(width=32, allow_nan=False), min_size=1, max_size=300),
    uid=st.from_regex(r"[a-z0-9_]{1,20}", fullmatch=True),
)
def test_any_clip_round_trips_exactly_as_kserve_decodes_it(samples: list[float], uid: str) -> None:
    audio = np.array(samples, np.float32)
    body, headers = v2.build_score_request(audio, uid, "clip1")
    ours, stock = _decode(OURS, body, headers), _decode(STOCK, body, headers)
    np.testing.assert_array_equal(ours.inputs[0].as_numpy(), stock.inputs[0].as_numpy())
    np.testing.assert_array_equal(ours.inputs[0].as_numpy().reshape(-1), audio)
    assert ours.inputs[1].as_numpy()[0] == stock.inputs[1].as_numpy()[0] == uid  # sent as JSON data
