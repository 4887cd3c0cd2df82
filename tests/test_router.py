"""The router: the real FastAPI app under uvicorn against real predictor servers with tiny real-format models."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from audio_score.cli import main as cli_main
from audio_score.contract import PAUSE_KEYS, WORD_TIMING_KEYS
from audio_score.env_settings import RouterEnv
from audio_score.settings import RouterSettings, load_settings
from audio_score_tools.media import synth_speechlike, write_audio
from audio_score_tools.workspace import Workspace, build_workspace

from conftest import REPO_ROOT, free_port, run_router

RATE = 16000


def settings_with(ws: Workspace, **env: str) -> RouterSettings:
    return load_settings(RouterEnv, ws.config_path, env={k: str(v) for k, v in env.items()})


class Stack:
    def __init__(self, ws: Workspace, predictors: dict, url: str, urls: str) -> None:
        self.ws, self.predictors, self.url, self.urls = ws, predictors, url, urls

    def score(self, path: Path | None = None, data: bytes | None = None, **fields: str) -> httpx.Response:
        content = data if data is not None else path.read_bytes()  # type: ignore[union-attr]
        name = path.name if path else "upload.bin"
        return httpx.post(f"{self.url}/score", data=fields, files={"audio": (name, content)}, timeout=120)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_models, start_predictor) -> Iterator[Stack]:
    """Cache built by the real Job; one predictor process per model; the router maps each key to its URL."""
    ws = build_workspace(tmp_path_factory.mktemp("router-ws"), models=tiny_models)
    assert cli_main(["cache-build", "--config", str(ws.config_path), "--no-progress"]) == 0
    with (
        start_predictor(ws.config_path, ready_models=["whisper-tiny"], args=["--model", "whisper-tiny"]) as pw,
        start_predictor(ws.config_path, ready_models=["higgs-tiny"], args=["--model", "higgs-tiny"]) as ph,
    ):
        urls = f"whisper-tiny={pw.http_url},higgs-tiny={ph.http_url}"
        settings = settings_with(ws, AUDIO_SCORE_PREDICTOR_URLS=urls)
        with run_router(settings) as url:
            yield Stack(ws, {"whisper-tiny": pw, "higgs-tiny": ph}, url, urls)


@pytest.mark.parametrize("model", ["whisper-tiny", "higgs-tiny"])
def test_a_reference_clip_uploaded_as_itself_scores_one(stack: Stack, model: str) -> None:
    response = stack.score(stack.ws.clips[("video1", "clip1")], uid="video1", cid="clip1", model=model)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == model
    assert (body["audio_sim_score"], body["text_sim_score"], body["sim_score"]) == (1.0, 1.0, 1.0)
    assert body["transcript"] == body["reference_transcript"] != ""
    assert body["audio_aligned_sim_score"] == 1.0 and body["audio_similarity"] == "aligned"
    assert body["audio_pooled_sim_score"] == pytest.approx(1.0, abs=1e-4)
    assert body["word_accuracy"] == 1.0 and body["reference_text"] is None
    assert body["words"] and all(w["op"] == "match" and w["word"] == w["said"] for w in body["words"])


def test_another_clip_scores_less_and_the_default_model_is_the_first_ready(stack: Stack) -> None:
    response = stack.score(stack.ws.clips[("video1", "clip2")], uid="video1", cid="clip1")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "whisper-tiny"
    assert body["audio_sim_score"] < 0.999 and body["sim_score"] < 1.0
    assert set(body) == {
        "model",
        "sim_score",
        "audio_sim_score",
        "text_sim_score",
        "transcript",
        "reference_transcript",
        "audio_pooled_sim_score",
        "audio_aligned_sim_score",
        "audio_similarity",
        "word_accuracy",
        "words",
        "reference_text",
        "text_similarity",
        # the forced reading of the reference's texts (config.json's forced_text, on by default)
        "text_transcript_score",
        "text_forced_score",
        "no_speech",
        "looped",
        "language",
        # the cache Job gave the entry word times (the tiny checkpoint has no alignment heads: the voiced fallback)
        "timing_score",
        "rate",
        "pauses",
    }
    scores = ("sim_score", "audio_sim_score", "text_sim_score", "audio_pooled_sim_score", "word_accuracy")
    for name in (*scores, "text_transcript_score", "text_forced_score"):
        assert 0.0 <= body[name] <= 1.0, name
    assert 0.0 <= body["timing_score"] <= 1.0 and body["rate"] > 0 and isinstance(body["pauses"], list)
    assert all({"ref_start", "ref_end", "audio_score", "left_out"} <= set(w) for w in body["words"] if w["word"])
    # the decoding guard's answer, as JSON types: the upload is heard in its reference's (detected) language
    assert body["no_speech"] is False and isinstance(body["looped"], bool)
    assert body["language"] in {"en", "es", "fr", "de", "it", "pt", "ja", "zh"}
    assert isinstance(body["text_similarity"], str) and body["text_similarity"]  # the configured kind
    assert body["audio_sim_score"] == body["audio_aligned_sim_score"] < 1.0
    assert {w["op"] for w in body["words"]} <= {"match", "substitution", "deletion", "insertion"}


def test_any_ffmpeg_format_is_accepted(stack: Stack, tmp_path: Path) -> None:
    mp3 = write_audio(tmp_path / "take.mp3", synth_speechlike(2.0, RATE, seed=9), RATE)
    response = stack.score(mp3, uid="video2", cid="clip1", model="higgs-tiny")
    assert response.status_code == 200, response.text
    assert 0.0 <= response.json()["sim_score"] <= 1.0


def test_a_reference_text_file_drives_the_word_feedback(stack: Stack) -> None:
    text = stack.ws.clips[("video1", "clip2")].with_suffix(".txt")
    text.write_text("Good morning, everyone!", encoding="utf-8")
    try:
        response = stack.score(stack.ws.clips[("video1", "clip2")], uid="video1", cid="clip2", model="whisper-tiny")
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["reference_text"] == "Good morning, everyone!"
        written = iter(w["word"] for w in body["words"])
        assert all(word in written for word in ["Good", "morning", "everyone"])  # the text's words, as written
        assert body["audio_aligned_sim_score"] == 1.0
        # the clip itself is heard as the reference was heard: every word right, whatever the text file says
        assert body["text_sim_score"] == 1.0 and body["word_accuracy"] == 1.0
        assert all(w["op"] == "match" for w in body["words"])
    finally:
        text.unlink()


def test_models_health_readiness_docs_and_metrics(stack: Stack) -> None:
    models = httpx.get(f"{stack.url}/models").json()
    assert models["default"] == "whisper-tiny"
    assert [(m["key"], m["type"], m["ready"]) for m in models["models"]] == [
        ("whisper-tiny", "whisper", True),
        ("higgs-tiny", "higgs_audio", True),
    ]
    assert httpx.get(f"{stack.url}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{stack.url}/readyz")
    assert ready.status_code == 200 and ready.json()["models"] == ["whisper-tiny", "higgs-tiny"]
    schema = httpx.get(f"{stack.url}/openapi.json").json()
    form = schema["paths"]["/score"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    ref = form["$ref"].split("/")[-1]
    props = schema["components"]["schemas"][ref]["properties"]
    assert set(props) == {"uid", "cid", "audio", "model"}
    assert props["uid"]["description"] and props["audio"]["description"]
    assert {"404", "413", "503", "504"} <= set(schema["paths"]["/score"]["post"]["responses"])
    answer = schema["components"]["schemas"]["ScoreResponse"]
    names = ("audio_pooled_sim_score", "audio_aligned_sim_score", "audio_similarity", "word_accuracy", "words")
    for name in (*names, "timing_score", "rate", "pauses"):
        assert answer["properties"][name]["description"], name
    example = answer["examples"][0]["words"][4]
    assert {k: example[k] for k in ("op", "word", "said")} == {"op": "substitution", "word": "the", "said": "a"}
    marks = set(schema["components"]["schemas"]["WordMark"]["properties"])
    assert marks == {"op", "word", "said", *WORD_TIMING_KEYS} == set(example)
    assert set(schema["components"]["schemas"]["Pause"]["properties"]) == set(PAUSE_KEYS)
    assert httpx.get(f"{stack.url}/docs").status_code == 200
    metrics = httpx.get(f"{stack.url}/metrics").text
    assert 'audio_score_router_requests_total{model="whisper-tiny",status="200"}' in metrics
    assert "audio_score_router_decode_seconds_count" in metrics
    assert 'audio_score_router_predictor_seconds_count{model="higgs-tiny"}' in metrics


def test_bad_requests_get_a_4xx_with_a_reason(stack: Stack, tmp_path: Path) -> None:
    clip = stack.ws.clips[("video1", "clip1")]
    cases = [
        (stack.score(clip, cid="clip1"), 422, "field 'uid' is required"),
        (httpx.post(f"{stack.url}/score", data={"uid": "a", "cid": "b"}), 422, "field 'audio' is required"),
        (stack.score(clip, uid="../etc", cid="clip1"), 400, "invalid uid '../etc'"),
        (stack.score(clip, uid="video1", cid="a/b"), 400, "invalid cid"),
        (stack.score(data=b"definitely not audio" * 100, uid="video1", cid="clip1"), 400, "not a readable audio"),
        (stack.score(data=b"", uid="video1", cid="clip1"), 400, "empty"),
        (
            stack.score(write_audio(tmp_path / "s.wav", np.zeros(RATE, np.float32), RATE), uid="video1", cid="clip1"),
            400,
            "silent",
        ),
        (stack.score(clip, uid="video9", cid="clip1"), 404, "video9"),
        (stack.score(clip, uid="video1", cid="clip1", model="nope"), 404, "unknown model 'nope'; known: whisper-tiny"),
        (
            stack.score(write_audio(tmp_path / "long.flac", synth_speechlike(31.0, RATE), RATE), uid="v", cid="c"),
            413,
            "longer than the limit of 30 s",
        ),
    ]
    for response, status, text in cases:
        assert response.status_code == status, response.text
        assert text in response.json()["detail"], response.text


def _raw_http(port: int, head: bytes, body_part: bytes = b"") -> bytes:
    """Send a request head (and maybe part of a body), then read the answer without sending the rest."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + body_part)
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except (ConnectionResetError, TimeoutError):
                break
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks) and b'"detail"' in b"".join(chunks):
                break
    return b"".join(chunks)


