"""``audio-score up``: the real cache build, predictor and router as subprocesses on free ports with tiny models.

The shared ``up_stack`` (conftest) serves the tests that only talk to it; the tests that stop or break ``up`` start
their own, with no cache build (and one model where two are not needed) to keep start-up short.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from audio_score_tools.up import UpError, check_port, check_socket_path, plan_predictors

from conftest import REPO_ROOT, free_port

ONE_MODEL = {"AUDIO_SCORE_MODEL_KEYS": "whisper-tiny"}


def run_up(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """``audio-score up`` expected to fail before it is ready."""
    cmd = [sys.executable, "-m", "audio_score", "up", *args]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT, env={**os.environ, **(env or {})}
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_gone(pids: list[int], timeout: float = 30) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [p for p in pids if not gone(p)]
        if not alive:
            return []
        time.sleep(0.2)
    return alive


def port_bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


# --- against the shared stack ----------------------------------------------------------------------------------


def test_banner_urls_answer(up_stack) -> None:
    out = "\n".join(up_stack.stdout)
    for expected in (
        f"{up_stack.url}/score",
        f"{up_stack.url}/docs",
        f"{up_stack.url}/models",
        f"{up_stack.predictor_url}/v2/models/whisper-tiny/infer",
        f"http://127.0.0.1:{up_stack.predictor_port + 1}/v2/models/higgs-tiny/infer",
        f"gRPC 127.0.0.1:{up_stack.grpc_port} ",
    ):
        assert expected in out, out
    assert httpx.get(f"{up_stack.url}/docs", timeout=10).status_code == 200
    assert httpx.get(f"{up_stack.url}/readyz", timeout=10).status_code == 200
    models = httpx.get(f"{up_stack.url}/models", timeout=10).json()
    assert "whisper-tiny" in json.dumps(models) and "higgs-tiny" in json.dumps(models)


def test_one_predictor_process_per_model(up_stack) -> None:
    """As in the cluster: each model in its own predictor process on its own port, the router told each URL."""
    children = psutil.Process(up_stack.proc.pid).children()
    commands = {" ".join(c.cmdline()): c for c in children}
    predictors = [c for c in commands if " predictor " in c]
    assert len(predictors) == 2, list(commands)
    for i, key in enumerate(("whisper-tiny", "higgs-tiny")):
        port = up_stack.predictor_port + i
        assert sum(f"--model {key}" in c and f"--http-port {port}" in c for c in predictors) == 1, predictors
        assert httpx.get(f"http://127.0.0.1:{port}/v2/models/{key}/ready", timeout=10).status_code == 200
        other = "higgs-tiny" if key == "whisper-tiny" else "whisper-tiny"
        assert httpx.get(f"http://127.0.0.1:{port}/v2/models/{other}/ready", timeout=10).status_code != 200
    assert sum(" router " in c for c in commands) == 1, list(commands)
    assert not any(" cache-build " in c for c in commands), "the cache build must be finished and reaped"
    router = next(p for c, p in commands.items() if " router " in c)
    urls = router.environ()["AUDIO_SCORE_PREDICTOR_URLS"]
    p = up_stack.predictor_port
    assert urls == f"whisper-tiny=http://127.0.0.1:{p},higgs-tiny=http://127.0.0.1:{p + 1}"


def test_cache_was_built_before_serving(up_stack) -> None:
    ws = up_stack.workspace
    for key in ("whisper-tiny", "higgs-tiny"):
        for uid, cid in ws.clips:
            assert (ws.cache_dir / key / uid / cid / "meta.json").is_file(), (key, uid, cid)
    assert any("cache ready: 6 entries built" in line for line in up_stack.stdout), up_stack.stdout


# --- start-up failures: one line on stderr, non-zero exit ------------------------------------------------------


def test_port_in_use_gives_one_clear_line(workspace) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = run_up("--config", str(workspace.config_path), "--port", str(port), timeout=60)
        assert done.returncode != 0
        lines = error_lines(done.stderr)
        assert len(lines) == 1, done.stderr
        assert f"port {port}" in lines[0] and "in use" in lines[0] and "--port" in lines[0]
        assert "Traceback" not in done.stderr

        done = run_up("--config", str(workspace.config_path), "--port", str(free_port()), "--predictor-port", str(port))
        lines = error_lines(done.stderr)
        assert done.returncode != 0 and len(lines) == 1, done.stderr
        assert "--predictor-port" in lines[0]
    assert not list(workspace.cache_dir.iterdir()), "nothing may start when a port is taken"


@pytest.mark.parametrize(
    "config_text, expected",
    [
        ("{not json", "not valid JSON"),
        ('{"models": [], "video_clip_dir": "clips", "cache_dir": "cache", "colour": 1}', "invalid configuration"),
    ],
)
def test_config_error_gives_one_line(tmp_path: Path, config_text: str, expected: str) -> None:
    config = tmp_path / "config.json"
    config.write_text(config_text)
    done = run_up("--config", str(config), "--port", str(free_port()), timeout=60)
    assert done.returncode != 0
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("audio-score up: error:") and expected in lines[0]
    assert "Traceback" not in done.stderr


def test_missing_config_and_clip_folder(tmp_path: Path, workspace) -> None:
    done = run_up("--config", str(tmp_path / "nope.json"), timeout=60)
    assert done.returncode != 0 and len(error_lines(done.stderr)) == 1 and "not found" in done.stderr

    config = json.loads(workspace.config_path.read_text())
    config["video_clip_dir"] = "no-such-folder"
    workspace.config_path.write_text(json.dumps(config))
    done = run_up("--config", str(workspace.config_path), "--port", str(free_port()), timeout=60)
    lines = error_lines(done.stderr)
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert "no-such-folder" in lines[0] and "video_clip_dir" in lines[0]


@pytest.mark.parametrize(
    "variable", ["AUDIO_SCORE_MAX_QUEUE_SIZE=0", "AUDIO_SCORE_DISABLE_CACHE_FLUSH=maybe", "AUDIO_SCORE_SERVER_PORT=-1"]
)
def test_a_bad_variable_of_any_part_it_starts_stops_up_before_anything_starts(workspace, variable: str) -> None:
    """up starts the router, the predictors and the cache Job with its own environment: each one's variables are
    checked first (one line naming the variable), where each part alone checks only its own."""
    name, value = variable.split("=")
    done = run_up("--config", str(workspace.config_path), "--port", str(free_port()), env={name: value}, timeout=60)
    lines = error_lines(done.stderr)
    assert done.returncode != 0 and len(lines) == 1, done.stderr
    assert lines[0].startswith(f"audio-score up: error: {name}={value!r}: "), lines[0]
    assert not list(workspace.cache_dir.iterdir()), "nothing may start"
    if name == "AUDIO_SCORE_DISABLE_CACHE_FLUSH":  # the Job's variable does not matter when up builds no cache:
        with socket.socket() as busy:  # up gets past the settings and stops at the next check, the busy port
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            port = busy.getsockname()[1]
            args = ["--config", str(workspace.config_path), "--no-cache-build", "--port", str(port)]
            done = run_up(*args, env={name: value}, timeout=60)
        assert name not in done.stderr and f"port {port}" in done.stderr, done.stderr


@pytest.mark.parametrize("cache_build", [True, False], ids=["cache-build", "no-cache-build"])
def test_no_model_loading_gives_one_line(workspace, cache_build: bool) -> None:
    config = json.loads(workspace.config_path.read_text())
    config["models"] = [{"key": "broken", "type": "whisper", "model_id": "./no-such-checkpoint"}]
    workspace.config_path.write_text(json.dumps(config))
    args = ["--config", str(workspace.config_path), "--port", str(free_port()), "--predictor-port", str(free_port())]
    if not cache_build:
        args.append("--no-cache-build")
    done = run_up(*args)
    assert done.returncode != 0
    lines = error_lines(done.stderr)
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("audio-score up: error:")
    assert "no model loaded" in lines[0] and "broken" in lines[0]
    assert ("cache build" in lines[0]) == cache_build
    assert "Traceback" not in done.stderr


# --- stopping --------------------------------------------------------------------------------------------------


def test_sigterm_stops_every_process(workspace, start_up) -> None:
    # Two router workers: uvicorn forks them, so stopping must reach the whole process group. One shared predictor
    # process hosts both models here (--shared-predictor).
    with start_up(workspace.config_path, args=["--no-cache-build", "--workers", "2", "--shared-predictor"]) as up:
        tree = descendants(up.proc.pid)
        pids = [p.pid for p in tree]
        assert len(pids) >= 3, [p.cmdline() for p in tree]  # predictor, router, its workers
        commands = [" ".join(c.cmdline()) for c in psutil.Process(up.proc.pid).children()]
        assert sum(" predictor " in c for c in commands) == 1 and not any("--model" in c for c in commands)
        for key in ("whisper-tiny", "higgs-tiny"):
            assert httpx.get(f"{up.predictor_url}/v2/models/{key}/ready", timeout=10).status_code == 200
        clip = workspace.clips[("video1", "clip1")]
        for key in ("whisper-tiny", "higgs-tiny"):
            answer = score(up.url, clip, key)
            assert answer.status_code == 200, answer.text
            assert answer.json()["sim_score"] == pytest.approx(1.0, abs=1e-3)

        up.proc.send_signal(signal.SIGTERM)
        assert up.proc.wait(timeout=60) == 0, up.stderr()
        # Checked at once: `up` itself waits for every process it started before it exits.
        assert [p for p in pids if not gone(p)] == [], "processes left behind after SIGTERM"
        assert port_bindable(up.port) and port_bindable(up.predictor_port)
        assert "Traceback" not in up.stderr()


def score(url: str, clip: Path, model: str) -> httpx.Response:
    with clip.open("rb") as fh:
        return httpx.post(
            f"{url}/score", data={"uid": "video1", "cid": "clip1", "model": model}, files={"audio": fh}, timeout=120
        )


def wait_until(predicate, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.3)


def test_a_killed_predictor_is_restarted_while_the_other_model_keeps_scoring(workspace, start_up) -> None:
    """Like a Deployment's pod: SIGKILL one model's predictor; the other model keeps scoring, the killed one is
    restarted (counted in the status line and in up.log) and scores again."""
    clip = workspace.clips[("video1", "clip1")]
    with start_up(workspace.config_path, args=["--no-cache-build"]) as up:
        children = {" ".join(p.cmdline()): p for p in psutil.Process(up.proc.pid).children()}
        victim = next(p for cmd, p in children.items() if "--model whisper-tiny" in cmd)
        survivors = [p.pid for cmd, p in children.items() if "--model whisper-tiny" not in cmd]
        assert score(up.url, clip, "whisper-tiny").status_code == 200

        victim.kill()
        wait_until(lambda: any("predictor-whisper-tiny exited (signal SIGKILL)" in line for line in up.stdout), 60)
        # Meanwhile the other model is served as before.
        other = score(up.url, clip, "higgs-tiny")
        assert other.status_code == 200, other.text
        assert other.json()["sim_score"] == pytest.approx(1.0, abs=1e-3)
        down = score(up.url, clip, "whisper-tiny")
        assert down.status_code in (200, 503), down.text  # 200 only if it is already back

        wait_until(lambda: any("predictor-whisper-tiny ready again (restarts: 1)" in line for line in up.stdout))
        wait_until(lambda: score(up.url, clip, "whisper-tiny").status_code == 200, 60)
        again = score(up.url, clip, "whisper-tiny")
        assert again.status_code == 200 and again.json()["sim_score"] == pytest.approx(1.0, abs=1e-3)

        assert up.proc.poll() is None, "up must keep running"
        assert [p for p in survivors if gone(p)] == [], "the router and the other predictor were not restarted"
        events = [json.loads(line) for line in (up.log_dir / "up.log").read_text().splitlines()]
        assert [(e["event"], e["child"]) for e in events] == [
            ("exited", "predictor-whisper-tiny"),
            ("restarted", "predictor-whisper-tiny"),
            ("ready", "predictor-whisper-tiny"),
        ]
        assert events[1]["restarts"] == 1 and events[0]["returncode"] == -signal.SIGKILL


def test_a_predictor_whose_models_cannot_load_with_this_config_is_not_restarted(workspace, start_up) -> None:
    """A ``language`` Whisper knows but the checkpoint lacks fails the same way on every start: its predictor exits
    78 (EXIT_CONFIG), `up` says so once and never restarts it, and the other model keeps scoring."""
    from audio_score.errors import EXIT_CONFIG

    config = json.loads(workspace.config_path.read_text())
    whisper = next(m for m in config["models"] if m["key"] == "whisper-tiny")
    config["models"] = [whisper, {**whisper, "key": "whisper-ko", "language": "ko"}]
    workspace.config_path.write_text(json.dumps(config))
    clip = workspace.clips[("video1", "clip1")]
    with start_up(workspace.config_path, args=["--no-cache-build"]) as up:
        assert score(up.url, clip, "whisper-tiny").status_code == 200
        down = score(up.url, clip, "whisper-ko")
        assert down.status_code == 503, down.text
        warning = next(line for line in up.stderr().splitlines() if "predictor-whisper-ko exited" in line)
        assert f"(exit {EXIT_CONFIG})" in warning and "not restarted" in warning, warning
        assert "language 'ko' is not one of this checkpoint's languages" in warning
        log = up.log_dir / "up.log"
        events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        assert not [e for e in events if e["event"] == "restarted"], events
        assert up.proc.poll() is None


def test_children_die_with_up_even_when_it_is_killed(workspace, start_up) -> None:
    """SIGKILL leaves `up` no chance to clean up: its children must notice their parent's death themselves."""
    with start_up(workspace.config_path, args=["--no-cache-build"], env=ONE_MODEL) as up:
        children = [p.pid for p in psutil.Process(up.proc.pid).children()]
        assert len(children) == 2  # the predictor of the one model, the router
        up.proc.kill()
        up.proc.wait(timeout=30)
        assert wait_gone(children, timeout=60) == []


