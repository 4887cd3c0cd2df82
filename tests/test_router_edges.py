"""The router against stand-in predictors: the failure modes a real predictor cannot be made to show on demand.

A stand-in is a small HTTP server on loopback that speaks just enough V2 (``/v2/models/{key}/ready`` and
``/infer``) to answer as told: ready or not, a valid score, a full queue (503), malformed tensors (400), a crash
(500), a dropped connection. The router itself is the real app under uvicorn (and, once, the real
``audio-score router`` CLI on a Unix socket); uploads are real audio files decoded by the real decoder. The happy
path and the real predictor's own errors are in test_router.py.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import numpy as np
import pytest

from audio_score import v2
from audio_score.contract import DEADLINE_HEADER
from audio_score.env_settings import RouterEnv
from audio_score.errors import ConfigError
from audio_score.settings import RouterSettings, load_settings
from audio_score_tools.media import synth_speechlike, write_audio
from router.predictor_client import PredictorClient, PredictorError, predictor_base_url

from conftest import REPO_ROOT, free_port, run_router

RATE = 16000
KEYS = ["alpha", "beta"]
SCORES = {"sim_score": 0.75, "audio_sim_score": 0.5, "text_sim_score": 1.0}


def _feedback_outputs() -> tuple[list[dict], dict]:
    """What a predictor sends with per-word feedback, from a real ``compare`` of frames with a known pause
    (the reference: four words of five distinct frames; the take: the same with 0.6 s of silence before the
    third), and the /score fields the router should make of it."""
    from audio_score.scoring import compare
    from audio_score.word_times import WordTime, WordTimes

    rng = np.random.default_rng(5)
    phones = rng.standard_normal((20, 16)) * 2
    silence = np.zeros((1, 16))
    words = [phones[k * 5 : k * 5 + 5].repeat(2, axis=0) for k in range(4)]
    reference = np.concatenate([silence.repeat(3, 0), *words, silence.repeat(3, 0)]).astype(np.float32)
    take = np.concatenate([silence.repeat(3, 0), *words[:2], silence.repeat(15, 0), *words[2:], silence.repeat(3, 0)])
    take = (take + 0.05 * rng.standard_normal(take.shape)).astype(np.float32)
    text = "red cat blue dog"
    times = WordTimes(tuple(WordTime(w, 0.12 + 0.4 * k, 0.52 + 0.4 * k) for k, w in enumerate(text.split())), "model")
    result = compare(
        embedding=take.mean(0), frames=take, transcript=text, reference_embedding=reference.mean(0),
        reference_frames=reference, reference_text=text, reference_transcript=text, pool=1, frame_ms=40.0,
        reference_word_times=times,
    )  # fmt: skip
    timing = result.timing()
    outputs = [
        {"name": "words", "datatype": "BYTES", "shape": [1], "data": [result.words_json()]},
        {"name": "timing_score", "datatype": "FP32", "shape": [1], "data": [timing["timing_score"]]},
        {"name": "rate", "datatype": "FP32", "shape": [1], "data": [timing["rate"]]},
        {"name": "pauses", "datatype": "BYTES", "shape": [1], "data": [json.dumps(timing["pauses"])]},
    ]
    return outputs, {"words": result.word_list(), **timing}


FEEDBACK_OUTPUTS, FEEDBACK_FIELDS = _feedback_outputs()


class StandIn:
    """A stand-in predictor. ``ready``: status of /ready; ``infer``: "ok" | "queue_full" | "bad" | "crash" |
    "drop_first" (close the first connection without answering, then "ok"); ``requests``: what it received."""

    def __init__(self, ready: int = 200, infer: str = "ok") -> None:
        self.ready, self.infer = ready, infer
        self.requests: list[dict] = []
        self.dropped = 0
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def _answer(self, status: int, doc: dict, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(doc).encode()
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                self._answer(stand_in.ready, {} if stand_in.ready == 200 else {"error": "Model is not ready"})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                if stand_in.infer == "drop_first" and stand_in.dropped == 0:
                    stand_in.dropped += 1
                    self.close_connection = True
                    self.connection.shutdown(2)
                    return
                head_len = int(self.headers[v2.INFERENCE_HEADER])
                header = json.loads(body[:head_len])
                audio = np.frombuffer(body[head_len:], dtype="<f4")
                headers = {k.lower(): v for k, v in self.headers.items()}
                stand_in.requests.append(
                    {"path": self.path, "header": header, "samples": audio.size, "headers": headers}
                )
                mode = stand_in.infer
                if mode == "slow":
                    time.sleep(1.5)
                    mode = "ok"
                if mode == "queue_full":
                    error = {"error": "the request queue of model 'alpha' is full (64); retry later"}
                    self._answer(503, error, {"Retry-After": "3"})
                elif mode == "bad":
                    self._answer(400, {"error": "input 'audio' must be FP32 [1, N]"})
                elif mode == "crash":
                    self._answer(500, {"error": "RuntimeError : boom"})
                else:
                    uid = header["inputs"][1]["data"][0]
                    outputs = [{"name": k, "datatype": "FP32", "shape": [1], "data": [v]} for k, v in SCORES.items()]
                    outputs += [
                        {"name": "transcript", "datatype": "BYTES", "shape": [1], "data": ["hello"]},
                        {"name": "reference_transcript", "datatype": "BYTES", "shape": [1], "data": [f"ref {uid}"]},
                    ]
                    if mode == "feedback":
                        outputs += FEEDBACK_OUTPUTS
                    self._answer(200, {"model_name": self.path.split("/")[-2], "outputs": outputs})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A config.json with two model keys; the models themselves are never loaded by the router."""
    root = tmp_path_factory.mktemp("edges")
    models = [{"key": k, "type": "whisper", "model_id": f"/nonexistent/{k}"} for k in KEYS]
    path = root / "config.json"
    path.write_text(json.dumps({"models": models, "video_clip_dir": "clips", "cache_dir": "cache"}))
    return path


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_audio(
        tmp_path_factory.mktemp("up") / "take.m4a", synth_speechlike(1.5, RATE, seed=3), RATE
    ).read_bytes()


