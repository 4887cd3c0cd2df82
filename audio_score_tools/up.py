"""Everything on this machine, no cluster, shaped like the cluster: build the reference cache, start one predictor
server per model (as one InferenceService per model would) and the router pointing at each, print the URLs, keep
them running, and stop every process it started on Ctrl+C or SIGTERM.

One predictor per model means one broken model costs only its own share: a predictor that dies is restarted with
exponential backoff (1 s, 2 s, 4 s ... up to a minute, like a Deployment's pod in CrashLoopBackOff; the count is
shown in a status line and in ``up.log``), while the router keeps serving the other models and answers 503 for
the missing one. A predictor that exits with ``EXIT_CONFIG`` (78: none of its models can load with this
config.json, e.g. a ``language`` its checkpoint does not know) fails the same way on every start, so it is not
restarted: ``up`` says why once and keeps the rest running. ``--shared-predictor`` puts every model in one
process instead, which holds shared weights (the Higgs transcriber) once and saves memory, at the price of one
crash taking every model down until it restarts. The router scales with ``--workers`` (uvicorn worker
processes) or binds a Unix socket (``--socket``) behind your own proxy; it is supervised the same way.

A port in use, a config error, or no model loading at start-up ends it with one line on stderr and a non-zero exit.
Each child's output goes to a log file (printed at start); once everything is ready it is also shown here,
prefixed with the child's name. Children die with ``up`` even when it is SIGKILLed (PR_SET_PDEATHSIG).
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
from collections.abc import Callable
from pathlib import Path
from typing import IO

from audio_score.errors import EXIT_CONFIG, ConfigError, ScoreError
from audio_score_tools import procs

#: How long a stopping child gets between SIGTERM and SIGKILL.
DEFAULT_GRACE_S = 10.0
DEFAULT_START_TIMEOUT_S = 600.0
_PARENT_ENV = "_AUDIO_SCORE_UP_PARENT"
_CHILD_CODE = "from audio_score_tools.up import child_main; child_main()"
#: A tqdm line of the cache build, up to the end of its "[elapsed<left, rate]" part (a warning may follow it).
_BAR = re.compile(r"^cache [A-Za-z0-9._-]+:[^\r\n]*?\| *\d+/\d+ \[[^\]\r\n]*\]")
_print_lock = threading.Lock()


class UpError(ScoreError):
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
        self.argv = argv
        self.extra_env = env or {}
        self.started_at = time.monotonic()
        self.log_path = log_dir / f"{name}.log"
        self.stdout_path = log_dir / f"{name}.out"
        self.tail: collections.deque[str] = collections.deque(maxlen=300)
        self.forward = False
        # A bar-drawing child keeps stdout (its JSON summary) apart; the servers' stdout and stderr are one log.
        self._stdout_file: IO[bytes] | None = self.stdout_path.open("wb") if progress_bars else None
        self.proc = procs.spawn(  # its own process group: stopped as a whole, untouched by the terminal's ^C
            [sys.executable, "-c", _CHILD_CODE, *argv],
            env={**self.extra_env, _PARENT_ENV: str(os.getpid())},
            stdin=subprocess.DEVNULL,
            stdout=self._stdout_file if progress_bars else subprocess.PIPE,
            stderr=subprocess.PIPE if progress_bars else subprocess.STDOUT,
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
        """SIGTERM to the whole group, SIGKILL after ``grace_s``, no group member left (:func:`procs.stop_process`)."""
        procs.stop_process(self.proc, grace_s)
        self.wait_threads()


# --- restarts ------------------------------------------------------------------------------------------------

#: Backoff before restart n (1-based): BACKOFF_BASE_S * 2**(n-1), at most BACKOFF_MAX_S.
BACKOFF_BASE_S = 1.0
BACKOFF_MAX_S = 60.0
#: A child that ran this long before dying starts its backoff again from the base (as kubelet does).
STABLE_AFTER_S = 120.0


class Supervised:
    """One long-running child and its restart state: like a Deployment's pod, restarted with exponential backoff.

    ``probe`` (optional) says when a restarted child is serving again, for the status line.
    """

    def __init__(self, child: Child, *, probe: Callable[[], bool] | None = None) -> None:
        self.child = child
        self.name = child.name
        self.probe = probe
        self.restarts = 0
        self.failures = 0  # consecutive, for the backoff
        self.restart_at: float | None = None
        self.awaiting_ready = False
        #: Exited with EXIT_CONFIG (its models cannot load with this config.json): never restarted.
        self.given_up = False

    def backoff_s(self) -> float:
        return min(BACKOFF_MAX_S, BACKOFF_BASE_S * 2 ** max(0, self.failures - 1))


# --- readiness -----------------------------------------------------------------------------------------------


class Stopped(Exception):
    """SIGINT/SIGTERM arrived while starting."""


class Up:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.stop_event = threading.Event()
        self.children: list[Child] = []
        self.supervised: list[Supervised] = []
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

    def status(self, event: str, message: str, **fields: object) -> None:
        """A status line here and a JSON line in ``<log dir>/up.log`` (restarts, exits, recoveries)."""
        say(f"audio-score up: {message}")
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), "event": event, **fields}
        with contextlib.suppress(OSError), (self.log_dir / "up.log").open("a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    def supervise(self) -> None:
        """One pass: note children that died, restart those whose backoff is over, report recoveries."""
        now = time.monotonic()
        for unit in self.supervised:
            child = unit.child
            if unit.given_up:
                continue
            if unit.restart_at is None and child.proc.poll() is not None and child.proc.returncode == EXIT_CONFIG:
                child.wait_threads()
                unit.given_up = True
                self.status(
                    "gave-up",
                    f"{unit.name} exited (exit {EXIT_CONFIG}): {child.reason()}; not restarted: its models cannot "
                    f"load with this config.json, so fix it and run up again (log: {child.log_path})",
                    child=unit.name,
                    returncode=EXIT_CONFIG,
                )
            elif unit.restart_at is None and child.proc.poll() is not None:
                child.wait_threads()
                ran_s = now - child.started_at
                unit.failures = 1 if ran_s >= STABLE_AFTER_S else unit.failures + 1
                delay = unit.backoff_s()
                unit.restart_at = now + delay
                unit.awaiting_ready = False
                code = child.proc.returncode
                how = procs.describe_exit(code)
                self.status(
                    "exited",
                    f"{unit.name} exited ({how}) after {ran_s:.0f} s: {child.reason()}; restart {unit.restarts + 1} "
                    f"in {delay:.0f} s (log: {child.log_path})",
                    child=unit.name,
                    returncode=code,
                    ran_s=round(ran_s, 1),
                    restarts=unit.restarts,
                    backoff_s=delay,
                )
            elif unit.restart_at is not None and now >= unit.restart_at:
                # Whatever the dead leader left in its group (forked workers) would hold its port.
                procs.signal_group(child.proc.pid, signal.SIGKILL)
                self.children.remove(child)
                fresh = Child(unit.name, child.argv, self.log_dir, env=child.extra_env)
                fresh.forward = True
                self.children.append(fresh)
                unit.child, unit.restart_at = fresh, None
                unit.restarts += 1
                unit.awaiting_ready = unit.probe is not None
                self.status(
                    "restarted",
                    f"{unit.name} restarted (restarts: {unit.restarts})",
                    child=unit.name,
                    restarts=unit.restarts,
                    pid=fresh.pid,
                )
            elif unit.awaiting_ready and unit.probe is not None and unit.probe():
                unit.awaiting_ready = False
                self.status(
                    "ready",
                    f"{unit.name} ready again (restarts: {unit.restarts})",
                    child=unit.name,
                    restarts=unit.restarts,
                )

    def died(self, child: Child, when: str) -> UpError:
        return UpError(
            f"the {child.name} exited {when} (exit {child.proc.returncode}): {child.reason()} "
            f"(full log: {child.log_path})"
        )

    def wait_ready(self, child: Child, probe, what: str, timeout_s: float) -> object:
        """Poll ``probe()`` until it returns a truthy value (:func:`procs.poll_until`, cut short by a signal); fail
        on the child's exit or the timeout with one line that says what to do."""
        try:
            return procs.poll_until(child.proc, probe, timeout_s=timeout_s, what=what, poll_s=0.25, sleep=self.sleep)
        except procs.ExitedEarly:
            child.wait_threads()
            raise self.died(child, "during start-up") from None
        except procs.NotReadyInTime:
            raise UpError(
                f"the {what} was not ready after {timeout_s:.0f} s (raise --start-timeout on a slow machine or "
                f"for a first download of the weights; full log: {child.log_path})"
            ) from None

    # --- stages -------------------------------------------------------------------------------------------------

    def build_cache(self, settings) -> None:
        args = self.args
        say(
            f"audio-score up: building the reference cache ({', '.join(settings.model_keys)}; clips in "
            f"{settings.config.video_clip_dir}) ..."
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

    def start_predictors(self, settings, predictor_env, groups: list[PredictorGroup]) -> list[str]:
        """Start every predictor group at once and wait until each is ready or has died.

        All of them dead is a start-up failure (one line, the first one's reason); some dead is a warning, and
        those are restarted with backoff like any crashed child."""
        args = self.args
        # The machine's cores divided between the predictor processes, unless AUDIO_SCORE_TORCH_THREADS is set.
        from audio_score.threads import threads_per_predictor

        threads = threads_per_predictor(predictor_env, len(groups))
        env = {} if predictor_env.torch_threads else {"AUDIO_SCORE_TORCH_THREADS": str(threads)}
        for group in groups:
            say(f"audio-score up: starting {group.name} ({', '.join(group.keys)}) on port {group.http_port} ...")
            argv = [
                "predictor",
                "--config",
                str(settings.config_path),
                "--http-port",
                str(group.http_port),
                "--grpc-port",
                str(group.grpc_port),
                "--log-level",
                args.log_level,
            ]
            if not args.shared_predictor:
                argv += [arg for key in group.keys for arg in ("--model", key)]
            child = self.start_child(group.name, argv, env=env)
            self.supervised.append(Supervised(child, probe=group.serving))

        started = time.monotonic()
        deadline = started + args.start_timeout
        pending = {unit.name: (unit, group) for unit, group in zip(self.supervised, groups, strict=True)}
        ready: list[str] = []
        dead: list[Supervised] = []
        while pending:
            for name, (unit, group) in list(pending.items()):
                if unit.child.proc.poll() is not None:
                    unit.child.wait_threads()
                    dead.append(unit)
                    del pending[name]
                    continue
                keys = group.ready_keys()
                if keys:
                    ready += keys
                    not_ready = [k for k in group.keys if k not in keys]
                    note = f"; not ready: {', '.join(not_ready)} (see {unit.child.log_path})" if not_ready else ""
                    say(f"audio-score up: {name} ready in {time.monotonic() - started:.1f} s: {', '.join(keys)}{note}")
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                unit, _ = next(iter(pending.values()))
                raise UpError(
                    f"the {unit.name} was not ready after {args.start_timeout:.0f} s (raise --start-timeout on a "
                    f"slow machine or for a first download of the weights; full log: {unit.child.log_path})"
                )
            self.sleep(0.25)
        if not ready:
            raise self.died(dead[0].child, "during start-up")
        for unit in dead:
            code = unit.child.proc.returncode
            if code == EXIT_CONFIG:
                unit.given_up = True
            then = (
                "it is not restarted: its models cannot load with this config.json"
                if code == EXIT_CONFIG
                else "it is restarted with backoff"
            )
            _write_err(
                f"audio-score up: warning: the {unit.name} exited during start-up (exit {code}): "
                f"{unit.child.reason()}; {then} (full log: {unit.child.log_path})\n"
            )
        return [k for k in settings.model_keys if k in ready]

    def start_router(self, settings, groups: list[PredictorGroup]) -> dict:
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
        # Each model's own predictor, as AUDIO_SCORE_PREDICTOR_URLS (the router's per-model map).
        urls = ",".join(f"{key}={group.url}" for group in groups for key in group.keys)
        argv += ["--workers", str(args.workers)]
        say(f"audio-score up: starting the router on {where} ({args.workers} worker(s)) ...")
        child = self.start_child("router", argv, env={"AUDIO_SCORE_PREDICTOR_URLS": urls})

        # With API keys set, /models needs one: the probe sends the first (the router reads the same environment).
        headers = {"X-API-Key": settings.env.api_keys[0]} if settings.env.api_keys else {}

        def probe() -> dict | None:
            try:
                with httpx.Client(transport=transport, base_url=base, timeout=5, headers=headers) as client:
                    if client.get("/readyz").status_code != 200:
                        return None
                    models = client.get("/models")
                    return models.json() if models.status_code == 200 else {}
            except (httpx.HTTPError, ValueError):
                return None

        result = self.wait_ready(child, probe, "router", args.start_timeout)
        self.supervised.append(Supervised(child, probe=lambda: probe() is not None))
        return result if isinstance(result, dict) else {}

    # --- the whole run ------------------------------------------------------------------------------------------

    def run(self) -> int:
        from audio_score.env_settings import JobEnv, PredictorEnv, RouterEnv
        from audio_score.settings import load_settings

        args = self.args
        try:
            settings = load_settings(RouterEnv, args.config)
            # up starts the parts with this environment: each one's variables are checked before any starts.
            predictor_env = PredictorEnv.from_env(os.environ)
            if not args.no_cache_build:
                JobEnv.from_env(os.environ)
        except ConfigError as exc:  # one line, even for a list of schema errors
            raise ConfigError("; ".join(line.strip() for line in str(exc).splitlines() if line.strip())) from None
        if not settings.config.video_clip_dir.is_dir():
            raise ConfigError(
                f"clip folder {settings.config.video_clip_dir} does not exist "
                f"(video_clip_dir in {settings.config_path})"
            )
        args.host = args.host or settings.env.server_host
        args.port = settings.env.server_port if args.port is None else args.port
        args.socket = Path(args.socket).expanduser().resolve() if args.socket else None
        if args.socket is None and settings.env.server_socket and args.port_from_default:
            args.socket = Path(settings.env.server_socket).expanduser().resolve()
        if args.workers < 1:
            raise ConfigError("--workers must be at least 1")

        # Every port is checked before anything starts, so a clash costs nothing and says which flag to change.
        if args.socket:
            check_socket_path(args.socket)
        else:
            check_port(args.host, args.port, "router", "--port")
        groups = plan_predictors(settings.model_keys, args)
        for group in groups:
            check_port("0.0.0.0", group.http_port, f"{group.name} REST", "--predictor-port")
            check_port("0.0.0.0", group.grpc_port, f"{group.name} gRPC", "--grpc-port")

        self.log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="audio-score-up-")).resolve()
        self.log_dir.mkdir(parents=True, exist_ok=True)

        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
        ready_at_all = False
        try:
            if not args.no_cache_build:
                self.build_cache(settings)
            ready = self.start_predictors(settings, predictor_env, groups)
            models = self.start_router(settings, groups)
            ready_at_all = True
            self.banner(settings, ready, models, groups)
            for child in self.children:
                child.forward = True
            while True:
                self.supervise()
                self.sleep(0.5)
        except Stopped:
            name = signal.Signals(self.signal_received or signal.SIGTERM).name
            say(f"audio-score up: {name} received, stopping ...")
            return 0 if ready_at_all else 128 + int(self.signal_received or signal.SIGTERM)
        finally:
            # Router first (no new requests), then the predictors.
            router_first = sorted(self.children, key=lambda c: c.name != "router")
            for child in router_first:
                child.forward = False
                child.stop(args.grace)
            self.children.clear()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if ready_at_all:
                say("audio-score up: stopped")

    def banner(self, settings, ready: list[str], models: dict, groups: list[PredictorGroup]) -> None:
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
            f"  try it:   {base}/try/   (in a browser: pick a clip, record a take, see the score)",
            f"  docs:     {base}/docs",
            f"  models:   {base}/models",
        ]
        for group in groups:
            model = group.keys[0] if len(group.keys) == 1 else "<model>"
            lines.append(
                f"  V2:       {group.url}/v2/models/{model}/infer   gRPC 127.0.0.1:{group.grpc_port}   ({group.name})"
            )
        lines += [
            f"  logs:     {self.log_dir}   (restarts: {self.log_dir / 'up.log'})",
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
    return procs.free_port_block(1, avoid=[range(port, port + 1) for port in taken])


class PredictorGroup:
    """One predictor process: its name, the models it hosts and its ports."""

    def __init__(self, name: str, keys: list[str], http_port: int, grpc_port: int) -> None:
        self.name, self.keys, self.http_port, self.grpc_port = name, keys, http_port, grpc_port
        self.url = f"http://127.0.0.1:{http_port}"

    def serving(self) -> bool:
        """Whether any of its models is ready: the probe of a restarted predictor."""
        return bool(self.ready_keys())

    def ready_keys(self) -> list[str]:
        """The models this process reports ready (V2 per-model readiness)."""
        import httpx

        ready = []
        for key in self.keys:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.url}/v2/models/{key}/ready", timeout=2).status_code == 200:
                    ready.append(key)
        return ready


