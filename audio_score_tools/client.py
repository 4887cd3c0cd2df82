"""Score a recording through a running router: ``audio-score score FILE --uid U --cid C [--model M]``.

Prints the router's JSON answer (or a table with ``--table``); on an error prints the server's ``detail`` and
exits non-zero. ``--batch DIR`` scores every ``<uid>_<cid>.<ext>`` file in a folder (split at the last ``_``)
and prints a summary table. Needs no torch: the router image can run it.
"""

from __future__ import annotations

import argparse
import json
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from audio_score.contract import HEADLINE_SCORES

DEFAULT_URL = "http://127.0.0.1:8000"
SCORE_FIELDS = HEADLINE_SCORES
#: How ``--table`` marks each word: right, said instead, missed, added.
WORD_MARKS = {"match": "\u2713", "substitution": "\u2717", "deletion": "\u2212", "insertion": "+"}
#: What ``--batch`` picks up: the audio and video formats people record or keep clips in.
AUDIO_EXTENSIONS = frozenset(
    {".wav", ".mp3", ".m4a", ".aac", ".ogg", ".oga", ".opus", ".flac", ".webm", ".weba", ".mov", ".mp4", ".m4v"}
    | {".mkv", ".avi", ".3gp", ".amr", ".aiff", ".aif", ".wma", ".caf"}
)


class RequestFailed(Exception):
    """One failed request, with the line to show. (Not the core's :class:`audio_score.errors.ScoreError`: this is
    the client's view of an answer, whatever the server's reason.)"""


@dataclass
class Outcome:
    file: str
    uid: str
    cid: str
    result: dict[str, Any] | None = None
    error: str | None = None


def _client(args: argparse.Namespace) -> httpx.Client:
    transport = httpx.HTTPTransport(uds=args.unix_socket) if args.unix_socket else None
    base = "http://localhost" if args.unix_socket else args.url.rstrip("/")
    return httpx.Client(base_url=base, transport=transport, timeout=args.timeout)


def _where(args: argparse.Namespace) -> str:
    return f"unix socket {args.unix_socket}" if args.unix_socket else args.url


def score_file(client: httpx.Client, path: Path, uid: str, cid: str, model: str | None, where: str) -> dict[str, Any]:
    """POST one file to ``/score``; the parsed answer, or :class:`RequestFailed` with the server's detail."""
    data = {"uid": uid, "cid": cid}
    if model:
        data["model"] = model
    try:
        with path.open("rb") as fh:
            response = client.post("/score", data=data, files={"audio": (path.name, fh, "application/octet-stream")})
    except OSError as exc:
        raise RequestFailed(f"cannot read {path}: {exc.strerror or exc}") from None
    except httpx.TimeoutException:
        raise RequestFailed(f"no answer from the router at {where} in time (raise --timeout)") from None
    except httpx.TransportError as exc:
        raise RequestFailed(
            f"cannot reach the router at {where} ({type(exc).__name__}: {exc}); is `audio-score up` running? "
            "(or pass --url)"
        ) from None
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code != 200:
        detail = body.get("detail") if isinstance(body, dict) else None
        if not isinstance(detail, str):
            detail = json.dumps(detail) if detail is not None else (response.text.strip()[:300] or "no detail")
        raise RequestFailed(f"{response.status_code} {response.reason_phrase}: {detail}")
    if not isinstance(body, dict):
        raise RequestFailed(f"the server at {where} did not answer with JSON: {response.text[:200]!r}")
    return body


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def guard_flags(result: dict[str, Any]) -> str:
    """What the decoding guard said about the take, for the batch table: "no speech", "looped" or ""."""
    if result.get("no_speech"):
        return "no speech"
    return "looped" if result.get("looped") else ""