def router(settings: RouterSettings):
    return run_router(settings, readiness_interval_s=0.3)


def post(url: str, audio: bytes | str, **fields: str) -> httpx.Response:
    data = {"uid": "video1", "cid": "clip1", **fields}
    if isinstance(audio, str):
        return httpx.post(f"{url}/score", data={**data, "audio": audio}, timeout=60)
    return httpx.post(f"{url}/score", data=data, files={"audio": ("take.m4a", audio, "audio/mp4")}, timeout=60)


def detail(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert list(body) == ["detail"] and isinstance(body["detail"], str), body
    return body["detail"]


# --- where the predictors are ----------------------------------------------------------------------------------


def test_predictor_url_template_map_and_single_server(config: Path) -> None:
    s = load_settings(RouterEnv, config, env={})
    assert predictor_base_url(s, "alpha") == "http://alpha-predictor.default.svc.cluster.local"
    s = load_settings(RouterEnv, config, env={"POD_NAMESPACE": "speech"})
    assert predictor_base_url(s, "beta") == "http://beta-predictor.speech.svc.cluster.local"
    s = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": "http://gw:8080/{model}"})
    assert predictor_base_url(s, "alpha") == "http://gw:8080/alpha"
    s = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": "http://127.0.0.1:8080"})
    assert {predictor_base_url(s, k) for k in KEYS} == {"http://127.0.0.1:8080"}  # one server, every model
    env = {"AUDIO_SCORE_PREDICTOR_URL": "http://x/{model}", "AUDIO_SCORE_PREDICTOR_URLS": "beta=http://b:1"}
    s = load_settings(RouterEnv, config, env=env)
    assert (predictor_base_url(s, "alpha"), predictor_base_url(s, "beta")) == ("http://x/alpha", "http://b:1")
    with pytest.raises(ConfigError, match=r"AUDIO_SCORE_PREDICTOR_URLS.*KEY=URL"):
        load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URLS": "beta"})


def test_template_reaches_each_model_under_its_own_url_with_binary_pcm(config: Path, stand_in, upload) -> None:
    """A ``{model}`` template in a path (a path-routing gateway): each key's calls go to its own prefix, and the
    body is the binary extension: FP32 [1, N] PCM at the configured rate plus uid/cid."""
    settings = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url + "/{model}"})
    with router(settings) as url:
        for key in KEYS:
            response = post(url, upload, model=key, uid="video7", cid="c-2")
            assert response.status_code == 200, response.text
            assert response.json() == {
                "model": key,
                **SCORES,
                "transcript": "hello",
                "reference_transcript": "ref video7",
            }
    assert [r["path"] for r in stand_in.requests] == [f"/{k}/v2/models/{k}/infer" for k in KEYS]
    inputs = stand_in.requests[0]["header"]["inputs"]
    assert [(i["name"], i["datatype"]) for i in inputs] == [("audio", "FP32"), ("uid", "BYTES"), ("cid", "BYTES")]
    assert inputs[0]["shape"] == [1, stand_in.requests[0]["samples"]]
    assert abs(stand_in.requests[0]["samples"] - 1.5 * RATE) < 0.05 * RATE  # decoded to 16 kHz mono
    assert (inputs[1]["data"], inputs[2]["data"]) == (["video7"], ["c-2"])


