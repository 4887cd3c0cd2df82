"""Fuzzing the router: mutated real files of every format POSTed to /score on the real app under uvicorn.

The predictor is a stand-in (test_router_edges.StandIn) that scores whatever arrives, so every upload that
decodes gets a 200 and the rest get the decoder's 4xx: 400 (undecodable, empty, silent) or 413 (over the
limits). A 5xx, another status, a body that is not ``{"detail": "..."}``, or no answer within the client's timeout
(a hang) fails. Both decoder backends serve.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fuzzing import examples, mutated_bytes, mutated_media, seed_media
from hypothesis import example, given
from test_router_edges import StandIn

from audio_score.env_settings import RouterEnv
from audio_score.settings import load_settings
from audio_score_tools.crafted import wav_bytes

from conftest import run_router

MAX_SECONDS = 5


@pytest.fixture(scope="module")
def stand_in() -> Iterator[StandIn]:
    server = StandIn()
    yield server
    server.close()


@pytest.fixture(scope="module", params=["pyav", "pydub"])
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, stand_in: StandIn):
    config = tmp_path_factory.mktemp("fuzz-router") / "config.json"
    models = [{"key": "alpha", "type": "whisper", "model_id": "/nonexistent"}]
    config.write_text(json.dumps({"models": models, "video_clip_dir": "c", "cache_dir": "k", "decoder": request.param}))
    env = {
        "AUDIO_SCORE_PREDICTOR_URL": stand_in.url,
        "AUDIO_SCORE_MAX_AUDIO_SECONDS": str(MAX_SECONDS),
    }
    settings = load_settings(RouterEnv, Path(config), env=env)
    # The client's timeout turns a hang into a failed example instead of a blocked run.
    with run_router(settings, readiness_interval_s=0.3) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield request.param, http


@example(case=("crafted", wav_bytes(rate=2**31 - 1)))
@example(case=("crafted", wav_bytes(bits=0)))
@given(case=mutated_media())
@examples(ci=300)
def test_every_mutated_upload_is_scored_or_refused_with_a_4xx(client, case: tuple[str, bytes]) -> None:
    _, http = client
    fmt, data = case
    files = {"audio": (f"take{fmt}", data, "application/octet-stream")}
    response = http.post("/score", data={"uid": "video1", "cid": "clip1"}, files=files)
    assert response.status_code in (200, 400, 413), (response.status_code, response.text)
    body = response.json()
    if response.status_code == 200:
        assert 0 <= body["sim_score"] <= 1
    else:
        assert list(body) == ["detail"] and body["detail"].startswith("audio: "), body


BOUNDARY = "fuzzb0undary"


def multipart_body() -> bytes:
    """A valid /score form (uid, cid, a short WAV) as the bytes a client sends."""
    fields = "".join(
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'
        for k, v in (("uid", "video1"), ("cid", "clip1"))
    )
    head = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n'
    return fields.encode() + head.encode() + seed_media()[".wav"][:4000] + f"\r\n--{BOUNDARY}--\r\n".encode()


@given(body=mutated_bytes(multipart_body()))
@examples(ci=150)
def test_every_mutated_form_is_answered_without_a_5xx(client, body: bytes) -> None:
    """The form itself mutated (boundaries, part headers, field values): parse errors are 4xx as well."""
    _, http = client
    headers = {"content-type": f"multipart/form-data; boundary={BOUNDARY}"}
    response = http.post("/score", content=body, headers=headers)
    assert response.status_code in (200, 400, 413, 422), (response.status_code, response.text)
    assert response.status_code == 200 or isinstance(response.json()["detail"], str)