def test_uploads_over_the_byte_limit_are_refused_before_being_read(stack: Stack) -> None:
    settings = settings_with(
        stack.ws, AUDIO_SCORE_MAX_UPLOAD_BYTES="100000", AUDIO_SCORE_PREDICTOR_URL="http://127.0.0.1:9"
    )
    with run_router(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        # Content-Length of 50 MB and not one body byte sent: the answer must come from the head alone.
        head = (
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 50000000\r\n\r\n"
        )
        answer = _raw_http(port, head)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
        assert b"over the limit of 100000 bytes" in answer
        # Chunked (no length): refused once the streamed bytes pass the limit, long before the 50 MB would end.
        head = (
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        part = b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
        chunk = b"x" * 65536
        chunks = [part, *([chunk] * 4)]  # a valid multipart start, then 256 KiB of what would be a 50 MB file
        body = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks)
        answer = _raw_http(port, head, body)
        assert answer.startswith(b"HTTP/1.1 413"), answer[:200]


def test_api_key_is_checked_before_the_body(stack: Stack) -> None:
    settings = settings_with(stack.ws, AUDIO_SCORE_API_KEYS="k1,k2", AUDIO_SCORE_PREDICTOR_URLS=stack.urls)
    with run_router(settings) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (
            b"POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 999\r\n\r\n"
        )
        answer = _raw_http(port, head)
        assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
        assert b"missing or invalid API key" in answer
        clip = stack.ws.clips[("video1", "clip1")]
        files = {"audio": ("c.mov", clip.read_bytes())}
        fields = {"uid": "video1", "cid": "clip1"}
        wrong = httpx.post(f"{url}/score", data=fields, files=files, headers={"X-API-Key": "nope"}, timeout=60)
        assert wrong.status_code == 401
        ok = httpx.post(f"{url}/score", data=fields, files=files, headers={"Authorization": "Bearer k2"}, timeout=60)
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{url}/healthz").status_code == 200  # probes need no key


def test_concurrent_uploads_all_succeed(stack: Stack) -> None:
    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=180) as client:
            jobs = []
            for i in range(8):
                uid, cid = [("video1", "clip1"), ("video1", "clip2"), ("video2", "clip1")][i % 3]
                data = stack.ws.clips[(uid, cid)].read_bytes()
                model = ["whisper-tiny", "higgs-tiny"][i % 2]
                jobs.append(
                    client.post(
                        f"{stack.url}/score",
                        data={"uid": uid, "cid": cid, "model": model},
                        files={"audio": ("a.mov", data)},
                    )
                )
            return await asyncio.gather(*jobs)

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [200] * 8, [r.text for r in responses]
    assert all(r.json()["sim_score"] == 1.0 for r in responses)


