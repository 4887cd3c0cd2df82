"""Everything on this machine, no cluster: build the reference cache, start ONE predictor server hosting every
configured model and the router pointing at it, print the URLs, and stop every process it started on Ctrl+C or
SIGTERM.

The seed ran several workers behind a local Nginx gateway. Here the router scales with ``--workers`` (uvicorn
worker processes) or binds a Unix socket (``--socket``) behind your own proxy, while the models stay in the one
predictor process, so the GPU holds each model once, not once per worker.

A port in use, a config error, or no model loading ends it with one line on stderr and a non-zero exit. Each
child's output goes to a log file (printed at start); once everything is ready it is also shown here, prefixed
with the child's name.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import errno
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from audio_score.errors import AudioScoreError, ConfigError

#: How long a stopping child gets between SIGTERM and SIGKILL.
DEFAULT_GRACE_S = 10.0
DEFAULT_START_TIMEOUT_S = 600.0
_PARENT_ENV = "_AUDIO_SCORE_UP_PARENT"
_CHILD_CODE = "from audio_score.up import child_main; child_main()"
#: A tqdm line of the cache build, up to the end of its "[elapsed<left, rate]" part (a warning may follow it).
_BAR = re.compile(r"^cache [A-Za-z0-9._-]+:[^\r\n]*?\| *\d+/\d+ \[[^\]\r\n]*\]")
_print_lock = threading.Lock()


class UpError(AudioScoreError):
    """``up`` could not start or keep running; the message is the one line the user sees."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(part.strip() for part in message.splitlines() if part.strip()))


def child_main() -> None:
    """Entry point of every child: die with ``up`` even if ``up`` is SIGKILLed, then run the subcommand."""
    parent = int(os.environ.pop(_PARENT_ENV, "0") or 0)
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
    if parent and os.getppid() != parent:  # up was gone before the death signal was armed
        sys.exit(1)
    from audio_score.cli import main

    sys.exit(main(sys.argv[1:]))


def say(message: str) -> None:
    """Progress and the banner go to stdout; stderr carries errors only."""
    with _print_lock:
        print(message, flush=True)


def _write_err(text: str) -> None:
    with _print_lock:
        sys.stderr.write(text)
        sys.stderr.flush()


# --- ports ---------------------------------------------------------------------------------------------------