# --- the checks themselves ---------------------------------------------------------------------------------------


def test_check_port_and_socket(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UpError, match="already in use"):
            check_port("127.0.0.1", port, "router", "--port")
    check_port("127.0.0.1", port, "router", "--port")  # free again

    path = tmp_path / "router.sock"
    with socket.socket(socket.AF_UNIX) as live:
        live.bind(str(path))
        live.listen()
        with pytest.raises(UpError, match="already in use"):
            check_socket_path(path)
    assert path.exists()
    check_socket_path(path)  # nobody listens now: a stale file, removed
    assert not path.exists()


def test_restart_backoff_doubles_up_to_a_minute() -> None:
    from audio_score_tools.up import BACKOFF_MAX_S, Supervised

    unit = Supervised.__new__(Supervised)  # the backoff only reads the failure count
    delays = []
    for failures in range(1, 10):
        unit.failures = failures
        delays.append(unit.backoff_s())
    assert delays == [1, 2, 4, 8, 16, 32, BACKOFF_MAX_S, BACKOFF_MAX_S, BACKOFF_MAX_S]


def test_overlapping_rest_and_grpc_port_ranges_are_refused_before_anything_starts() -> None:
    # Each port is free on its own, but one per model from each flag would put two servers on 9001.
    args = argparse.Namespace(shared_predictor=False, predictor_port=9000, grpc_port=9001, port=8000)
    with pytest.raises(UpError, match="9001 is in both the REST range"):
        plan_predictors(["whisper-tiny", "higgs-tiny"], args)
    args.grpc_port = 9100
    groups = plan_predictors(["whisper-tiny", "higgs-tiny"], args)
    assert [(g.http_port, g.grpc_port) for g in groups] == [(9000, 9100), (9001, 9101)]


