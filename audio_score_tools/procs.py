"""Start a subcommand, wait until it is ready, stop its process group: the one helper that ``up``, its callers,
the tests, the benchmarks and the demo share, with :func:`free_port`.

A child started here leads its own session (``start_new_session``), so stopping it reaches whatever it forked
(uvicorn workers, ``up``'s predictors) and the terminal's Ctrl+C does not hit it twice. ``up`` keeps only what
is its own (pumping a child's output, restarts with backoff); signalling a group, stopping it whole and polling a
probe until ready are here (:func:`signal_group`, :func:`stop_process`, :func:`poll_until`).
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: Where :func:`free_port_block` looks on Linux: below the kernel's ephemeral range, which is where every outgoing
#: connection takes its local port. A port the OS hands out as free (bind to 0) lies *in* that range, so between
#: choosing it and the server binding it, any client connection on the machine (httpx to a predictor, a readiness
#: probe) may take it: seen as a predictor failing with "address already in use" in a busy test run.
LOW_PORT = 10000
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")


def ephemeral_ports() -> range | None:
    """The kernel's ephemeral port range (Linux), or None where it cannot be read."""
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return None
    return range(low, high + 1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, outside the ephemeral range where possible (:func:`free_port_block`)."""
    return free_port_block(1, host)


def _bindable(block: range, host: str) -> bool:
    try:
        with contextlib.ExitStack() as stack:
            for port in block:
                sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
                sock.bind((host, port))
    except OSError:
        return False
    return True


def free_port_block(count: int, host: str = "127.0.0.1", avoid: Sequence[range] = ()) -> int:
    """The first of ``count`` consecutive TCP ports all free on ``host`` right now and outside every ``avoid``
    range: for a server that numbers its ports up from one flag (``up --predictor-port``, one port per model).

    On Linux the block is drawn at random below the ephemeral range (see :data:`LOW_PORT`), so no outgoing
    connection can take it before the server binds it; elsewhere the OS picks the first port."""
    ephemeral = ephemeral_ports()
    draw = random.SystemRandom()

    def overlaps(block: range) -> bool:
        return any(block.start < other.stop and other.start < block.stop for other in avoid)

    if ephemeral is not None and ephemeral.start - count > LOW_PORT:
        for _ in range(10_000):
            base = draw.randrange(LOW_PORT, ephemeral.start - count)
            block = range(base, base + count)
            if not overlaps(block) and _bindable(block, host):
                return base
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            base = int(sock.getsockname()[1])
        block = range(base, base + count)
        if block.stop <= 65536 and not overlaps(block) and _bindable(block[1:], host):
            return base


def subcommand(*args: str) -> list[str]:
    """``python -m audio_score ARGS``: the argv of an ``audio-score`` subcommand in this interpreter."""
    return [sys.executable, "-m", "audio_score", *args]


def spawn(argv: Sequence[str], *, env: dict[str, str] | None = None, **popen: Any) -> subprocess.Popen[Any]:
    """Start ``argv`` leading its own session (so :func:`stop_process` reaches all it forks and the terminal's
    Ctrl+C does not hit it twice), unbuffered, with this process's environment plus ``env``."""
    return subprocess.Popen(
        list(argv), env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}, start_new_session=True, **popen
    )


