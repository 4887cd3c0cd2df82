"""The real predictor (``audio-score predictor``, KServe's ModelServer) on loopback ports with tiny models.

One server serves both tiny models against a cache filled by the real ``audio-score cache-build``; every V2
client path is exercised: REST JSON, REST binary (raw httpx with :mod:`audio_score.v2`, kserve's REST client,
tritonclient's HTTP client) and gRPC (kserve's client, tritonclient's).
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from audio_score import v2
from audio_score.cache import ReferenceCache
from audio_score.similarity import text_similarity
from audio_score.textnorm import tokens
from audio_score.words import align_words
from audio_score_tools.workspace import Workspace

MODEL = "whisper-tiny"
OWN = ("video1", "clip1")
OTHER = ("video2", "clip1")  # the flat layout: clips/video2_clip1.mov
ON_DEMAND = ("video1", "clip2")  # its whisper-tiny entry is deleted after the cache build
TIMEOUT = httpx.Timeout(120.0)
FLOAT_OUTPUTS = (
    "sim_score",
    "audio_sim_score",
    "text_sim_score",
    "audio_pooled_sim_score",
    "audio_aligned_sim_score",
    "word_accuracy",
    "text_transcript_score",
    "text_forced_score",
)
STRING_OUTPUTS = (
    "transcript",
    "reference_transcript",
    "audio_similarity",
    "words",
    "reference_text",
    "text_similarity",
    "language",
)
BOOL_OUTPUTS = ("no_speech", "looped")
#: Sent only when the reference entry has word times (per-word feedback).
TIMING_OUTPUTS = {"timing_score": "FP32", "rate": "FP32", "pauses": "BYTES"}


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, _workspace_template: Workspace) -> Workspace:
    """A workspace whose cache the real CLI filled; one entry then removed to test on-demand builds."""
    from audio_score.cli import main

    ws = _workspace_template.copy_to(tmp_path_factory.mktemp("predictor") / "ws")
    assert main(["cache-build", "--config", str(ws.config_path), "--no-progress"]) == 0
    cache = ReferenceCache(ws.cache_dir, MODEL)
    assert cache.read(*ON_DEMAND) is not None
    shutil.rmtree(cache.entry_dir(*ON_DEMAND))
    return ws


@pytest.fixture(scope="module")
def server(ws: Workspace, start_predictor):  # type: ignore[no-untyped-def]
    # A generous batch wait so that concurrent requests reliably meet in one batch on a busy CI machine.
    env = {"AUDIO_SCORE_MAX_BATCH_WAIT_MS": "150", "AUDIO_SCORE_MAX_BATCH_SIZE": "8"}
    with start_predictor(ws.config_path, ready_models=[MODEL, "higgs-tiny"], env=env) as proc:
        yield proc


def decoded(ws: Workspace, key: tuple[str, str]) -> np.ndarray:
    """The clip decoded exactly as the router decodes an upload (and the cache Job a clip)."""
    from audio_score.audio import decode_audio

    return decode_audio(ws.clips[key], sampling_rate=16000)


def json_body(audio: np.ndarray, uid: str | None = None, cid: str | None = None) -> dict[str, object]:
    inputs: list[dict[str, object]] = [
        {"name": "audio", "datatype": "FP32", "shape": [1, int(audio.size)], "data": audio.tolist()}
    ]
    if uid is not None:
        inputs += [
            {"name": "uid", "datatype": "BYTES", "shape": [1], "data": [uid]},
            {"name": "cid", "datatype": "BYTES", "shape": [1], "data": [cid]},
        ]
    return {"inputs": inputs}


def outputs_of(response: httpx.Response) -> dict[str, object]:
    return {o["name"]: o["data"] for o in response.json()["outputs"]}


def post_binary(server, audio: np.ndarray, uid=None, cid=None, model=MODEL) -> httpx.Response:  # type: ignore[no-untyped-def]
    body, headers = v2.build_infer_request(audio, uid, cid)
    return httpx.post(v2.infer_url(server.http_url, model), content=body, headers=headers, timeout=TIMEOUT)


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{re.escape(name)}(?:\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', match.group(1) or ""))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(match.group(2))
    return total


# --- metadata and health ---------------------------------------------------------------------------------------


def test_metadata_and_readiness(server) -> None:  # type: ignore[no-untyped-def]
    meta = httpx.get(f"{server.http_url}/v2/models/{MODEL}", timeout=TIMEOUT).json()
    assert {(i["name"], i["datatype"], tuple(i["shape"])) for i in meta["inputs"]} == {
        ("audio", "FP32", (1, -1)),
        ("uid", "BYTES", (1,)),
        ("cid", "BYTES", (1,)),
    }
    outputs = {o["name"]: (o["datatype"], o["shape"]) for o in meta["outputs"]}
    for name in FLOAT_OUTPUTS:
        assert outputs[name] == ("FP32", [1])
    for name in STRING_OUTPUTS:
        assert outputs[name] == ("BYTES", [1])
    for name in BOOL_OUTPUTS:
        assert outputs[name] == ("BOOL", [1])
    for name, datatype in TIMING_OUTPUTS.items():
        assert outputs[name] == (datatype, [1])
    assert set(outputs) == {*FLOAT_OUTPUTS, *STRING_OUTPUTS, *BOOL_OUTPUTS, *TIMING_OUTPUTS, "embedding"}
    assert outputs["embedding"] == ("FP32", [1, 64])
    for key in (MODEL, "higgs-tiny"):
        ready = httpx.get(v2.ready_url(server.http_url, key), timeout=TIMEOUT)
        assert ready.status_code == 200 and ready.json()["ready"] is True
    assert httpx.get(f"{server.http_url}/v2/health/ready", timeout=TIMEOUT).status_code == 200
    assert httpx.get(v2.ready_url(server.http_url, "nope"), timeout=TIMEOUT).status_code == 404
    assert sorted(httpx.get(f"{server.http_url}/v2/models", timeout=TIMEOUT).json()["models"]) == [
        "higgs-tiny",
        MODEL,
    ]


# --- scoring over every client --------------------------------------------------------------------------------


def test_own_clip_scores_one_over_rest_json(server, ws) -> None:  # type: ignore[no-untyped-def]
    audio = decoded(ws, OWN)
    response = httpx.post(f"{server.http_url}/v2/models/{MODEL}/infer", json=json_body(audio, *OWN), timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    out = outputs_of(response)
    assert out["audio_sim_score"][0] == pytest.approx(1.0, abs=1e-4)
    assert out["text_sim_score"][0] == pytest.approx(1.0)
    assert out["sim_score"][0] == pytest.approx(1.0, abs=1e-4)
    entry = ReferenceCache(ws.cache_dir, MODEL).read(*OWN)
    assert entry is not None
    assert out["reference_transcript"] == [entry.transcript]
    assert out["transcript"] == [entry.transcript]
    assert out["no_speech"] == [entry.no_speech] and out["language"] == [entry.language]  # JSON: BOOL as true/false


def test_own_clip_scores_one_over_rest_binary_and_other_clip_less(server, ws) -> None:  # type: ignore[no-untyped-def]
    own = post_binary(server, decoded(ws, OWN), *OWN)
    assert own.status_code == 200, own.text
    assert v2.INFERENCE_HEADER in own.headers  # the outputs came back binary, as asked
    result = v2.parse_score_response(own.content, own.headers)
    assert result["audio_sim_score"] == pytest.approx(1.0, abs=1e-4)
    assert result["text_sim_score"] == pytest.approx(1.0)

    other = post_binary(server, decoded(ws, OTHER), *OWN)
    assert other.status_code == 200, other.text
    worse = v2.parse_score_response(other.content, other.headers)
    assert worse["audio_sim_score"] < 0.999
    assert worse["sim_score"] < result["sim_score"]
    assert 0.0 <= worse["audio_sim_score"] <= 1.0 and 0.0 <= worse["text_sim_score"] <= 1.0


def expected_sim(result: dict, audio: str) -> float:
    """sim_score by docs/architecture.md "Scores": the mean of the two halves, or the audio half alone when the
    decoder cut a loop or heard no words (tiny random weights often do either)."""
    reliable = not result["looped"] and bool(tokens(result["transcript"], result["language"] or None))
    text_counted = reliable or result.get("text_forced_score") is not None
    return (result[audio] + result["text_sim_score"]) / 2 if text_counted else result[audio]


def test_feedback_fields_of_an_own_clip_and_another(server, ws) -> None:  # type: ignore[no-untyped-def]
    own = post_binary(server, decoded(ws, OWN), *OWN)
    assert own.status_code == 200, own.text
    result = v2.parse_score_response(own.content, own.headers)
    assert set(result) - set(TIMING_OUTPUTS) == {*FLOAT_OUTPUTS, *STRING_OUTPUTS, *BOOL_OUTPUTS}
    # The upload is heard in the language detected in its reference when the entry was built.
    entry = ReferenceCache(ws.cache_dir, MODEL).read(*OWN)
    assert entry is not None and entry.language is not None
    assert result["language"] == entry.language
    assert result["no_speech"] is entry.no_speech and result["looped"] is entry.looped
    assert isinstance(result["text_similarity"], str) and result["text_similarity"]  # the configured kind
    assert result["audio_aligned_sim_score"] == 1.0  # the same frames: exactly one
    assert result["audio_pooled_sim_score"] == pytest.approx(1.0, abs=1e-4)
    assert result["audio_similarity"] == "aligned"  # the default: it feeds audio_sim_score
    assert result["audio_sim_score"] == result["audio_aligned_sim_score"]
    assert result["word_accuracy"] == 1.0
    assert result["reference_text"] == ""  # no text file beside this clip: the transcript is the reference
    marks = [{k: w[k] for k in ("op", "word", "said")} for w in result["words"]]
    assert marks == align_words(result["transcript"], result["reference_transcript"]).as_list()
    assert all(w["op"] == "match" for w in result["words"])

    other = post_binary(server, decoded(ws, OTHER), *OWN)
    worse = v2.parse_score_response(other.content, other.headers)
    for name in FLOAT_OUTPUTS:
        assert 0.0 <= worse[name] <= 1.0, name
    assert worse["audio_aligned_sim_score"] < 1.0
    assert worse["sim_score"] == pytest.approx(expected_sim(worse, "audio_aligned_sim_score"), abs=1e-6)
    expected = align_words(worse["transcript"], worse["reference_transcript"])
    assert [{k: w[k] for k in ("op", "word", "said")} for w in worse["words"]] == expected.as_list()
    assert worse["word_accuracy"] == pytest.approx(expected.word_accuracy, abs=1e-6)


def test_per_word_feedback_follows_the_entrys_word_times(server, ws) -> None:  # type: ignore[no-untyped-def]
    """With the reference's word times in its entry, the own clip gets every word on its own timeline with audio
    score 1.0 and perfect timing; an entry without them (built before they existed) is answered as before."""
    entry = ReferenceCache(ws.cache_dir, MODEL).read(*OWN)
    assert entry is not None
    times = getattr(entry, "word_times", None)
    own = post_binary(server, decoded(ws, OWN), *OWN)
    assert own.status_code == 200, own.text
    result = v2.parse_score_response(own.content, own.headers)
    body = {**json_body(decoded(ws, OWN), *OWN), "outputs": [{"name": "timing_score"}, {"name": "sim_score"}]}
    asked = httpx.post(f"{server.http_url}/v2/models/{MODEL}/infer", json=body, timeout=TIMEOUT)
    if times is None or not result["words"]:
        assert not set(TIMING_OUTPUTS) & set(result)
        assert all(set(w) == {"op", "word", "said"} for w in result["words"])
        # Asked for by name, it is a 400 that says why, never a 500.
        assert asked.status_code == 400 and "word times" in asked.json()["error"], asked.text
        return
    assert asked.status_code == 200 and set(outputs_of(asked)) == {"timing_score", "sim_score"}
    assert result["timing_score"] == 1.0 and result["rate"] == 1.0 and result["pauses"] == []
    spans = [x for t in times.words for x in (t.start, t.end)]
    assert [x for w in result["words"] for x in (w["ref_start"], w["ref_end"])] == pytest.approx(spans, abs=1e-3)
    assert all(w["audio_score"] == 1.0 and w["lag"] == 0.0 and not w["left_out"] for w in result["words"])


def test_higgs_model_scores_its_own_clip(server, ws) -> None:  # type: ignore[no-untyped-def]
    response = post_binary(server, decoded(ws, OTHER), *OTHER, model="higgs-tiny")
    assert response.status_code == 200, response.text
    result = v2.parse_score_response(response.content, response.headers)
    assert result["audio_sim_score"] == pytest.approx(1.0, abs=1e-4)
    assert result["text_sim_score"] == pytest.approx(1.0)


def test_kserve_rest_client_json_and_binary(server, ws) -> None:  # type: ignore[no-untyped-def]
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    audio = decoded(ws, OWN)

    async def call(binary: bool) -> dict[str, np.ndarray]:
        tensors = [
            InferInput("audio", [1, audio.size], "FP32"),
            InferInput("uid", [1], "BYTES"),
            InferInput("cid", [1], "BYTES"),
        ]
        tensors[0].set_data_from_numpy(audio.reshape(1, -1), binary_data=binary)
        tensors[1].set_data_from_numpy(np.array([b"video1"], dtype=np.object_), binary_data=binary)
        tensors[2].set_data_from_numpy(np.array([b"clip1"], dtype=np.object_), binary_data=binary)
        request = InferRequest(model_name=MODEL, infer_inputs=tensors, parameters={"binary_data_output": binary})
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        try:
            response = await client.infer(server.http_url, request, model_name=MODEL)
        finally:
            await client.close()
        return {o.name: o.as_numpy() for o in response.outputs}

    for binary in (False, True):
        out = asyncio.run(call(binary))
        assert float(out["audio_sim_score"][0]) == pytest.approx(1.0, abs=1e-4)
        assert float(out["text_sim_score"][0]) == pytest.approx(1.0)
        transcript = out["transcript"][0]
        assert isinstance(transcript, bytes | str)


def test_tritonclient_http(server, ws) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.http as httpclient

    audio = decoded(ws, OWN).reshape(1, -1)
    client = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"), network_timeout=120)
    try:
        assert client.is_model_ready(MODEL)
        inputs = [
            httpclient.InferInput("audio", list(audio.shape), "FP32"),
            httpclient.InferInput("uid", [1], "BYTES"),
            httpclient.InferInput("cid", [1], "BYTES"),
        ]
        inputs[0].set_data_from_numpy(audio, binary_data=True)
        inputs[1].set_data_from_numpy(np.array([b"video1"], dtype=np.object_), binary_data=False)
        inputs[2].set_data_from_numpy(np.array([b"clip1"], dtype=np.object_), binary_data=True)
        outputs = [httpclient.InferRequestedOutput(n, binary_data=True) for n in ("sim_score", "reference_transcript")]
        result = client.infer(MODEL, inputs, outputs=outputs)
        assert float(result.as_numpy("sim_score")[0]) == pytest.approx(1.0, abs=1e-4)
        assert (
            result.as_numpy("reference_transcript")[0]
            == ReferenceCache(ws.cache_dir, MODEL).read(*OWN).transcript.encode()
        )
        assert result.as_numpy("transcript") is None  # only the requested outputs come back
    finally:
        client.close()


def test_an_unknown_requested_output_is_refused_before_the_model(server, ws) -> None:  # type: ignore[no-untyped-def]
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    audio = decoded(ws, OWN).reshape(1, -1)
    client = httpclient.InferenceServerClient(url=server.http_url.removeprefix("http://"), network_timeout=120)
    batches = lambda: metric(  # noqa: E731
        httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT).text,
        "audio_score_predictor_batch_size_count",
        model=MODEL,
    )
    try:
        before = batches()
        for ids, wanted in (((b"video1", b"clip1"), "embedding"), (None, "sim_score"), (None, "no_such_output")):
            inputs = [httpclient.InferInput("audio", list(audio.shape), "FP32")]
            inputs[0].set_data_from_numpy(audio, binary_data=True)
            if ids:
                for name, value in zip(("uid", "cid"), ids, strict=True):
                    inputs.append(httpclient.InferInput(name, [1], "BYTES"))
                    inputs[-1].set_data_from_numpy(np.array([value], dtype=np.object_), binary_data=False)
            with pytest.raises(InferenceServerException) as refused:
                client.infer(MODEL, inputs, outputs=[httpclient.InferRequestedOutput(wanted)])
            assert "unknown output" in str(refused.value) and repr(wanted) in str(refused.value)
        assert batches() == before  # refused while parsing: no batch ran for any of them
    finally:
        client.close()


def test_grpc_kserve_client(server, ws) -> None:  # type: ignore[no-untyped-def]
    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    audio = decoded(ws, OWN).reshape(1, -1)

    def tensors(uid: bytes) -> list[InferInput]:
        items = [
            InferInput("audio", list(audio.shape), "FP32"),
            InferInput("uid", [1], "BYTES"),
            InferInput("cid", [1], "BYTES"),
        ]
        items[0].set_data_from_numpy(audio)
        items[1].set_data_from_numpy(np.array([uid], dtype=np.object_))
        items[2].set_data_from_numpy(np.array([b"clip1"], dtype=np.object_))
        return items

    async def calls() -> tuple[dict[str, np.ndarray], grpc.aio.AioRpcError]:
        client = InferenceGRPCClient(url=server.grpc_address, timeout=120)
        try:
            assert await client.is_model_ready(MODEL)
            response = await client.infer(InferRequest(model_name=MODEL, infer_inputs=tensors(b"video1")))
            with pytest.raises(grpc.aio.AioRpcError) as missing:
                await client.infer(InferRequest(model_name=MODEL, infer_inputs=tensors(b"no-such-video")))
        finally:
            await client.close()
        return {o.name: o.as_numpy() for o in response.outputs}, missing.value

    out, missing = asyncio.run(calls())
    assert float(out["audio_sim_score"][0]) == pytest.approx(1.0, abs=1e-4)
    assert float(out["text_sim_score"][0]) == pytest.approx(1.0)
    assert missing.code() == grpc.StatusCode.NOT_FOUND
    assert "no-such-video" in missing.details() and "clip1" in missing.details()


#: tritonclient's gRPC stubs and kserve's register the same protobuf names, so they cannot share a process: the
#: tritonclient gRPC check runs in its own (as a real client would).
TRITON_GRPC = """
import json, sys
import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