def check_port(host: str, port: int, what: str, flag: str) -> None:
    """Refuse to start when ``host:port`` cannot be bound (in use, or not an address of this machine)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise UpError(f"{what}: cannot resolve host {host!r} ({exc.strerror}); check --host") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise UpError(
                    f"port {port} ({what}) is already in use on {host}; stop whatever holds it "
                    f"(another `audio-score up`?) or pick another port with {flag}"
                ) from None
            raise UpError(f"cannot bind {host}:{port} ({what}): {exc.strerror}; check {flag}") from None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_socket_path(path: Path) -> None:
    """A live Unix socket is 'in use'; a stale socket file from a crashed run is removed."""
    if not path.exists():
        if not path.parent.is_dir():
            raise UpError(f"--socket {path}: folder {path.parent} does not exist")
        return
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: stale
            return
    raise UpError(f"socket {path} is already in use (another `audio-score up`?); stop it or pick another --socket")


# --- children ------------------------------------------------------------------------------------------------


class Child:
    """A subcommand in its own process group, its output pumped to a log file (and, once ready, to stderr)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        log_dir: Path,
        *,
        progress_bars: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.stdout_path = log_dir / f"{name}.out"
        self.tail: collections.deque[str] = collections.deque(maxlen=300)
        self.forward = False
        env = {**os.environ, "PYTHONUNBUFFERED": "1", _PARENT_ENV: str(os.getpid()), **(env or {})}
        # A bar-drawing child keeps stdout (its JSON summary) apart; the servers' stdout and stderr are one log.
        self._stdout_file: IO[bytes] | None = self.stdout_path.open("wb") if progress_bars else None
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _CHILD_CODE, *argv],
            stdin=subprocess.DEVNULL,
            stdout=self._stdout_file if progress_bars else subprocess.PIPE,
            stderr=subprocess.PIPE if progress_bars else subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group: stopped as a whole, untouched by the terminal's ^C
        )
        stream = self.proc.stderr if progress_bars else self.proc.stdout
        assert stream is not None
        target = self._pump_bars if progress_bars else self._pump_lines
        self._thread = threading.Thread(target=target, args=(stream,), name=f"pump-{name}", daemon=True)
        self._thread.start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _pump_lines(self, stream: IO[bytes]) -> None:
        with self.log_path.open("ab") as log:
            for raw in iter(stream.readline, b""):
                log.write(raw)
                log.flush()
                line = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                self.tail.append(line)
                if self.forward:
                    _write_err(f"{self.name} | {line}\n")

    def _pump_bars(self, stream: IO[bytes]) -> None:
        """Show the child's progress bars (tqdm redraws with '\\r') live; keep its log lines in the log file."""
        buffer = ""
        bar_open = False
        with self.log_path.open("ab") as log:
            while chunk := os.read(stream.fileno(), 65536):
                log.write(chunk)
                log.flush()
                buffer += chunk.decode("utf-8", errors="replace")
                while (cut := min((i for i in (buffer.find("\r"), buffer.find("\n")) if i >= 0), default=-1)) >= 0:
                    segment, delimiter, buffer = buffer[:cut], buffer[cut], buffer[cut + 1 :]
                    bar = _BAR.match(segment)
                    if bar:
                        _write_err("\r" + bar.group(0))
                        bar_open = True
                        segment = segment[bar.end() :]
                    if segment.strip():
                        self.tail.append(segment)
                    if delimiter == "\n" and bar_open:
                        _write_err("\n")
                        bar_open = False
        if buffer.strip():
            self.tail.append(buffer)
        if bar_open:
            _write_err("\n")

    def reason(self) -> str:
        """The child's own last words: its last ``error:`` line, else its last line."""
        lines = [line.strip() for line in self.tail if line.strip()]
        for line in reversed(lines):
            if " error: " in line:
                return line.split(" error: ", 1)[1]
        return lines[-1] if lines else "no output"

    def wait_threads(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)
        if self._stdout_file is not None:
            self._stdout_file.close()

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the whole group, SIGKILL after ``grace_s``; then make sure no group member is left."""
        pgid = self.proc.pid
        if self.proc.poll() is None:
            _killpg(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _killpg(pgid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        # The leader is gone; workers it forked (uvicorn --workers) share its group.
        if _group_alive(pgid):
            _killpg(pgid, signal.SIGTERM)
            deadline = time.monotonic() + min(grace_s, 5.0)
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
            _killpg(pgid, signal.SIGKILL)
        self.wait_threads()


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True


# --- readiness -----------------------------------------------------------------------------------------------


class Stopped(Exception):
    """SIGINT/SIGTERM arrived while starting."""


class Up:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_event = threading.Event()
        self.children: list[Child] = []
        self.signal_received: int | None = None

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.signal_received = signum
        self.stop_event.set()

    def sleep(self, seconds: float) -> None:
        if self.stop_event.wait(seconds):
            raise Stopped

    def start_child(
        self, name: str, argv: list[str], *, progress_bars: bool = False, env: dict[str, str] | None = None
    ) -> Child:
        child = Child(name, argv, self.log_dir, progress_bars=progress_bars, env=env)
        self.children.append(child)
        return child

    def died(self, child: Child, when: str) -> UpError:
        return UpError(
            f"the {child.name} exited {when} (exit {child.proc.returncode}): {child.reason()} "
            f"(full log: {child.log_path})"
        )

    def wait_ready(self, child: Child, probe, what: str, timeout_s: float) -> object:
        """Poll ``probe()`` until it returns a truthy value; fail on the child's exit or the timeout."""
        deadline = time.monotonic() + timeout_s
        while True:
            if child.proc.poll() is not None:
                child.wait_threads()
                raise self.died(child, "during start-up")
            result = probe()
            if result:
                return result
            if time.monotonic() > deadline:
                raise UpError(
                    f"the {what} was not ready after {timeout_s:.0f} s (raise --start-timeout on a slow machine or "
                    f"for a first download of the weights; full log: {child.log_path})"
                )
            self.sleep(0.25)

    # --- stages -------------------------------------------------------------------------------------------------

    def build_cache(self, settings) -> None:
        args = self.args
        say(
            f"audio-score up: building the reference cache ({', '.join(settings.model_keys)}; clips in "
            f"{settings.video_clip_dir}) ..."
        )
        argv = ["cache-build", "--config", str(settings.config_path), "--log-level", args.log_level]
        child = self.start_child("cache-build", argv, progress_bars=True)
        while child.proc.poll() is None:
            self.sleep(0.2)
        child.wait_threads()
        self.children.remove(child)
        rc = child.proc.returncode
        summary: dict = {}
        with contextlib.suppress(OSError, ValueError):
            lines = child.stdout_path.read_text().strip().splitlines()
            summary = json.loads(lines[-1]) if lines else {}
        if rc not in (0, 1) or not summary:
            raise UpError(f"the cache build failed (exit {rc}): {child.reason()} (full log: {child.log_path})")
        built = sum(m.get("built", 0) for m in summary.get("models", []))
        fresh = sum(m.get("fresh", 0) for m in summary.get("models", []))
        say(f"audio-score up: cache ready: {built} entries built, {fresh} already fresh")
        problems = []
        if summary.get("failed_clips"):
            problems.append(f"clips that failed: {', '.join(summary['failed_clips'])}")
        if summary.get("skipped_models"):
            problems.append(f"models that did not load: {', '.join(summary['skipped_models'])}")
        if problems:
            _write_err(
                f"audio-score up: warning: {'; '.join(problems)} (the predictor retries them on request; "
                f"details: {child.log_path})\n"
            )

    def start_predictor(self, settings, http_port: int, grpc_port: int) -> list[str]:
        import httpx

        args = self.args
        say(f"audio-score up: starting the predictor ({', '.join(settings.model_keys)}) on port {http_port} ...")
        argv = [
            "predictor",
            "--config",
            str(settings.config_path),
            "--http-port",
            str(http_port),
            "--grpc-port",
            str(grpc_port),
            "--log-level",
            args.log_level,
        ]
        # The machine's cores divided between the predictor processes (one here), unless set explicitly.
        from audio_score.threads import threads_per_predictor

        env = {} if settings.torch_threads else {"AUDIO_SCORE_TORCH_THREADS": str(threads_per_predictor(settings, 1))}
        child = self.start_child("predictor", argv, env=env)
        base = f"http://127.0.0.1:{http_port}"

        def probe() -> list[str]:
            ready = []
            for key in settings.model_keys:
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{base}/v2/models/{key}/ready", timeout=5).status_code == 200:
                        ready.append(key)
            return ready

        started = time.monotonic()
        ready = self.wait_ready(child, probe, "predictor", args.start_timeout)
        assert isinstance(ready, list)
        not_ready = [k for k in settings.model_keys if k not in ready]
        note = f"; not ready: {', '.join(not_ready)} (see {child.log_path})" if not_ready else ""
        say(f"audio-score up: predictor ready in {time.monotonic() - started:.1f} s: {', '.join(ready)}{note}")
        return ready

    def start_router(self, settings, predictor_port: int) -> dict:
        import httpx

        args = self.args
        argv = ["router", "--config", str(settings.config_path), "--log-level", args.log_level]
        if args.socket:
            argv += ["--socket", str(args.socket)]
            transport = httpx.HTTPTransport(uds=str(args.socket))
            base = "http://localhost"
            where = f"unix socket {args.socket}"
        else:
            argv += ["--host", args.host, "--port", str(args.port)]
            transport = None
            base = f"http://{_connect_host(args.host)}:{args.port}"
            where = f"{args.host}:{args.port}"
        argv += ["--predictor-url", f"http://127.0.0.1:{predictor_port}", "--workers", str(args.workers)]
        say(f"audio-score up: starting the router on {where} ({args.workers} worker(s)) ...")
        child = self.start_child("router", argv)

        def probe() -> dict | None:
            try:
                with httpx.Client(transport=transport, base_url=base, timeout=5) as client:
                    if client.get("/readyz").status_code != 200:
                        return None
                    models = client.get("/models")
                    return models.json() if models.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                return None

        result = self.wait_ready(child, probe, "router", args.start_timeout)
        return result if isinstance(result, dict) else {}

    # --- the whole run ------------------------------------------------------------------------------------------

    def run(self) -> int:
        from audio_score.settings import load_settings

        args = self.args
        try:
            settings = load_settings(args.config)
        except ConfigError as exc:  # one line, even for a list of schema errors
            raise ConfigError("; ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None
        if not settings.video_clip_dir.is_dir():
            raise ConfigError(
                f"clip folder {settings.video_clip_dir} does not exist (video_clip_dir in {settings.config_path})"
            )
        args.host = args.host or settings.server_host
        args.port = settings.server_port if args.port is None else args.port
        args.socket = Path(args.socket).expanduser().resolve() if args.socket else None
        if args.socket is None and settings.server_socket and args.port_from_default:
            args.socket = Path(settings.server_socket).expanduser().resolve()
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")

        # Every port is checked before anything starts, so a clash costs nothing and says which flag to change.
        if args.socket:
            check_socket_path(args.socket)
        else:
            check_port(args.host, args.port, "router", "--port")
        check_port("0.0.0.0", args.predictor_port, "predictor REST", "--predictor-port")
        grpc_port = args.grpc_port or _free_port_except(args.predictor_port, args.port)
        check_port("0.0.0.0", grpc_port, "predictor gRPC", "--grpc-port")

        self.log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="audio-score-up-")).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)

        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        ready_at_all = False
        try:
            if not args.no_cache_build:
                self.build_cache(settings)
            ready = self.start_predictor(settings, args.predictor_port, grpc_port)
            models = self.start_router(settings, args.predictor_port)
            ready_at_all = True
            self.banner(settings, ready, models, args.predictor_port, grpc_port)
            for child in self.children:
                child.forward = True
            while True:
                for child in self.children:
                    if child.proc.poll() is not None:
                        child.wait_threads()
                        raise self.died(child, "unexpectedly")
                self.sleep(0.5)
        except Stopped:
            name = signal.Signals(self.signal_received or signal.SIGTERM).name
            say(f"audio-score up: {name} received, stopping ...")
            return 0 if ready_at_all else 128 + int(self.signal_received or signal.SIGTERM)
        finally:
            # Router first (no new requests), then the predictor.
            for child in reversed(self.children):
                child.forward = False
                child.stop(args.grace)
            self.children.clear()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if ready_at_all:
                say("audio-score up: stopped")

    def banner(self, settings, ready: list[str], models: dict, predictor_port: int, grpc_port: int) -> None:
        args = self.args
        default = models.get("default") if isinstance(models, dict) else None
        if args.socket:
            base = "http://localhost"
            how = f"  (Unix socket {args.socket}: curl --unix-socket {args.socket} {base}/models)"
        else:
            base = f"http://{_connect_host(args.host)}:{args.port}"
            how = ""
        lines = [
            f"audio-score is up: models {', '.join(ready)}" + (f" (default {default})" if default else ""),
            f"  score:    POST {base}/score   (multipart: uid, cid, audio, optional model)",
            f"  docs:     {base}/docs",
            f"  models:   {base}/models",
            f"  V2 REST:  http://127.0.0.1:{predictor_port}/v2/models/<model>/infer",
            f"  V2 gRPC:  127.0.0.1:{grpc_port}",
            f"  logs:     {self.log_dir}",
        ]
        if how:
            lines.insert(1, how)
        lines.append("Press Ctrl+C to stop.")
        say("\n".join(lines))


