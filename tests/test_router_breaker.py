"""The router's circuit breaker against a frozen predictor (a socket that accepts and never answers) with a real
predictor beside it: only the frozen model fails, and it fails fast until its predictor answers again.

One real ``audio-score predictor`` (KServe ModelServer, tiny models, cache built by the real Job) hosts both models.
The router reaches ``higgs-tiny`` directly and ``whisper-tiny`` through a loopback TCP port that is first frozen
(connections accepted, never answered) and then becomes a plain forwarder to the live predictor, as when a
frozen pod is replaced by a healthy one behind the same Service address.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from audio_score.cli import main as cli_main
from audio_score.env_settings import RouterEnv
from audio_score.settings import load_settings
from audio_score_tools.workspace import build_workspace

from conftest import run_router

#: The router's predictor timeout: long enough that "waited for it" and "failed fast" cannot be confused.
TIMEOUT_S = 8.0


class FreezablePort:
    """A loopback port that is ``frozen`` (accepts connections, never answers) or forwards to ``target``."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = True
        self.held: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self.frozen:
                self.held.append(conn)  # read nothing, answer nothing, close nothing
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            for src, dst in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                dst.sendall(data)
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._closed = True
        self.listener.close()
        for conn in self.held:
            conn.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_models, start_predictor):
    ws = build_workspace(tmp_path_factory.mktemp("breaker-ws"), models=tiny_models)
    assert cli_main(["cache-build", "--config", str(ws.config_path), "--no-progress"]) == 0
    with start_predictor(ws.config_path, ready_models=["whisper-tiny", "higgs-tiny"]) as predictor:
        yield ws, predictor


@pytest.fixture
def frozen(live) -> Iterator[FreezablePort]:
    port = FreezablePort(live[1].http_port)
    yield port
    port.close()


def score(url: str, clip: Path, model: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    with clip.open("rb") as fh:
        response = httpx.post(
            f"{url}/score",
            data={"uid": "video1", "cid": "clip1", "model": model},
            files={"audio": fh},
            timeout=4 * TIMEOUT_S,
        )
    return response, time.monotonic() - started


def wait_for(predicate, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_a_frozen_predictor_fails_fast_and_only_its_model(live, frozen: FreezablePort) -> None:
    ws, predictor = live
    env = {
        "AUDIO_SCORE_PREDICTOR_URLS": f"whisper-tiny={frozen.url},higgs-tiny={predictor.http_url}",
        "AUDIO_SCORE_PREDICTOR_TIMEOUT_S": str(TIMEOUT_S),
    }
    clip = ws.clips[("video1", "clip1")]
    with run_router(load_settings(RouterEnv, ws.config_path, env=env), readiness_interval_s=0.5) as url:
        # The first request may be the one that finds the predictor frozen (504 after the timeout) or may come
        # after the background poll has already found it (503 at once); either way the model is then known down.
        first, _ = score(url, clip, "whisper-tiny")
        assert first.status_code in (503, 504), first.text

        for _ in range(3):
            response, elapsed = score(url, clip, "whisper-tiny")
            assert response.status_code == 503, response.text
            assert elapsed < TIMEOUT_S / 2, f"waited {elapsed:.1f} s: the breaker did not fail fast"
            assert int(response.headers["Retry-After"]) >= 1
            assert "whisper-tiny" in response.json()["detail"] and "retry" in response.json()["detail"]

            other, _ = score(url, clip, "higgs-tiny")
            assert other.status_code == 200, other.text
            assert other.json()["sim_score"] == pytest.approx(1.0, abs=1e-3)

        # The default model skips the frozen one without waiting for it.
        with clip.open("rb") as fh:
            started = time.monotonic()
            default = httpx.post(
                f"{url}/score", data={"uid": "video1", "cid": "clip1"}, files={"audio": fh}, timeout=60
            )
        assert default.status_code == 200 and default.json()["model"] == "higgs-tiny", default.text
        assert time.monotonic() - started < TIMEOUT_S / 2

        # The frozen predictor is replaced by a live one: the background probe closes the breaker.
        frozen.frozen = False

        def whisper_ready() -> bool:
            models = httpx.get(f"{url}/models", timeout=10).json()["models"]
            return next(m for m in models if m["key"] == "whisper-tiny")["ready"]

        wait_for(whisper_ready)
        response, _ = score(url, clip, "whisper-tiny")
        assert response.status_code == 200, response.text
        assert response.json()["sim_score"] == pytest.approx(1.0, abs=1e-3)