address, audio_path = sys.argv[1], sys.argv[2]
audio = np.load(audio_path).reshape(1, -1)
client = grpcclient.InferenceServerClient(url=address)
out = {"ready": client.is_model_ready("whisper-tiny")}
out["inputs"] = [i["name"] for i in client.get_model_metadata("whisper-tiny", as_json=True)["inputs"]]
inputs = [
    grpcclient.InferInput("audio", list(audio.shape), "FP32"),
    grpcclient.InferInput("uid", [1], "BYTES"),
    grpcclient.InferInput("cid", [1], "BYTES"),
]
inputs[0].set_data_from_numpy(audio)
inputs[1].set_data_from_numpy(np.array([b"video1"], dtype=np.object_))
inputs[2].set_data_from_numpy(np.array([b"clip1"], dtype=np.object_))
result = client.infer("whisper-tiny", inputs, client_timeout=120)
out["sim_score"] = float(result.as_numpy("sim_score")[0])
out["text_sim_score"] = float(result.as_numpy("text_sim_score")[0])
out["transcript"] = result.as_numpy("transcript")[0].decode()
bad = [grpcclient.InferInput("audio", [1, 3], "FP32")]
bad[0].set_data_from_numpy(np.array([[0.1, np.nan, 0.2]], dtype=np.float32))
try:
    client.infer("whisper-tiny", bad, client_timeout=120)
