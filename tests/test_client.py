"""``audio-score score``: the client CLI against a real ``audio-score up`` (the shared ``up_stack``)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from audio_score.textnorm import tokens

from conftest import REPO_ROOT, free_port

SCORE_FIELDS = {"model", "sim_score", "audio_sim_score", "text_sim_score", "transcript", "reference_transcript"}


def score(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "audio_score", "score", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


def test_a_clip_scores_one_against_itself(up_stack) -> None:
    clip = up_stack.workspace.clips[("video1", "clip1")]
    done = score(str(clip), "--uid", "video1", "--cid", "clip1", "--url", up_stack.url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert set(answer) >= SCORE_FIELDS
    assert answer["model"] == "whisper-tiny"  # the first configured model is the default
    assert answer["sim_score"] == pytest.approx(1.0, abs=1e-3)
    assert answer["audio_sim_score"] == pytest.approx(1.0, abs=1e-3)
    assert answer["text_sim_score"] == pytest.approx(1.0, abs=1e-3)
    assert answer["transcript"] == answer["reference_transcript"]
    assert answer["audio_aligned_sim_score"] == 1.0 and answer["word_accuracy"] == 1.0
    assert answer["words"] and all(w["op"] == "match" for w in answer["words"])


def test_word_marks_for_the_table() -> None:
    from audio_score_tools.client import format_words

    marks = [
        {"op": "match", "word": "the", "said": "the"},
        {"op": "substitution", "word": "cat", "said": "cap"},
        {"op": "deletion", "word": "sat", "said": None},
        {"op": "insertion", "word": None, "said": "um"},
    ]
    assert format_words(marks) == "\u2713 the  \u2717 cat\u2192cap  \u2212 sat  + um"
    assert format_words([]) == "(no words)"


def test_another_clip_and_model_and_table(up_stack) -> None:
    other = up_stack.workspace.clips[("video1", "clip2")]
    done = score(str(other), "--uid", "video1", "--cid", "clip1", "--model", "higgs-tiny", "--url", up_stack.url)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["model"] == "higgs-tiny"
    assert 0.0 <= answer["sim_score"] <= 1.0
    # docs/architecture.md "Scores": the mean of the halves, or the audio half alone when the decoder cut a loop or
    # heard no words (tiny random weights often do either) and no forced score stands in for the transcript.
    reliable = not answer["looped"] and bool(tokens(answer["transcript"], answer["language"]))
    text_counted = reliable or answer.get("text_forced_score") is not None
    halves = (answer["audio_sim_score"] + answer["text_sim_score"]) / 2
    assert answer["sim_score"] == pytest.approx(halves if text_counted else answer["audio_sim_score"], abs=1e-4)

    done = score(str(other), "--uid", "video1", "--cid", "clip1", "--url", up_stack.url, "--table")
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()[2:] if line.strip()}
    assert set(rows) >= SCORE_FIELDS
    assert rows["model"] == ["whisper-tiny"]
    assert 0.0 <= float(rows["sim_score"][0]) <= 1.0
    assert {"audio_aligned_sim_score", "audio_pooled_sim_score", "word_accuracy", "words"} <= set(rows)
    marks = rows["words"][0::2] if rows["words"] != ["(no", "words)"] else []
    assert set(marks) <= {"\u2713", "\u2717", "\u2212", "+"}


@pytest.mark.parametrize(
    "extra, status, words",
    [
        (["--uid", "video1", "--cid", "nosuch"], "404", "nosuch"),
        (["--uid", "video1", "--cid", "clip1", "--model", "nosuch-model"], "404", "nosuch-model"),
    ],
    ids=["unknown-clip", "unknown-model"],
)
def test_errors_print_the_servers_detail(up_stack, extra: list[str], status: str, words: str) -> None:
    clip = up_stack.workspace.clips[("video1", "clip1")]
    done = score(str(clip), *extra, "--url", up_stack.url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"audio-score score: error: {status} ") and words in lines[0]
    assert done.stdout == ""


def test_undecodable_upload_is_a_4xx_with_detail(up_stack, tmp_path: Path) -> None:
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"this is not audio at all" * 100)
    done = score(str(junk), "--uid", "video1", "--cid", "clip1", "--url", up_stack.url)
    assert done.returncode == 1
    assert done.stderr.startswith("audio-score score: error: 4"), done.stderr


def test_unreachable_router_and_bad_arguments(tmp_path: Path) -> None:
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x")
    done = score(str(audio), "--uid", "u", "--cid", "c", "--url", f"http://127.0.0.1:{free_port()}", timeout=60)
    assert done.returncode == 1
    assert "cannot reach the router" in done.stderr and "Traceback" not in done.stderr

    done = score(str(tmp_path / "missing.wav"), "--uid", "u", "--cid", "c", timeout=60)
    assert done.returncode == 2 and "no such file" in done.stderr
    done = score(str(audio), timeout=60)
    assert done.returncode == 2 and "--uid" in done.stderr and "--cid" in done.stderr


def test_batch_scores_a_folder(up_stack, tmp_path: Path) -> None:
    ws = up_stack.workspace
    folder = tmp_path / "uploads"
    folder.mkdir()
    shutil.copy(ws.clips[("video1", "clip1")], folder / "video1_clip1.mov")
    shutil.copy(ws.clips[("video1", "clip2")], folder / "video1_clip2.mov")
    shutil.copy(ws.clips[("video2", "clip1")], folder / "video2_clip1.mov")
    (folder / "notes.txt").write_text("not audio: ignored")

    done = score("--batch", str(folder), "--url", up_stack.url)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert lines[0].split() == ["file", "model", "sim_score", "audio", "text", "words", "lang", "heard", "error"]
    body = {line.split()[0]: line.split() for line in lines[2:]}
    assert set(body) == {"video1_clip1.mov", "video1_clip2.mov", "video2_clip1.mov"}
    for row in body.values():
        assert row[1] == "whisper-tiny"
        assert float(row[2]) == pytest.approx(1.0, abs=1e-3)  # each file is its own reference clip
        assert float(row[5]) == 1.0  # word accuracy
    assert "3 scored, 0 failed" in done.stderr

    # An unknown clip and a name without '_' fail; the rest still score; the exit is non-zero.
    shutil.copy(ws.clips[("video1", "clip1")], folder / "video1_nosuch.mov")
    shutil.copy(ws.clips[("video1", "clip1")], folder / "nounderscore.mov")
    done = score("--batch", str(folder), "--url", up_stack.url, "--model", "higgs-tiny", "--json")
    assert done.returncode == 1, done.stderr
    rows = {r["file"]: r for r in map(json.loads, done.stdout.strip().splitlines())}
    assert len(rows) == 5
    assert "404" in rows["video1_nosuch.mov"]["error"]
    assert "<uid>_<cid>" in rows["nounderscore.mov"]["error"]
    assert rows["video2_clip1.mov"]["model"] == "higgs-tiny" and rows["video2_clip1.mov"]["error"] is None
    assert "3 scored, 2 failed" in done.stderr


def test_client_needs_no_torch(tmp_path: Path) -> None:
    """The router image has no torch: the client path must not import it (nor kserve, nor the backends)."""
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"x")
    code = (
        "import sys\n"
        "from audio_score.cli import main\n"
        f"rc = main(['score', {str(audio)!r}, '--uid', 'u', '--cid', 'c', '--url', 'http://127.0.0.1:{free_port()}'])\n"
        "heavy = [m for m in ('torch', 'transformers', 'kserve', 'audio_score.backends') if m in sys.modules]\n"
        "assert rc == 1 and not heavy, (rc, heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