def test_per_word_feedback_outputs_become_score_fields(config: Path, upload) -> None:
    """A predictor with the reference's word times sends the per-word keys in ``words`` and the timing outputs:
    /score carries them as they were computed (an older predictor's answer, above, has none of them)."""
    stand_in = StandIn(infer="feedback")
    try:
        settings = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})
        with router(settings) as url:
            response = post(url, upload, model="alpha")
    finally:
        stand_in.close()
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["words"] == FEEDBACK_FIELDS["words"]
    assert [p["word"] for p in body["pauses"]] == ["blue"] == [p["word"] for p in FEEDBACK_FIELDS["pauses"]]
    assert body["pauses"][0]["excess"] == pytest.approx(FEEDBACK_FIELDS["pauses"][0]["excess"])
    assert body["timing_score"] == pytest.approx(FEEDBACK_FIELDS["timing_score"], abs=1e-6)
    assert body["rate"] == pytest.approx(FEEDBACK_FIELDS["rate"], abs=1e-6)
    assert all(w["left_out"] is False and w["audio_score"] > 0.5 for w in body["words"])
    assert body["words"][2]["start"] > body["words"][1]["end"] + 0.4


# --- predictor failures ------------------------------------------------------------------------------------------


def test_predictor_down_is_503_with_the_reason(config: Path, upload) -> None:
    settings = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": f"http://127.0.0.1:{free_port()}"})
    with router(settings) as url:
        assert "no model is ready" in detail(httpx.get(f"{url}/readyz"), 503)
        assert "unreachable" in detail(post(url, upload, model="alpha"), 503)
        text = detail(post(url, upload), 503)  # no model given, none ready
        assert "no model is ready" in text and "alpha" in text and "beta" in text
        models = httpx.get(f"{url}/models").json()
        assert models["default"] is None and not any(m["ready"] for m in models["models"])


def test_predictor_reporting_not_ready_is_503(config: Path, upload) -> None:
    not_ready = StandIn(ready=503)
    try:
        with router(load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": not_ready.url})) as url:
            assert "not ready" in detail(post(url, upload, model="beta"), 503)
            assert not_ready.requests == []  # never sent an inference
    finally:
        not_ready.close()


def test_full_queue_is_503_but_the_model_stays_ready(config: Path, stand_in, upload) -> None:
    stand_in.infer = "queue_full"
    with router(load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})) as url:
        assert "queue of model 'alpha' is full" in detail(post(url, upload, model="alpha"), 503)
        # A busy predictor is still the default: the next request without a model goes to it again.
        assert httpx.get(f"{url}/models").json()["default"] == "alpha"