def http_ok(url: str, timeout_s: float = 5.0) -> Callable[[], bool]:
    """A readiness probe: ``url`` answers 200."""

    def probe() -> bool:
        import httpx

        try:
            return httpx.get(url, timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    return probe


def signal_group(pgid: int, sig: int) -> None:
    """Send ``sig`` to process group ``pgid``; a group already gone (or no longer ours) is not an error."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether any process of group ``pgid`` is left (a dead leader's forked workers keep the group alive)."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def describe_exit(code: int) -> str:
    """``exit 1`` or ``signal SIGKILL`` from a Popen return code."""
    if code >= 0:
        return f"exit {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"


#: How long :func:`stop_process` gives what a dead leader left in its group before SIGKILL.
SWEEP_GRACE_S = 5.0


def stop_process(proc: subprocess.Popen[Any], grace_s: float = 30.0, *, group: bool = True) -> int | None:
    """SIGTERM (to the whole process group with ``group``), then SIGKILL if it outlives ``grace_s``; returns the
    exit code. With ``group``, whatever the leader forked and left behind (uvicorn ``--workers``) is stopped too,
    so no orphan keeps holding the port."""

    def send(sig: int) -> None:
        if group:
            signal_group(proc.pid, sig)
        else:
            proc.send_signal(sig)

    if proc.poll() is None:
        send(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            send(signal.SIGKILL)
            proc.wait(timeout=30)
    if group and group_alive(proc.pid):
        signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + min(grace_s, SWEEP_GRACE_S)
        while group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal_group(proc.pid, signal.SIGKILL)
    return proc.returncode


def stop_leader(proc: subprocess.Popen[Any], grace_s: float = 60.0) -> int | None:
    """SIGTERM to ``proc`` alone (a supervisor such as ``up`` stops its own children), and SIGKILL to its whole
    process group only if it outlives ``grace_s``; returns the exit code."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            stop_process(proc, 0)
    return proc.returncode


class StartupFailed(RuntimeError):
    """A child did not become ready: it exited (:class:`ExitedEarly`) or ran out of time (:class:`NotReadyInTime`)."""


class ExitedEarly(StartupFailed):
    """The child exited before its probe said ready."""


class NotReadyInTime(StartupFailed):
    """The probe did not say ready within the time allowed."""


def poll_until(
    proc: subprocess.Popen[Any],
    probe: Callable[[], T],
    *,
    timeout_s: float,
    what: str = "process",
    details: Callable[[], str] = lambda: "",
    poll_s: float = 0.3,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``probe()`` until it returns something truthy and return that. The child's exit is checked first on
    each round (an answer on its port from someone else does not count once it is gone). ``sleep`` may raise to
    cut the wait short (``up`` stops on a signal). Raises :class:`ExitedEarly` or :class:`NotReadyInTime`, whose
    message ends with ``details()`` (e.g. the tail of the child's log)."""
    started = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise ExitedEarly(f"{what} exited with {proc.returncode} during start-up:\n{details()}")
        result = probe()
        if result:
            return result
        if time.monotonic() - started > timeout_s:
            raise NotReadyInTime(f"{what} not ready after {timeout_s:.0f} s:\n{details()}")
        sleep(poll_s)


def wait_ready(
    proc: subprocess.Popen[Any],
    ready: Callable[[], bool],
    *,
    timeout_s: float,
    what: str = "process",
    details: Callable[[], str] = lambda: "",
    poll_s: float = 0.3,
) -> float:
    """:func:`poll_until` for a yes/no probe; returns the seconds it took."""
    started = time.monotonic()
    poll_until(proc, ready, timeout_s=timeout_s, what=what, details=details, poll_s=poll_s)
    return time.monotonic() - started


def log_tail(path: Path, chars: int = 4000) -> Callable[[], str]:
    """``details`` for :func:`wait_ready`: the end of a log file."""
    return lambda: path.read_text(errors="replace")[-chars:] if path.exists() else ""


@contextlib.contextmanager
def started(
    argv: Sequence[str],
    *,
    ready: Callable[[], bool],
    timeout_s: float,
    what: str = "process",
    log_path: Path | None = None,
    details: Callable[[], str] | None = None,
    grace_s: float = 30.0,
    **popen: Any,
) -> Iterator[subprocess.Popen[Any]]:
    """Start ``argv`` in its own session (output to ``log_path`` unless ``popen`` says otherwise), wait until
    ``ready()``, yield the process, and stop its group on the way out, also when start-up failed."""
    with contextlib.ExitStack() as stack:
        if log_path is not None and "stdout" not in popen:
            log = stack.enter_context(log_path.open("wb"))
            popen.update(stdout=log, stderr=subprocess.STDOUT)
        proc = spawn(argv, **popen)
    if details is None:
        details = log_tail(log_path) if log_path is not None else (lambda: "")
    try:
        wait_ready(proc, ready, timeout_s=timeout_s, what=what, details=details)
        yield proc
    finally:
        stop_process(proc, grace_s)