def test_a_predictor_that_is_down_gives_503(stack: Stack) -> None:
    settings = settings_with(stack.ws, AUDIO_SCORE_PREDICTOR_URL=f"http://127.0.0.1:{free_port()}")
    with run_router(settings) as url:
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and "no model is ready" in ready.json()["detail"]
        response = httpx.post(
            f"{url}/score",
            data={"uid": "video1", "cid": "clip1", "model": "whisper-tiny"},
            files={"audio": ("a.mov", stack.ws.clips[("video1", "clip1")].read_bytes())},
            timeout=60,
        )
        assert response.status_code == 503
        assert "model 'whisper-tiny' is not ready" in response.json()["detail"]
        assert "unreachable" in response.json()["detail"]


def test_a_slow_predictor_gives_504(stack: Stack) -> None:
    """A stand-in predictor that is ready but never answers an inference: the router's timeout must fire."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def do_POST(self) -> None:
            release.wait(30)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        settings = settings_with(
            stack.ws,
            AUDIO_SCORE_PREDICTOR_URL=f"http://127.0.0.1:{server.server_address[1]}",
            AUDIO_SCORE_PREDICTOR_TIMEOUT_S="1",
        )
        with run_router(settings) as url:
            response = stack_score(url, stack.ws.clips[("video1", "clip1")])
            assert response.status_code == 504
            assert "did not answer within 1 s" in response.json()["detail"]
    finally:
        release.set()
        server.shutdown()


def stack_score(url: str, clip: Path, **extra: str) -> httpx.Response:
    return httpx.post(
        f"{url}/score",
        data={"uid": "video1", "cid": "clip1", **extra},
        files={"audio": ("a.mov", clip.read_bytes())},
        timeout=60,
    )


def test_router_imports_without_torch_or_transformers(tmp_path: Path) -> None:
    code = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "transformers", "kserve"}:
            raise ImportError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
from audio_score.env_settings import RouterEnv
from audio_score.settings import load_settings
from router.app import create_app
from audio_score.cli import build_parser
app = create_app(load_settings(RouterEnv, sys.argv[1], env={}))
build_parser()
assert not [m for m in sys.modules if m.split(".")[0] in {"torch", "transformers", "kserve"}]
print("ok")
"""
    ws_config = tmp_path / "config.json"
    ws_config.write_text(
        json.dumps(
            {"models": [{"key": "w", "type": "whisper", "model_id": "x"}], "video_clip_dir": ".", "cache_dir": "."}
        )
    )
    out = subprocess.run([sys.executable, "-c", code, str(ws_config)], capture_output=True, text=True, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_a_predictor_killed_mid_test_fails_only_its_model(stack: Stack) -> None:
    """Runs last in this module: it kills the Higgs predictor."""
    clip = stack.ws.clips[("video1", "clip1")]
    assert stack.score(clip, uid="video1", cid="clip1", model="higgs-tiny").status_code == 200
    proc = stack.predictors["higgs-tiny"].proc
    proc.kill()
    proc.wait(timeout=30)
    dead = stack.score(clip, uid="video1", cid="clip1", model="higgs-tiny")
    assert dead.status_code == 503, dead.text
    assert "higgs-tiny" in dead.json()["detail"]
    alive = stack.score(clip, uid="video1", cid="clip1", model="whisper-tiny")
    assert alive.status_code == 200 and alive.json()["sim_score"] == 1.0
    deadline = time.monotonic() + 10
    while httpx.get(f"{stack.url}/models").json()["models"][1]["ready"] and time.monotonic() < deadline:
        time.sleep(0.2)
    models = httpx.get(f"{stack.url}/models").json()
    assert models["default"] == "whisper-tiny" and models["models"][1]["ready"] is False