def format_word(mark: dict[str, Any]) -> str:
    """``✓ word``, ``✗ word→said``, ``− word`` (missed) or ``+ said`` (added)."""
    op, word, said = mark.get("op"), mark.get("word"), mark.get("said")
    symbol = WORD_MARKS.get(str(op), "?")
    if op == "substitution":
        return f"{symbol} {word}\u2192{said}"
    if op == "insertion":
        return f"{symbol} {said}"
    return f"{symbol} {word}"


def format_words(marks: list[dict[str, Any]]) -> str:
    """The word marks on one line, in reading order."""
    return "  ".join(format_word(m) for m in marks) if marks else "(no words)"


def format_pauses(pauses: list[dict[str, Any]]) -> str:
    """``+0.62 s before 'word' at 1.84 s`` per pause (its excess over the speaker's gap), or ``none``."""
    if not pauses:
        return "none"
    return "; ".join(
        f"+{p.get('excess', 0.0):.2f} s before {p.get('word')!r} at {p.get('start', 0.0):.2f} s" for p in pauses
    )


def _seconds(value: Any) -> str:
    return "-" if value is None else f"{value:.2f}"


def word_timing_rows(marks: list[dict[str, Any]]) -> list[list[str]]:
    """One row per reference word with per-word feedback: its mark, the learner's and the speaker's span, its own
    audio score and lag (``left out`` for a word not said). Empty when the answer has no word times."""
    rows = []
    for m in marks:
        if "audio_score" not in m or m.get("word") is None or m.get("op") == "insertion":
            continue
        learner = "left out" if m.get("left_out") else f"{_seconds(m.get('start'))}-{_seconds(m.get('end'))}"
        speaker = f"{_seconds(m.get('ref_start'))}-{_seconds(m.get('ref_end'))}"
        score = m.get("audio_score")
        lag = m.get("lag")
        rows.append(
            [
                format_word(m),
                learner,
                speaker,
                "-" if score is None else f"{score:.2f}",
                "-" if lag is None else f"{lag:+.2f}",
            ]
        )
    return rows


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    return "\n".join(lines)


def render_result(result: dict[str, Any]) -> str:
    """``--table``: one row per field, then (when the reference has word times) one row per reference word."""
    rows = []
    for key, value in result.items():
        if key == "words" and isinstance(value, list):
            rows.append([key, format_words(value)])
        elif key == "pauses" and isinstance(value, list):
            rows.append([key, format_pauses(value)])
        else:
            rows.append([key, _fmt(value)])
    text = render_table(["field", "value"], rows)
    words = word_timing_rows(result.get("words") or [])
    if words:
        headers = ["word", "you (s)", "speaker (s)", "audio", "lag (s)"]
        text += "\n\n" + render_table(headers, words)
    return text


def find_batch_files(folder: Path) -> tuple[list[Outcome], list[Outcome]]:
    """``(to score, unusable names)`` for the audio files directly in ``folder``."""
    from audio_score.clips import parse_clip_path
    from audio_score.errors import InvalidIdentifier

    todo, bad = [], []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() not in AUDIO_EXTENSIONS:
            continue
        # The reference clips' own flat-layout rule: split at the last '_', both ids validated.
        try:
            clip = parse_clip_path(path, folder)
        except InvalidIdentifier as exc:
            uid, _, cid = path.stem.rpartition("_")
            bad.append(Outcome(path.name, uid, cid, error=str(exc)))
            continue
        todo.append(Outcome(path.name, clip.uid, clip.cid))
    return todo, bad


