"""Deadlines travel with the request: a saturated real predictor refuses or drops what it cannot finish in time,
and computes nothing for a caller that has already gone.

The predictor is the real ``audio-score predictor`` (KServe ModelServer) with the tiny Whisper slowed to ~1 s a
batch and batches of one, so a burst of concurrent requests is far more than it can answer within their
deadline. The backend counts every waveform it computes (a line per waveform in a file), which is compared with
the answers the callers received.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from audio_score import v2
from audio_score.contract import DEADLINE_HEADER
from audio_score_tools.tiny_models import TinyModelSet

MODEL = "whisper-tiny"
BATCH_S = 1.0
DEADLINE_MS = 2500
#: The callers wait this much longer than the deadline they announce (what a caller subtracts for the answer's
#: way back); a request the predictor computes must reach them before they give up.
CALLER_SLACK_S = 1.0
CALLERS = 10

#: Slows the Whisper backend and counts computed waveforms (after computing) in $COMPUTED_LOG.
SLOW_COUNTING_BACKEND = f"""
import os, time
from audio_score.backends.whisper import WhisperBackend

_embed = WhisperBackend.embed

def _slow_counting_embed(self, waveforms, **kwargs):
    time.sleep({BATCH_S})
    result = _embed(self, waveforms, **kwargs)
    with open(os.environ["COMPUTED_LOG"], "a") as log:
        log.write("x\\n" * len(waveforms))
    return result