except InferenceServerException as exc:
    out["bad_status"], out["bad_message"] = exc.status(), exc.message()
print(json.dumps(out))
"""


def test_grpc_tritonclient(server, ws, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    audio_path = tmp_path / "audio.npy"
    np.save(audio_path, decoded(ws, OWN))
    done = subprocess.run(
        [sys.executable, "-c", TRITON_GRPC, server.grpc_address, str(audio_path)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["ready"] is True and out["inputs"] == ["audio", "uid", "cid"]
    assert out["sim_score"] == pytest.approx(1.0, abs=1e-4)
    assert out["text_sim_score"] == pytest.approx(1.0)
    assert out["transcript"] == ReferenceCache(ws.cache_dir, MODEL).read(*OWN).transcript
    assert out["bad_status"] == "StatusCode.INVALID_ARGUMENT"
    assert "NaN" in out["bad_message"]


# --- embed-only, on-demand build, errors ------------------------------------------------------------------------


def test_embed_only_without_uid_and_cid(server, ws) -> None:  # type: ignore[no-untyped-def]
    response = post_binary(server, decoded(ws, OWN))
    assert response.status_code == 200, response.text
    outputs = v2.parse_infer_response(response.content, response.headers)
    assert set(outputs) == {"transcript", "embedding", *BOOL_OUTPUTS, "language"}
    assert outputs["embedding"].shape == (1, 64) and outputs["embedding"].dtype == np.float32
    assert outputs["transcript"].shape == (1,)
    # the guard's flags travel as BOOL (binary extension); the tiny multilingual model detects some language
    assert outputs["no_speech"].dtype == np.bool_ and outputs["looped"].shape == (1,)
    assert outputs["language"][0].decode() in {"en", "es", "fr", "de", "it", "pt", "ja", "zh"}
    entry = ReferenceCache(ws.cache_dir, MODEL).read(*OWN)
    assert np.allclose(outputs["embedding"][0], entry.embedding, atol=1e-4)


def test_missing_entry_is_built_on_demand_and_written(server, ws) -> None:  # type: ignore[no-untyped-def]
    cache = ReferenceCache(ws.cache_dir, MODEL)
    assert cache.read(*ON_DEMAND) is None
    response = post_binary(server, decoded(ws, ON_DEMAND), *ON_DEMAND)
    assert response.status_code == 200, response.text
    result = v2.parse_score_response(response.content, response.headers)
    entry = cache.read(*ON_DEMAND)
    assert entry is not None, "the predictor did not write the entry it built"
    assert entry.meta["source"]["path"] == str(ws.clips[ON_DEMAND])
    assert entry.word_times is not None  # built on demand through the Job's code path, word times included
    assert result["reference_transcript"] == entry.transcript
    assert result["audio_sim_score"] == pytest.approx(1.0, abs=1e-4)


def test_unknown_clip_is_404_naming_uid_and_cid(server) -> None:  # type: ignore[no-untyped-def]
    response = post_binary(server, np.zeros(1600, np.float32) + 0.01, "video9", "clip7")
    assert response.status_code == 404
    message = v2.error_message(response.content)
    assert "video9" in message and "clip7" in message
    unknown_model = post_binary(server, np.zeros(1600, np.float32), model="no-such-model")
    assert unknown_model.status_code == 404


def _audio(values: list[float] | None = None) -> dict[str, object]:
    values = [0.1, -0.1, 0.2] if values is None else values
    return {"name": "audio", "datatype": "FP32", "shape": [1, len(values)], "data": values}


def _id(name: str, value: object, datatype: str = "BYTES", shape: list[int] | None = None) -> dict[str, object]:
    return {"name": name, "datatype": datatype, "shape": shape or [1], "data": [value]}


BAD_JSON = {
    "no audio": ([_id("uid", "video1"), _id("cid", "clip1")], "missing input 'audio'"),
    "wrong dtype": ([{**_audio(), "datatype": "FP64"}], "must be FP32"),
    "wrong shape": ([{**_audio(), "shape": [3]}], "shape [1, N]"),
    "two channels": ([{**_audio([0.1] * 4), "shape": [2, 2]}], "shape [1, N]"),
    "data does not fit shape": ([{**_audio(), "shape": [1, 5]}], "does not match"),
    "not numbers": ([_audio(["a", "b"])], "does not match"),  # type: ignore[list-item]
    "empty": ([_audio([])], "empty"),
    "too long": ([{**_audio([0.0]), "shape": [1, 16000 * 31]}], "limit is 30 s"),
    "uid without cid": ([_audio(), _id("uid", "video1")], "missing input 'cid'"),
    "path in uid": ([_audio(), _id("uid", "../etc"), _id("cid", "clip1")], "invalid uid"),
    "uid not bytes": ([_audio(), _id("uid", 3, "INT32"), _id("cid", "clip1")], "must be BYTES"),
    "unknown input": ([_audio(), _id("speaker", "x")], "unknown input 'speaker'"),
    # A caller's value is echoed as a short quoted prefix: never whole, never with its newlines.
    "1 MB uid": ([_audio(), _id("uid", "u\n" * 500_000), _id("cid", "clip1")], "invalid uid 'u\\nu\\n"),
    "long input name": ([_audio(), _id("s" * 100_000, "x")], "(100000 chars)"),
    "long shape": ([{**_audio(), "shape": [1] * 50_000}], "shape [1, N] (one mono clip), got [1, 1,"),
    "long datatype": ([{**_audio(), "datatype": "F" * 50_000}], "must be FP32, got 'FFF"),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_tensors_are_400_with_a_reason(server, case: str) -> None:  # type: ignore[no-untyped-def]
    inputs, reason = BAD_JSON[case]
    response = httpx.post(f"{server.http_url}/v2/models/{MODEL}/infer", json={"inputs": inputs}, timeout=TIMEOUT)
    assert response.status_code == 400, (case, response.status_code, response.text)
    message = v2.error_message(response.content)
    assert reason in message and len(message) < 600, (case, message[:1000])


def test_bad_binary_bodies_are_4xx_never_500(server) -> None:  # type: ignore[no-untyped-def]
    url = f"{server.http_url}/v2/models/{MODEL}/infer"
    nan = np.array([0.1, np.inf], np.float32).tobytes()
    head = json.dumps(
        {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}]}
    ).encode()
    short_head = json.dumps(
        {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 16}}]}
    ).encode()
    cases = {
        "non-finite": (head + nan, {v2.INFERENCE_HEADER: str(len(head))}),
        "body shorter than declared": (short_head + nan, {v2.INFERENCE_HEADER: str(len(short_head))}),
        "header without inputs": (b'{"inpts": []}', {v2.INFERENCE_HEADER: "13"}),
        "tensor without shape": (b'{"inputs": [{"name": "audio"}]}', {v2.INFERENCE_HEADER: "31"}),
        "header length not a number": (head + nan, {v2.INFERENCE_HEADER: "abc"}),
        "no header length": (head + nan, {"content-type": "application/octet-stream"}),
        "broken json": (b"{nope", {"content-type": "application/json"}),
    }
    for case, (body, headers) in cases.items():
        response = httpx.post(url, content=body, headers=headers, timeout=TIMEOUT)
        assert 400 <= response.status_code < 500, (case, response.status_code, response.text)


# --- batching ------------------------------------------------------------------------------------------------------


def test_concurrent_requests_are_batched_with_unbatched_results(server, ws) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    base = [decoded(ws, key) for key in sorted(ws.clips)]
    # Six distinct inputs: the clips, and the clips with a little noise.
    audios = base + [(a + rng.normal(0, 0.01, a.size)).astype(np.float32) for a in base]

    def embed(audio: np.ndarray) -> tuple[str, np.ndarray]:
        response = post_binary(server, audio)
        assert response.status_code == 200, response.text
        result = v2.parse_score_response(response.content, response.headers)
        return result["transcript"], result["embedding"]

    before = httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT).text
    alone = [embed(a) for a in audios]  # one at a time: batches of one
    middle = httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT).text
    with ThreadPoolExecutor(max_workers=len(audios)) as pool:
        together = list(pool.map(embed, audios))
    after = httpx.get(f"{server.http_url}/metrics", timeout=TIMEOUT).text

    def batches(text: str) -> tuple[float, float]:
        count = metric(text, "audio_score_predictor_batch_size_count", model=MODEL)
        singles = metric(text, "audio_score_predictor_batch_size_bucket", model=MODEL, le="1.0")
        return count, singles

    (c0, s0), (c1, s1), (c2, s2) = batches(before), batches(middle), batches(after)
    assert c1 - c0 == len(audios) and s1 - s0 == len(audios)  # sequential requests ran alone
    multi = (c2 - c1) - (s2 - s1)
    assert multi >= 1, f"no batch of more than one request formed: {c2 - c1} batches for {len(audios)} requests"
    assert c2 - c1 < len(audios)
    assert metric(after, "audio_score_predictor_batch_size_sum", model=MODEL) - metric(
        middle, "audio_score_predictor_batch_size_sum", model=MODEL
    ) == len(audios)
    for (text_a, emb_a), (text_b, emb_b) in zip(alone, together, strict=True):
        assert text_a == text_b
        assert np.allclose(emb_a, emb_b, atol=1e-3, rtol=1e-3)
    # The other series are exposed on KServe's own /metrics too.
    for name in (
        "audio_score_predictor_queue_wait_seconds_count",
        "audio_score_predictor_backend_seconds_count",
    ):
        assert metric(after, name, model=MODEL) >= c2
    assert f'audio_score_predictor_queue_depth{{model="{MODEL}"}}' in after
    assert "request_predict_seconds" in after  # KServe's own histogram, same registry


def test_stale_entry_is_rebuilt_when_its_clip_changes(server, ws) -> None:  # type: ignore[no-untyped-def]
    model = "higgs-tiny"
    cache = ReferenceCache(ws.cache_dir, model)
    old = cache.read(*ON_DEMAND)
    assert old is not None  # built by cache-build
    first = post_binary(server, decoded(ws, ON_DEMAND), *ON_DEMAND, model=model)
    assert first.status_code == 200, first.text
    # The clip's content changes (same name): its entry is stale and must be rebuilt from the new content.
    shutil.copyfile(ws.clips[OTHER], ws.clips[ON_DEMAND])
    response = post_binary(server, decoded(ws, OTHER), *ON_DEMAND, model=model)
    assert response.status_code == 200, response.text
    new = cache.read(*ON_DEMAND)
    assert new is not None and new.meta["source"]["sha256"] != old.meta["source"]["sha256"]
    result = v2.parse_score_response(response.content, response.headers)
    assert result["audio_sim_score"] == pytest.approx(1.0, abs=1e-4)
    assert result["reference_transcript"] == new.transcript


def test_a_reference_text_file_is_the_reference_for_words(server, ws) -> None:  # type: ignore[no-untyped-def]
    """Adding <uid>_<cid>.txt beside a flat-layout clip makes its entry stale; the rebuilt entry holds the text and
    the word marks are against it, as written. The clip uploaded as itself is heard as its reference was heard, so
    it is exactly 1.0 on every score although its transcript is not the text (docs/architecture.md "Scores")."""
    ws.clips[OTHER].with_suffix(".txt").write_text("The cat sat on the mat.\n", encoding="utf-8")
    response = post_binary(server, decoded(ws, OTHER), *OTHER)
    assert response.status_code == 200, response.text
    result = v2.parse_score_response(response.content, response.headers)
    assert result["reference_text"] == "The cat sat on the mat."
    assert ReferenceCache(ws.cache_dir, MODEL).read(*OTHER).reference_text == "The cat sat on the mat."
    assert text_similarity(result["transcript"], result["reference_text"]) < 1.0  # tiny random weights: not the text
    for name in FLOAT_OUTPUTS:
        assert result[name] == 1.0, name
    alignment = align_words(
        result["transcript"], "The cat sat on the mat.", reference_transcript=result["reference_transcript"]
    )
    assert [{k: w[k] for k in ("op", "word", "said")} for w in result["words"]] == alignment.as_list()
    assert all(w["op"] == "match" for w in result["words"])
    written = iter(w["word"] for w in result["words"])
    assert all(word in written for word in ["The", "cat", "sat", "on", "the", "mat"])  # in order, as written


def test_config_can_feed_the_pooled_similarity_into_the_scores(ws, start_predictor) -> None:  # type: ignore[no-untyped-def]
    config = json.loads(ws.config_path.read_text())
    pooled_config = ws.config_path.with_name("config-pooled.json")
    pooled_config.write_text(json.dumps({**config, "audio_similarity": "pooled"}))
    with start_predictor(pooled_config, ready_models=[MODEL], args=["--model", MODEL]) as proc:
        response = post_binary(proc, decoded(ws, ON_DEMAND), *OWN)
    assert response.status_code == 200, response.text
    result = v2.parse_score_response(response.content, response.headers)
    assert result["audio_similarity"] == "pooled"
    assert result["audio_sim_score"] == result["audio_pooled_sim_score"] != result["audio_aligned_sim_score"]
    assert result["sim_score"] == pytest.approx(expected_sim(result, "audio_pooled_sim_score"))
