"""``make demo``: the whole service on this machine, offline, in a few minutes.

Builds (or reuses) ``demo-workspace/`` with tiny random-weight models in the real checkpoint formats and short
reference ``.mov`` clips, runs ``audio-score up`` on free ports, scores one clip against itself and one against
another clip with ``audio-score score``, prints both answers and stops everything, also when something fails.
Exits non-zero if any step failed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NOTE = """\
NOTE: the demo's models have RANDOM weights (tiny Whisper and Higgs-Audio-style checkpoints built on the spot,
so that nothing is downloaded). Their transcripts are gibberish and their scores mean nothing about speech; the
demo shows the plumbing: cache build, one predictor server per model, the router, the client. A clip scored
against itself still gives sim_score 1.0, because uploads and references go through the same code."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def prepare_workspace(root: Path):
    """Reuse the models of an earlier run; rewrite config.json and the clips (cheap, and keeps them in step)."""
    from audio_score.devtools.tiny_models import TinyModelSet
    from audio_score.devtools.workspace import build_workspace

    models_dir = root / "models"
    whisper, higgs = models_dir / "whisper-tiny", models_dir / "higgs-tiny"
    models = None
    if (whisper / "config.json").is_file() and (higgs / "config.json").is_file() and (root / "config.json").is_file():
        models = TinyModelSet(whisper=whisper, higgs=higgs)
        step(f"reusing the demo workspace in {root}")
    else:
        step(f"building the demo workspace in {root} (tiny random-weight models, reference .mov clips)")
    return build_workspace(root, models=models)


def start_up(config: Path, port: int, predictor_port: int, log_dir: Path) -> tuple[subprocess.Popen, list[str]]:
    cmd = [
        sys.executable,
        "-m",
        "audio_score",
        "up",
        "--config",
        str(config),
        "--port",
        str(port),
        "--predictor-port",
        str(predictor_port),
        "--log-dir",
        str(log_dir),
        "--log-level",
        "WARNING",  # the servers' per-request lines would bury the answers; they are all in the log files
    ]
    print("$ audio-score " + " ".join(cmd[3:]), flush=True)
    # Its own session: stopped as a group, and a ^C here reaches us first so that we stop it in order.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    lines: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            print(line, end="", flush=True)

    threading.Thread(target=pump, daemon=True).start()
    return proc, lines


def wait_up(proc: subprocess.Popen, lines: list[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(line.startswith("audio-score is up") for line in lines):
        if proc.poll() is not None:
            raise RuntimeError(f"audio-score up exited with {proc.returncode} before it was ready (see above)")
        if time.monotonic() > deadline:
            raise RuntimeError(f"audio-score up was not ready after {timeout_s:.0f} s")
        time.sleep(0.2)
    # the rest of the banner
    time.sleep(0.3)


def stop_up(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode


def score(url: str, file: Path, uid: str, cid: str) -> dict:
    cmd = [sys.executable, "-m", "audio_score", "score", str(file), "--uid", uid, "--cid", cid, "--url", url]
    shown = file.relative_to(REPO) if file.is_relative_to(REPO) else file
    print(f"$ audio-score score {shown} --uid {uid} --cid {cid} --url {url}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"audio-score score failed ({done.returncode}): {done.stderr.strip()}")
    print(done.stdout, end="", flush=True)
    return json.loads(done.stdout)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(REPO / "demo-workspace"), help="default: ./demo-workspace")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for `up` to get ready (default 600)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    root = Path(args.workspace).resolve()
    ws = prepare_workspace(root)
    print(NOTE, flush=True)

    port, predictor_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    step("starting everything with `audio-score up` (cache build, one predictor per model, the router)")
    proc, lines = start_up(ws.config_path, port, predictor_port, root / "logs")
    # ^C/SIGTERM to the demo: stop `up` (it stops its children) before leaving.
    signal.signal(signal.SIGTERM, _interrupt)
    failed = False
    try:
        wait_up(proc, lines, args.timeout)
        clip = ws.clips[("video1", "clip1")]
        other = ws.clips[("video1", "clip2")]

        step("1/2: the reference clip video1/clip1 scored against itself (expect sim_score 1.0)")
        same = score(url, clip, "video1", "clip1")
        step("2/2: clip video1/clip2 scored against video1/clip1 (a different clip: a lower score)")
        different = score(url, other, "video1", "clip1")

        if abs(float(same["sim_score"]) - 1.0) > 1e-3:
            raise RuntimeError(f"a clip against itself gave sim_score {same['sim_score']}, expected 1.0")
        if not 0.0 <= float(different["sim_score"]) <= 1.0:
            raise RuntimeError(f"sim_score {different['sim_score']} is outside [0, 1]")
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        failed = True
    except Exception as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        failed = True
    finally:
        step("stopping `audio-score up`")
        rc = stop_up(proc)
    if rc not in (0, None) and not failed:
        print(f"demo failed: audio-score up exited with {rc} on SIGTERM", file=sys.stderr)
        failed = True
    if failed:
        print(f"logs of the servers: {root / 'logs'}", file=sys.stderr)
        return 1
    print(f"\ndemo finished in {time.monotonic() - started:.0f} s. Next: the README's 'Using it for real'.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