def test_free_port_blocks_lie_outside_the_ephemeral_range_and_avoid_what_they_are_told() -> None:
    """Ports for test servers are drawn below the kernel's ephemeral range, where no client connection can take them
    between the choice and the server's bind (the cause of a predictor's "address already in use" under load)."""
    import socket

    from audio_score_tools.procs import LOW_PORT, ephemeral_ports, free_port_block

    ephemeral = ephemeral_ports()
    if ephemeral is None:
        pytest.skip("no /proc/sys/net/ipv4/ip_local_port_range here: the OS picks the ports")
    first = free_port_block(8)
    block = range(first, first + 8)
    assert block.start >= LOW_PORT and block.stop <= ephemeral.start
    second = free_port_block(8, avoid=[block])
    assert second + 8 <= block.start or block.stop <= second  # no overlap with the range to avoid
    for port in range(second, second + 8):  # every port of the block is free right now
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


# --- the process helpers up is built on (audio_score_tools.procs) ----------------------------------------------


def test_stop_process_leaves_nothing_of_the_group_a_dead_leader_forked() -> None:
    """A leader that exits leaving a forked worker in its group (as uvicorn --workers can): stopping it stops the
    worker too, so no orphan holds the port; stopping it again is harmless."""
    from audio_score_tools.procs import group_alive, stop_process

    leader = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import subprocess, sys; w = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']);"
            " print(w.pid, flush=True)",
        ],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert leader.stdout is not None
    worker = int(leader.stdout.readline())
    assert leader.wait(timeout=60) == 0
    assert group_alive(leader.pid) and not gone(worker)  # the worker outlived its leader, in the same group
    assert stop_process(leader, grace_s=10) == 0
    assert wait_gone([worker], timeout=10) == []
    assert not group_alive(leader.pid)
    assert stop_process(leader, grace_s=10) == 0