def _connect_host(host: str) -> str:
    """The address a client on this machine uses for a server bound to ``host``."""
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


def _free_port_except(*taken: int) -> int:
    while True:
        port = free_port()
        if port not in taken:
            return port


def quiet_http_client_logs() -> None:
    """httpx logs every request at INFO: readiness polls are not news (and stderr is for errors)."""
    import logging

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --- CLI -----------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="router address (default: $AUDIO_SCORE_SERVER_HOST, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="router port (default: $AUDIO_SCORE_SERVER_PORT, 8000)")
    parser.add_argument(
        "--socket",
        default=None,
        metavar="PATH",
        help="serve the router on this Unix socket instead of a port, for your own proxy "
        "(default: $AUDIO_SCORE_SERVER_SOCKET)",
    )
    parser.add_argument("--workers", type=int, default=1, help="router worker processes (default 1)")
    parser.add_argument("--predictor-port", type=int, default=8080, help="predictor's V2 REST port (default 8080)")
    parser.add_argument("--grpc-port", type=int, default=0, help="predictor's V2 gRPC port (default: a free one)")
    parser.add_argument("--no-cache-build", action="store_true", help="skip the cache build (entries build on demand)")
    parser.add_argument(
        "--start-timeout",
        type=float,
        default=DEFAULT_START_TIMEOUT_S,
        metavar="S",
        help=f"seconds each server may take to become ready (default {DEFAULT_START_TIMEOUT_S:.0f})",
    )
    parser.add_argument(
        "--grace",
        type=float,
        default=DEFAULT_GRACE_S,
        metavar="S",
        help=f"seconds between SIGTERM and SIGKILL when stopping (default {DEFAULT_GRACE_S:.0f})",
    )
    parser.add_argument("--log-dir", default=None, help="where the children's logs go (default: a new temp folder)")


def run(args: argparse.Namespace) -> int:
    args.port_from_default = args.port is None
    quiet_http_client_logs()
    return Up(args).run()
