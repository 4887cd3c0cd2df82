"""The router against hostile clients: stalled bodies (408), crafted uploads (400), values built to forge or flood
the log or the error body.

The router is the real app under uvicorn with a stand-in predictor (see test_router_edges.py); clients are raw
sockets where HTTP itself is the attack, httpx otherwise. Logs are read through the router's own formatter.
"""

from __future__ import annotations

import io
import json
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from test_router_edges import StandIn, detail

from audio_score.env_settings import RouterEnv
from audio_score.errors import quote_user_value
from audio_score.logs import KeyValueFormatter, escape_control
from audio_score.settings import load_settings
from audio_score_tools.crafted import matroska_pcm_bytes, tone_pcm16, wav_bytes, with_unknown_codec_id
from audio_score_tools.media import synth_speechlike, write_audio

from conftest import run_router

RATE = 16000
BODY_TIMEOUT_S = 0.5
LINE_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory, stand_in: StandIn) -> Iterator[str]:
    root = tmp_path_factory.mktemp("hardening")
    config = root / "config.json"
    config.write_text(
        '{"models": [{"key": "alpha", "type": "whisper", "model_id": "/x"}], "video_clip_dir": "c", "cache_dir": "k"}'
    )
    env = {"AUDIO_SCORE_PREDICTOR_URL": stand_in.url, "AUDIO_SCORE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S)}
    with run_router(load_settings(RouterEnv, config, env=env), readiness_interval_s=0.3) as base:
        yield base


@pytest.fixture(scope="module")
def upload(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return write_audio(
        tmp_path_factory.mktemp("up") / "take.wav", synth_speechlike(1.0, RATE, seed=5), RATE
    ).read_bytes()


@pytest.fixture
def log_text() -> Iterator[io.StringIO]:
    """Every line the router logs during the test, formatted as in production."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(KeyValueFormatter())
    logger = logging.getLogger("router")
    logger.addHandler(handler)
    level = logger.level
    # Per-request lines ("scored", "score refused") are DEBUG unless AUDIO_SCORE_DEBUG_REQUEST_LOGS: see them all.
    logger.setLevel(logging.DEBUG)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def score(url: str, audio: bytes, **fields: str) -> httpx.Response:
    data = {"uid": "video1", "cid": "clip1", **fields}
    return httpx.post(f"{url}/score", data=data, files={"audio": ("take.wav", audio, "audio/wav")}, timeout=60)


def multipart(audio: bytes, boundary: str = "b0undary") -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("uid", "video1"), ("cid", "clip1"))
    ]
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    return "".join(parts).encode() + head.encode() + audio + f"\r\n--{boundary}--\r\n".encode()


def raw_request(url: str, head: str, body: bytes) -> tuple[socket.socket, bytes]:
    """Send ``head`` and ``body`` on a fresh connection, keep it open, and read until the server closes it."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)  # a hang fails the test instead of blocking it
    sock.sendall(head.encode() + b"\r\n" + body)
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return sock, answer


def status_of(answer: bytes) -> int:
    return int(answer.split(b" ", 2)[1])


def metric(url: str, name: str) -> float:
    text = httpx.get(f"{url}/metrics").text
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


# --- bodies that stop coming ------------------------------------------------------------------------------------


def test_a_body_shorter_than_its_content_length_is_408_and_the_connection_closed(url, upload) -> None:
    body = multipart(upload)
    head = (
        "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        f"Content-Length: {len(body) + 1000}\r\n"
    )
    decodes = metric(url, "audio_score_router_decode_seconds_count")
    sock, answer = raw_request(url, head, body)
    sock.close()
    assert status_of(answer) == 408, answer[:300]
    assert b"connection: close" in answer.lower()
    assert b"stopped arriving" in answer and f"{BODY_TIMEOUT_S:g} s".encode() in answer
    assert metric(url, "audio_score_router_decode_seconds_count") == decodes  # it never reached the decoder


def test_a_chunked_body_that_stalls_is_408(url, upload) -> None:
    body = multipart(upload)
    head = (
        "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        "Transfer-Encoding: chunked\r\n"
    )
    first = body[: len(body) // 2]
    sock, answer = raw_request(url, head, f"{len(first):x}\r\n".encode() + first + b"\r\n")  # no last chunk
    sock.close()
    assert status_of(answer) == 408, answer[:300]


def test_a_stalled_upload_holds_no_decode_thread_and_blocks_no_one(url, upload) -> None:
    """While one client sits on a half-sent body, others are scored; the stalled one then gets its 408."""
    body = multipart(upload)
    host, port = url.removeprefix("http://").split(":")
    stalled = socket.create_connection((host, int(port)), timeout=30)
    head = (
        "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b0undary\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    stalled.sendall(head.encode() + body[: len(body) // 2])
    decodes = metric(url, "audio_score_router_decode_seconds_count")
    for _ in range(3):
        assert score(url, upload).status_code == 200
    assert metric(url, "audio_score_router_decode_seconds_count") == decodes + 3
    answer = b""
    while chunk := stalled.recv(65536):
        answer += chunk
    stalled.close()
    assert status_of(answer) == 408


def test_the_body_timeout_is_a_setting(tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        '{"models": [{"key": "a", "type": "whisper", "model_id": "x"}], "video_clip_dir": "c", "cache_dir": "k"}'
    )
    assert load_settings(RouterEnv, config, env={}).env.body_timeout_s == 30.0
    assert load_settings(RouterEnv, config, env={"AUDIO_SCORE_BODY_TIMEOUT_S": "2.5"}).env.body_timeout_s == 2.5


# --- crafted uploads --------------------------------------------------------------------------------------------


def crafted_uploads(tmp_path: Path) -> dict[str, bytes]:
    mkv = matroska_pcm_bytes(tmp_path / "a.mkv", synth_speechlike(0.5, RATE, seed=4))
    return {
        "absurd sample rate": wav_bytes(rate=2**31 - 1),
        "sample rate 1 Hz": wav_bytes(rate=1),
        "resamples to nothing": wav_bytes(tone_pcm16(1), rate=768000),
        "zero bits per sample": wav_bytes(bits=0),
        "unknown format tag": wav_bytes(format_tag=0x1234),
        "zero channels": wav_bytes(channels=0),
        "unknown codec id": with_unknown_codec_id(mkv, b"A_PCM/INT/LIT"),
    }


@pytest.mark.parametrize("decoder", ["pyav", "pydub"])
def test_crafted_uploads_are_400_with_a_reason(tmp_path: Path, stand_in: StandIn, decoder: str) -> None:
    config = tmp_path / "config.json"
    models = [{"key": "alpha", "type": "whisper", "model_id": "x"}]
    config.write_text(json.dumps({"models": models, "video_clip_dir": "c", "cache_dir": "k", "decoder": decoder}))
    settings = load_settings(RouterEnv, config, env={"AUDIO_SCORE_PREDICTOR_URL": stand_in.url})
    with run_router(settings, readiness_interval_s=0.3) as base:
        for case, data in crafted_uploads(tmp_path).items():
            response = score(base, data)
            assert response.status_code == 400, (case, response.status_code, response.text)
            assert detail(response, 400).startswith("audio: "), case


# --- values that would forge or flood the log -------------------------------------------------------------------


@pytest.mark.parametrize(
    "forged",
    [
        "video1\n2026-01-01T00:00:00 INFO    router scored model=alpha uid=admin sim_score=1.0",
        "video1\n2026-01-01T00:00:00\tINFO\trouter\tscored\tuid:admin",  # no space or '=' to trigger quoting
        "video1\r\n2026-01-01T00:00:00\x0bINFO\x1b[2K",
    ],
    ids=["spaces", "tabs", "cr-vt-escape"],
)
def test_a_newline_in_a_uid_cannot_forge_a_log_line(url, upload, log_text, forged: str) -> None:
    text = detail(score(url, upload, uid=forged), 400)
    assert "\n" not in text and "'video1\\" in text
    lines = log_text.getvalue().splitlines()
    assert lines and all(LINE_START.match(line) for line in lines), lines
    refused = [line for line in lines if "score refused" in line]
    assert len(refused) == 1 and "\\n2026" in refused[0] and "\x1b" not in refused[0]


def test_a_megabyte_uid_is_echoed_as_a_short_prefix(url, upload, log_text) -> None:
    huge = "u" * 1_000_000
    response = score(url, upload, uid=huge)
    assert len(response.content) < 1024
    text = detail(response, 400)
    assert f"'{'u' * 64}'…(1000000 chars)" in text
    response = score(url, upload, model="m" * 1_000_000)
    assert len(response.content) < 1024 and "(1000000 chars)" in detail(response, 404)
    lines = log_text.getvalue().splitlines()
    assert len(lines) >= 2 and max(map(len, lines)) < 2048, [len(line) for line in lines]


def test_control_characters_are_escaped_in_every_value_and_the_message() -> None:
    record = logging.LogRecord("router", logging.INFO, __file__, 1, "path %s", ("/a\n\x1b[31mb\u2028c",), None)
    record.uid = "x\r\ny"
    record.ok = "plain"
    record.bell = "\x07"
    record.long = "v" * 5000
    line = KeyValueFormatter().format(record)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert "path /a\\n\\x1b[31mb\\u2028c" in line
    assert 'uid="x\\r\\ny"' in line and "ok=plain" in line and 'bell="\\u0007"' in line
    assert "(5000 chars)" in line and len(line) < 600
    assert escape_control("tab\there") == "tab\\there"


def test_a_traceback_cannot_pass_for_an_event() -> None:
    try:
        raise ValueError("boom\n2026-01-01T00:00:00 INFO    router forged")
    except ValueError:
        record = logging.LogRecord("router", logging.ERROR, __file__, 1, "failed", None, __import__("sys").exc_info())
    lines = KeyValueFormatter().format(record).splitlines()
    assert LINE_START.match(lines[0]) and not any(LINE_START.match(line) for line in lines[1:])


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("video1", "'video1'"),
        ("a\nb", "'a\\nb'"),
        ("x" * 65, f"'{'x' * 64}'…(65 chars)"),
        (b"\x00" * 100, repr(b"\x00" * 64) + "…(100 bytes)"),
        ([1] * 100, repr([1] * 100)[:64] + "…(300 chars)"),
        (42, "42"),
    ],
)
def test_quote_user_value(value: object, expected: str) -> None:
    assert quote_user_value(value) == expected