def plan_predictors(keys: list[str], args: argparse.Namespace) -> list[PredictorGroup]:
    """One predictor per model on consecutive ports from ``--predictor-port`` (gRPC from ``--grpc-port``, else
    free ports), or one shared predictor with ``--shared-predictor``."""
    if args.shared_predictor:
        grpc = args.grpc_port or _free_port_except(args.predictor_port, args.port or 0)
        return [PredictorGroup("predictor", list(keys), args.predictor_port, grpc)]
    http_ports = [args.predictor_port + i for i in range(len(keys))]
    taken = {*http_ports, args.port or 0}
    groups = []
    for i, key in enumerate(keys):
        grpc = args.grpc_port + i if args.grpc_port else _free_port_except(*taken)
        if grpc in taken:
            # Each port is free on its own, but two ranges overlap: both children would try to bind it.
            raise UpError(
                f"port {grpc} is in both the REST range from --predictor-port {args.predictor_port} "
                f"({len(keys)} ports, one per model) and the gRPC range from --grpc-port {args.grpc_port}; "
                "pick ranges that do not overlap"
            )
        taken.add(grpc)
        groups.append(PredictorGroup(f"predictor-{key}", [key], http_ports[i], grpc))
    return groups


def quiet_http_client_logs() -> None:
    """httpx logs every request at INFO: readiness polls are not news (and stderr is for errors)."""
    import logging

    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)


# --- CLI -----------------------------------------------------------------------------------------------------


def register(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The ``audio-score`` entry point (group ``audio_score.commands``) adds ``up`` here."""
    parser = commands.add_parser(
        "up",
        parents=parents,
        help="everything on this machine: cache build, one predictor per model, the router",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


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
    parser.add_argument(
        "--predictor-port",
        type=int,
        default=8080,
        help="first predictor's V2 REST port; one predictor per model takes consecutive ports (default 8080)",
    )
    parser.add_argument(
        "--grpc-port",
        type=int,
        default=0,
        help="first predictor's V2 gRPC port, consecutive per model (default: free ones)",
    )
    parser.add_argument(
        "--shared-predictor",
        action="store_true",
        help="run every model in ONE predictor process (less memory; one crash takes every model down until "
        "it restarts) instead of one process per model",
    )
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