def run_batch(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    folder = Path(args.batch).expanduser()
    if not folder.is_dir():
        print(f"audio-score score: error: --batch {folder}: not a folder", file=sys.stderr)
        return 2
    todo, bad = find_batch_files(folder)
    if not todo and not bad:
        print(f"audio-score score: error: no audio files named <uid>_<cid>.<ext> in {folder}", file=sys.stderr)
        return 2
    where = _where(args)
    with _client(args) as client, ThreadPoolExecutor(max_workers=max(1, args.concurrency)) as pool:

        def one(item: Outcome) -> Outcome:
            try:
                item.result = score_file(client, folder / item.file, item.uid, item.cid, args.model, where)
            except RequestFailed as exc:
                item.error = str(exc)
            return item

        bar = tqdm(total=len(todo), desc="scoring", unit="file", file=sys.stderr, disable=args.quiet)
        for _ in pool.map(one, todo):
            bar.update(1)
        bar.close()
    outcomes = sorted(todo + bad, key=lambda o: o.file)
    if args.json:
        for o in outcomes:
            print(json.dumps({"file": o.file, "uid": o.uid, "cid": o.cid, **(o.result or {}), "error": o.error}))
    else:
        rows = []
        for o in outcomes:
            r = o.result or {}
            if o.error:
                rows.append([o.file, r.get("model", ""), "", "", "", "", "", "", o.error])
            else:
                accuracy = _fmt(r["word_accuracy"]) if "word_accuracy" in r else ""
                scores = (_fmt(r.get(f)) for f in SCORE_FIELDS)
                language = r.get("language") or ""
                rows.append([o.file, str(r.get("model", "")), *scores, accuracy, language, guard_flags(r), ""])
        headers = ["file", "model", "sim_score", "audio", "text", "words", "lang", "heard", "error"]
        print(render_table(headers, rows))
    failed = sum(1 for o in outcomes if o.error)
    print(f"{len(outcomes) - failed} scored, {failed} failed", file=sys.stderr)
    return 1 if failed else 0


def register(commands: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    """The ``audio-score`` entry point (group ``audio_score.commands``) adds ``score`` here."""
    parser = commands.add_parser(
        "score",
        parents=parents,
        help="score an audio file (or a folder) through a running router",
        description=__doc__,
    )
    add_arguments(parser)
    parser.set_defaults(run=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", nargs="?", help="the recording (any format FFmpeg decodes)")
    parser.add_argument("--uid", help="the reference video's id")
    parser.add_argument("--cid", help="the reference clip's id")
    parser.add_argument("--model", default=None, help="model key (default: the router's default model)")
    parser.add_argument("--url", default=DEFAULT_URL, help=f"the router's base URL (default {DEFAULT_URL})")
    parser.add_argument("--unix-socket", default=None, metavar="PATH", help="reach the router on a Unix socket")
    parser.add_argument("--table", action="store_true", help="print a table instead of JSON")
    parser.add_argument(
        "--batch",
        default=None,
        metavar="DIR",
        help="score every <uid>_<cid>.<ext> file in DIR (split at the last '_') and print a summary table",
    )
    parser.add_argument("--json", action="store_true", help="with --batch: one JSON object per file, no table")
    parser.add_argument("--concurrency", type=int, default=4, help="with --batch: requests in flight (default 4)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for an answer (default 120)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from audio_score_tools.up import quiet_http_client_logs

    quiet_http_client_logs()
    if args.batch:
        if args.file or args.uid or args.cid:
            print(
                "audio-score score: error: --batch takes uid/cid from file names; drop FILE/--uid/--cid",
                file=sys.stderr,
            )
            return 2
        return run_batch(args)
    missing = [name for name, value in (("FILE", args.file), ("--uid", args.uid), ("--cid", args.cid)) if not value]
    if missing:
        print(f"audio-score score: error: missing {', '.join(missing)} (or use --batch DIR)", file=sys.stderr)
        return 2
    path = Path(args.file).expanduser()
    if not path.is_file():
        print(f"audio-score score: error: {path}: no such file", file=sys.stderr)
        return 2
    try:
        with _client(args) as client:
            result = score_file(client, path, args.uid, args.cid, args.model, _where(args))
    except RequestFailed as exc:
        print(f"audio-score score: error: {exc}", file=sys.stderr)
        return 1
    if args.table:
        print(render_result(result))
    else:
        print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0