def test_the_callers_deadline_travels_to_the_predictor_and_retry_after_comes_back(
    config: Path, stand_in, upload
) -> None:
    settings = load_settings(
        RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url, "AUDIO_SCORE_PREDICTOR_TIMEOUT_S": "7"}
    )
    with router(settings) as url:
        assert post(url, upload, model="alpha").status_code == 200
        # No deadline from the caller: the predictor is told the router's own timeout.
        assert stand_in.requests[-1]["headers"][DEADLINE_HEADER] == "7000"
        response = httpx.post(
            f"{url}/score",
            data={"uid": "video1", "cid": "clip1"},
            files={"audio": ("take.m4a", upload, "audio/mp4")},
            headers={DEADLINE_HEADER: "1500"},
            timeout=60,
        )
        assert response.status_code == 200, response.text
        # The caller's 1.5 s, less what the router already spent (reading and decoding the upload).
        assert 0 < int(stand_in.requests[-1]["headers"][DEADLINE_HEADER]) <= 1500
        for bad in ("soon", "-5", "0"):
            refused = httpx.post(
                f"{url}/score",
                data={"uid": "video1", "cid": "clip1"},
                files={"audio": ("take.m4a", upload, "audio/mp4")},
                headers={DEADLINE_HEADER: bad},
                timeout=60,
            )
            assert DEADLINE_HEADER in detail(refused, 400)
        stand_in.infer = "queue_full"
        busy = post(url, upload, model="alpha")
        assert "full" in detail(busy, 503)
        assert busy.headers["retry-after"] == "3"  # the predictor's estimate, passed on


def test_a_callers_short_deadline_is_a_504_that_does_not_open_the_breaker(config: Path, stand_in, upload) -> None:
    stand_in.infer = "slow"  # answers after 1.5 s
    with router(load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})) as url:
        hurried = httpx.post(
            f"{url}/score",
            data={"uid": "video1", "cid": "clip1", "model": "alpha"},
            files={"audio": ("take.m4a", upload, "audio/mp4")},
            headers={DEADLINE_HEADER: "300"},
            timeout=60,
        )
        assert "did not answer within" in detail(hurried, 504)
        # The predictor is merely slower than one caller's patience: it stays ready and serves the next caller.
        models = {m["key"]: m for m in httpx.get(f"{url}/models").json()["models"]}
        assert models["alpha"]["ready"], models["alpha"]
        assert post(url, upload, model="alpha").status_code == 200


def test_predictor_400_passes_its_reason_and_a_crash_is_502(config: Path, stand_in, upload) -> None:
    with router(load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})) as url:
        stand_in.infer = "bad"
        assert "must be FP32" in detail(post(url, upload), 400)
        stand_in.infer = "crash"
        assert "failed (500)" in detail(post(url, upload), 502)


def test_dropped_connection_is_retried_once(config: Path, stand_in, upload) -> None:
    stand_in.infer = "drop_first"
    with router(load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})) as url:
        response = post(url, upload, model="alpha")
        assert response.status_code == 200, response.text
    assert stand_in.dropped == 1 and len(stand_in.requests) == 1


