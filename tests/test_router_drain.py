"""Uploads over the size limit: the client reads its 413 even while it is still sending (the router drains the
rest of the body before closing), and a client that declares a huge body or sends slowly cannot keep the
connection past the bounds of that drain.

The router is the real app under uvicorn with a stand-in predictor (see test_router_edges.py), with a 4 MB upload
limit: "twice the limit" (8 MB) is then more than the loopback socket buffers take in at once, which is what made
the old answer-and-close reset the client (a few hundred kilobytes fit in the buffers and hid it). Clients are an
async httpx client (it writes the whole body before it reads the answer: the client the soak benchmark saw reset)
and raw sockets.
"""

from __future__ import annotations

import asyncio
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from test_router_edges import StandIn

from audio_score.env_settings import RouterEnv
from audio_score.settings import load_settings
from router.limits import DRAIN_FACTOR, MULTIPART_OVERHEAD

from conftest import run_router

MAX_UPLOAD = 4_000_000
LIMIT = MAX_UPLOAD + MULTIPART_OVERHEAD  # what the middleware compares the body against
BODY_TIMEOUT_S = 2.0
DETAIL = f"the upload is over the limit of {MAX_UPLOAD} bytes"
HEAD = "POST /score HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"


@pytest.fixture(scope="module")
def url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    stand_in = StandIn()
    config = tmp_path_factory.mktemp("drain") / "config.json"
    config.write_text(
        '{"models": [{"key": "alpha", "type": "whisper", "model_id": "/x"}], "video_clip_dir": "c", "cache_dir": "k"}'
    )
    env = {
        "AUDIO_SCORE_PREDICTOR_URL": stand_in.url,
        "AUDIO_SCORE_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
        "AUDIO_SCORE_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    try:
        with run_router(load_settings(RouterEnv, config, env=env), readiness_interval_s=0.3) as base:
            yield base
    finally:
        stand_in.close()


async def _post_each(url: str, tries: int, make_content) -> list[httpx.Response]:
    """``tries`` uploads, one after the other, each on the connection httpx picks (the 413 closes each one)."""
    answers = []
    async with httpx.AsyncClient(timeout=60) as client:
        for _ in range(tries):
            answers.append(
                await client.post(
                    f"{url}/score",
                    content=make_content(),
                    headers={"content-type": "multipart/form-data; boundary=b"},
                )
            )
    return answers


def _form(audio_bytes: int) -> bytes:
    head = (
        b'--b\r\nContent-Disposition: form-data; name="uid"\r\n\r\nvideo1\r\n'
        b'--b\r\nContent-Disposition: form-data; name="cid"\r\n\r\nclip1\r\n'
        b'--b\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    )
    return head + b"\0" * audio_bytes + b"\r\n--b--\r\n"


def test_an_async_client_sending_twice_the_limit_reads_the_413_every_time(url) -> None:
    """Content-Length twice the limit: answered from the head, then the body is drained so nothing is reset."""
    form = _form(2 * MAX_UPLOAD)  # twice the limit, well inside the drain bound
    assert LIMIT < len(form) < DRAIN_FACTOR * LIMIT
    answers = asyncio.run(_post_each(url, 10, lambda: form))
    assert [a.status_code for a in answers] == [413] * 10
    for answer in answers:
        assert DETAIL in answer.json()["detail"]
        assert answer.headers["connection"] == "close"


def test_a_streamed_upload_over_the_limit_reads_its_413_every_time(url) -> None:
    """No Content-Length (chunked): refused once the count passes the limit, then drained to its last chunk."""
    form = _form(2 * LIMIT)

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(form), 16384):
            yield form[start : start + 16384]

    answers = asyncio.run(_post_each(url, 10, chunks))
    assert [a.status_code for a in answers] == [413] * 10
    for answer in answers:
        assert DETAIL in answer.json()["detail"]


def test_an_upload_within_the_limit_is_still_read_and_answered(url) -> None:
    """The drain changes nothing below the limit: a small non-audio form reaches the decoder and gets its 400."""
    answers = asyncio.run(_post_each(url, 1, lambda: _form(1000)))
    assert answers[0].status_code == 400, answers[0].text


def _trickle(url: str, declared: int, first: bytes, piece: bytes = b"\0" * 64) -> tuple[bytes, int, bool]:
    """Declare ``declared`` body bytes, send ``first``, then keep sending ``piece`` every 20 ms while reading
    whatever the router answers, until it closes the connection. Returns (answer, body bytes sent, whether the
    whole declared body went out). A 60 s socket deadline turns a hang into a failure."""
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60)
    answer = b""
    sent = 0
    deadline = time.monotonic() + 60
    try:
        sock.sendall(f"{HEAD}Content-Length: {declared}\r\n\r\n".encode() + first)
        sent = len(first)
        while sent < declared and time.monotonic() < deadline:
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                chunk = sock.recv(65536)
                if not chunk:
                    return answer, sent, False
                answer += chunk
            take = piece[: declared - sent]
            sock.sendall(take)
            sent += len(take)
    except (ConnectionResetError, BrokenPipeError):
        return answer, sent, False
    finally:
        sock.close()
    return answer, sent, sent >= declared


def test_a_slow_body_within_the_drain_bound_is_cut_off_by_the_body_timeout(url) -> None:
    """Declared at twice the limit (so the router would drain it) but sent 64 bytes per 20 ms: it would take
    minutes, and the router reads it for at most the body timeout, then closes with the 413 already sent."""
    declared = 2 * LIMIT
    answer, sent, finished = _trickle(url, declared, b"")
    assert not finished and sent < declared
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert DETAIL.encode() in answer


def test_a_declared_length_beyond_the_drain_bound_is_not_drained(url) -> None:
    """A Content-Length past DRAIN_FACTOR times the limit is answered and closed without reading the body."""
    declared = 50_000_000
    answer, sent, finished = _trickle(url, declared, b"x" * 1000)
    assert not finished and sent < declared
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert DETAIL.encode() in answer


def test_a_body_sent_whole_is_drained_and_the_connection_closed_cleanly(url) -> None:
    """Head and body written at once, the answer read only afterwards: the full 413 and then an orderly end of
    stream (no reset), because the router read the body before it closed."""
    form = _form(2 * MAX_UPLOAD)
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60)
    with sock:
        sock.sendall(f"{HEAD}Content-Length: {len(form)}\r\n\r\n".encode() + form)
        answer = b""
        while chunk := sock.recv(65536):  # a reset would raise here
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert answer.endswith(b'"}') and DETAIL.encode() in answer


def test_expect_100_continue_is_refused_without_a_100(url) -> None:
    """A client that waits for 100 Continue gets the 413 instead and sends no body."""
    sock = socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=60)
    with sock:
        sock.sendall(f"{HEAD}Content-Length: {2 * LIMIT}\r\nExpect: 100-continue\r\n\r\n".encode())
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"100 Continue" not in answer