WhisperBackend.embed = _slow_counting_embed
"""


@pytest.fixture(scope="module")
def saturated(tmp_path_factory, tiny_models: TinyModelSet, start_predictor):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("deadlines")
    (root / "clips").mkdir()
    (root / "cache").mkdir()
    config = root / "config.json"
    model = {"key": MODEL, "type": "whisper", "model_id": str(tiny_models.whisper), "max_new_tokens": 4}
    config.write_text(json.dumps({"models": [model], "video_clip_dir": "clips", "cache_dir": "cache"}))
    computed = root / "computed.log"
    env = {
        "AUDIO_SCORE_MAX_BATCH_SIZE": "1",
        "AUDIO_SCORE_MAX_QUEUE_SIZE": "64",
        "AUDIO_SCORE_MAX_BATCH_WAIT_MS": "0",
        "COMPUTED_LOG": str(computed),
    }
    with start_predictor(config, ready_models=[MODEL], env=env, prelude=SLOW_COUNTING_BACKEND) as proc:
        proc.computed_log = computed
        yield proc


def computed(server) -> int:  # type: ignore[no-untyped-def]
    path: Path = server.computed_log
    return len(path.read_text().splitlines()) if path.exists() else 0


def embed(server, audio: np.ndarray, deadline_ms: int | None, wait_s: float) -> httpx.Response | None:  # type: ignore[no-untyped-def]
    """One embed request; None when the caller gave up (its timeout) before an answer came."""
    body, headers = v2.build_infer_request(audio)
    if deadline_ms is not None:
        headers[DEADLINE_HEADER] = str(deadline_ms)
    try:
        return httpx.post(v2.infer_url(server.http_url, MODEL), content=body, headers=headers, timeout=wait_s)
    except httpx.TimeoutException:
        return None


def metric(server, name: str) -> float:  # type: ignore[no-untyped-def]
    text = httpx.get(f"{server.http_url}/metrics", timeout=30).text
    prefix = f'audio_score_predictor_{name}{{model="{MODEL}"}} '
    return sum(float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix))


def test_saturated_predictor_computes_nothing_for_callers_that_gave_up(saturated) -> None:  # type: ignore[no-untyped-def]
    audio = np.random.default_rng(0).normal(0, 0.1, 8000).astype(np.float32)
    # One request first: the batcher learns its batch time (no estimate, no refusal before that).
    warm = embed(saturated, audio, DEADLINE_MS, 60)
    assert warm is not None and warm.status_code == 200, warm and warm.text
    before = computed(saturated)

    wait_s = DEADLINE_MS / 1000 + CALLER_SLACK_S
    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        answers = list(pool.map(lambda _: embed(saturated, audio, DEADLINE_MS, wait_s), range(CALLERS)))
    # Every computed result went to a caller still waiting; nobody timed out; the rest were fast 503s.
    assert all(a is not None for a in answers), "a caller gave up before its answer came"
    codes = sorted(a.status_code for a in answers if a is not None)
    assert set(codes) <= {200, 503}, codes
    ok = codes.count(200)
    assert computed(saturated) - before == ok, (codes, computed(saturated) - before)
    assert 1 <= ok < CALLERS, codes  # saturated: ~1 s a batch, 2.5 s deadlines, ten callers at once
    refused = [a for a in answers if a is not None and a.status_code == 503]
    assert all(int(a.headers["retry-after"]) >= 1 for a in refused)
    assert all("deadline" in v2.error_message(a.content) for a in refused)
    assert metric(saturated, "deadline_refused_total") + metric(saturated, "deadline_expired_total") == len(refused)
    assert metric(saturated, "computed_late_total") == 0
    print(f"answers {codes}; refused at admission/expired in queue:", metric(saturated, "deadline_refused_total"))
    assert "Traceback" not in saturated.log()  # refusals are counted, not logged with kserve's traceback


def test_without_a_deadline_nothing_is_refused_for_time_and_bad_deadlines_are_400(saturated) -> None:  # type: ignore[no-untyped-def]
    audio = np.full(1600, 0.05, np.float32)
    answer = embed(saturated, audio, None, 60)
    assert answer is not None and answer.status_code == 200
    body, headers = v2.build_infer_request(audio)
    for bad in ("soon", "-1", "0", "inf"):
        response = httpx.post(
            v2.infer_url(saturated.http_url, MODEL), content=body, headers={**headers, DEADLINE_HEADER: bad}, timeout=60
        )
        assert response.status_code == 400, (bad, response.text)
        assert DEADLINE_HEADER in v2.error_message(response.content)


def test_request_logs_are_off_by_default(saturated) -> None:  # type: ignore[no-untyped-def]
    log = saturated.log()
    assert "POST /v2/models" not in log  # uvicorn's access line
    assert "kserve.io" not in log  # kserve's per-request timing trace
    assert os.environ.get("AUDIO_SCORE_DEBUG_REQUEST_LOGS") is None


def test_grpc_carries_the_deadline_as_metadata(saturated) -> None:  # type: ignore[no-untyped-def]
    import asyncio

    import grpc
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    audio = np.full((1, 1600), 0.05, np.float32)

    def request() -> InferRequest:
        tensor = InferInput("audio", list(audio.shape), "FP32")
        tensor.set_data_from_numpy(audio)  # raw_input_contents
        return InferRequest(model_name=MODEL, infer_inputs=[tensor])

    async def calls() -> tuple[list[str], grpc.aio.AioRpcError, grpc.aio.AioRpcError]:
        client = InferenceGRPCClient(url=saturated.grpc_address, timeout=60)
        try:
            ok = await client.infer(request(), headers=[(DEADLINE_HEADER, "30000")])
            with pytest.raises(grpc.aio.AioRpcError) as bad:
                await client.infer(request(), headers=[(DEADLINE_HEADER, "soon")])
            # Far shorter than one batch (~1 s, learnt by now): refused at once, never computed.
            with pytest.raises(grpc.aio.AioRpcError) as short:
                await client.infer(request(), headers=[(DEADLINE_HEADER, "50")])
        finally:
            await client.close()
        return [o.name for o in ok.outputs], bad.value, short.value

    before = computed(saturated)
    names, bad, short = asyncio.run(calls())
    assert "embedding" in names
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT and DEADLINE_HEADER in bad.details()
    assert short.code() == grpc.StatusCode.UNAVAILABLE and "deadline" in short.details()
    assert computed(saturated) - before == 1