def test_refused_connection_is_retried_once_then_503(config: Path) -> None:
    """The predictor client itself, on a transport that refuses connections: once (retried, succeeds), always
    (two attempts, then 503 naming the model and URL)."""
    settings = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": "http://pred:8080"})
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        if refuse_always or len(attempts) == 1:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        outputs = [{"name": k, "datatype": "FP32", "shape": [1], "data": [v]} for k, v in SCORES.items()]
        names = ("transcript", "reference_transcript")
        outputs += [{"name": n, "datatype": "BYTES", "shape": [1], "data": ["x"]} for n in names]
        return httpx.Response(200, json={"outputs": outputs})

    samples = np.full(1600, 0.1, np.float32)
    refuse_always = False

    async def run() -> None:
        nonlocal refuse_always
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            predictor = PredictorClient(settings, client)
            assert (await predictor.score("alpha", samples, "u", "c"))["sim_score"] == 0.75
            assert attempts == ["/v2/models/alpha/infer"] * 2
            attempts.clear()
            refuse_always = True
            with pytest.raises(PredictorError) as err:
                await predictor.score("alpha", samples, "u", "c")
            assert err.value.status_code == 503 and err.value.unreachable
            assert "'alpha'" in err.value.detail and "http://pred:8080" in err.value.detail
            assert len(attempts) == 2

    asyncio.run(run())


# --- form errors that never reach a predictor --------------------------------------------------------------------


def test_form_errors_are_4xx_naming_the_field(config: Path, stand_in, upload) -> None:
    with router(load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})) as url:
        assert "field 'audio'" in detail(post(url, "just text"), 422)
        assert "multipart/form-data" in detail(httpx.post(f"{url}/score", json={"uid": "a", "cid": "b"}), 422)
        assert "field 'cid' is required" in detail(post(url, upload, cid=""), 422)
        assert "invalid uid '.hidden'" in detail(post(url, upload, uid=".hidden"), 400)
        assert "invalid cid" in detail(post(url, upload, cid="x" * 129), 400)
        assert "unknown model 'gamma'" in detail(post(url, upload, model="gamma"), 404)
        assert "Method Not Allowed" in detail(httpx.get(f"{url}/score"), 405)
        assert "Not Found" in detail(httpx.get(f"{url}/nope"), 404)
        metrics = httpx.get(f"{url}/metrics").text
        assert 'audio_score_router_requests_total{model="unknown",status="404"} 1.0' in metrics
        assert "gamma" not in metrics  # a caller's model name never becomes a label
    assert stand_in.requests == []


# --- the CLI ----------------------------------------------------------------------------------------------------


def test_cli_serves_on_a_unix_socket(config: Path, stand_in, tmp_path: Path, upload) -> None:
    """``audio-score router --socket PATH --predictor-url URL``: a real process; the flag wins over the env."""
    sock = tmp_path / "router.sock"
    cmd = [sys.executable, "-m", "audio_score", "router", "--config", str(config), "--socket", str(sock)]
    cmd += ["--predictor-url", stand_in.url]
    env = {**os.environ, "AUDIO_SCORE_PREDICTOR_URL": "http://127.0.0.1:9", "AUDIO_SCORE_API_KEYS": ""}
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        client = httpx.Client(transport=httpx.HTTPTransport(uds=str(sock)), base_url="http://router", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "router CLI not ready"
            time.sleep(0.2)
        models = client.get("/models").json()
        assert models["default"] == "alpha" and models["models"][0]["predictor_url"] == stand_in.url
        files = {"audio": ("take.m4a", upload)}
        response = client.post("/score", data={"uid": "video1", "cid": "clip1"}, files=files)
        assert response.status_code == 200 and response.json()["model"] == "alpha", response.text
    finally:
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells why it stopped.
        assert proc.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stdout.read().decode()  # type: ignore[union-attr]


def test_router_imports_without_torch_transformers_or_kserve(config: Path) -> None:
    """The router image has none of them: importing the app, building it and its OpenAPI must not need them."""
    code = """
import sys

class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "kserve", "torchaudio"}:
            raise ImportError(f"blocked: {name}")

sys.meta_path.insert(0, Block())
from audio_score.env_settings import RouterEnv
from audio_score.settings import load_settings
import router.app, router.cli
app = router.app.create_app(load_settings(RouterEnv, sys.argv[1], env={}))
assert "/score" in app.openapi()["paths"]
print(sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "kserve"}))
"""
    out = subprocess.run([sys.executable, "-c", code, str(config)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