def test_poll_until_returns_the_probe_answer_and_tells_exit_from_timeout() -> None:
    """``up`` waits for its router with poll_until: the probe's own answer comes back, a child that exits first
    is ExitedEarly (with its details), one that never answers is NotReadyInTime, and ``sleep`` may cut it short."""
    from audio_score_tools.procs import ExitedEarly, NotReadyInTime, describe_exit, poll_until, stop_process

    done = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    done.wait(timeout=60)
    with pytest.raises(ExitedEarly, match=r"cache-build exited with 3 during start-up:\nlast words"):
        poll_until(done, lambda: {"never": 1}, timeout_s=5, what="cache-build", details=lambda: "last words")
    assert describe_exit(3) == "exit 3" and describe_exit(-signal.SIGKILL) == "signal SIGKILL"

    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"], start_new_session=True)
    try:
        answers = iter([None, {}, {"models": ["a"]}])
        assert poll_until(alive, lambda: next(answers), timeout_s=30, poll_s=0.01) == {"models": ["a"]}
        with pytest.raises(NotReadyInTime, match="router not ready after 0 s"):
            poll_until(alive, lambda: None, timeout_s=0, what="router", poll_s=0.01)

        class Interrupted(Exception):
            pass

        def stop_now(_seconds: float) -> None:
            raise Interrupted

        with pytest.raises(Interrupted):
            poll_until(alive, lambda: False, timeout_s=30, sleep=stop_now)
    finally:
        assert describe_exit(stop_process(alive, grace_s=10) or 0) == "signal SIGTERM"
