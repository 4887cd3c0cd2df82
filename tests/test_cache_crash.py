"""A cache build killed mid-write: the next build removes its temporary folder at once (its writer is gone), while
a live concurrent writer's temporary folder is never touched.

The writer is the real ``audio-score cache-build`` in a subprocess, held in the middle of writing an entry (its
frame file's write blocks) so that the test can look at its temporary folder, then SIGKILLed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from audio_score.cache import ReferenceCache
from audio_score.cli import main as cli_main
from audio_score.writers import host_tag, process_start, writer_alive

from conftest import REPO_ROOT

#: Run the real cache build, but block forever when it comes to write the first frames file.
HOLD_IN_WRITE = """
import sys, time
import audio_score.cache as cache
real = cache._save_npy
def held(path, array):
    if path.name == cache.FRAMES:
        print("holding", path.parent, flush=True)
        time.sleep(3600)
    real(path, array)
cache._save_npy = held
from audio_score.cli import main
sys.exit(main(sys.argv[1:]))
"""


def temporaries(cache_dir: Path) -> list[Path]:
    return sorted(cache_dir.glob("*/*/.tmp-*"))


def start_held_writer(config: Path, model: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", HOLD_IN_WRITE, "cache-build", "--config", str(config), "--models", model]
    cmd.append("--no-progress")
    return subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)


def wait_for_temporary(proc: subprocess.Popen, cache_dir: Path, timeout_s: float = 180) -> Path:
    deadline = time.monotonic() + timeout_s
    line = proc.stdout.readline()  # "holding <folder>" once it is mid-write
    assert line.startswith("holding"), (line, proc.poll())
    while not temporaries(cache_dir):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.1)
    return temporaries(cache_dir)[0]


def test_a_killed_builds_temporary_is_removed_and_a_live_ones_kept(workspace) -> None:
    key = "whisper-tiny"
    writer = start_held_writer(workspace.config_path, key)
    try:
        tmp = wait_for_temporary(writer, workspace.cache_dir)
        assert (tmp / "embedding.npy").is_file() and not (tmp / "meta.json").exists()
        assert writer_alive(tmp.name) is True

        # A concurrent build (another shard) sweeps while the writer lives: its folder stays.
        assert ReferenceCache(workspace.cache_dir, key).sweep_temporaries() == 0
        assert tmp.is_dir()
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=30)
        writer.stdout.close()

    assert writer_alive(tmp.name) is False
    # A new real build (well within the hour the old rule waited) removes it and builds every entry.
    assert cli_main(["cache-build", "--config", str(workspace.config_path), "--models", key, "--no-progress"]) == 0
    assert not tmp.exists()
    assert temporaries(workspace.cache_dir) == []
    cache = ReferenceCache(workspace.cache_dir, key)
    assert sorted(cache.entries()) == sorted(workspace.clips)


@pytest.mark.parametrize("kind", [".tmp-", ".old-"])
def test_writer_fields_decide_what_is_swept(tmp_path: Path, kind: str) -> None:
    cache = ReferenceCache(tmp_path / "cache", "m")
    folder = cache.root / "vid1"
    folder.mkdir(parents=True)
    me = os.getpid()

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(done.stdout)
    names = {
        "live": f"{kind}c1+{host_tag()}+{me}+{process_start(me)}+abc",
        "dead": f"{kind}c2+{host_tag()}+{dead_pid}+12345+abc",
        # This process's pid, but another start time: the recorded writer died and its pid was reused.
        "reused": f"{kind}c3+{host_tag()}+{me}+1+abc",
        # Another host (a shared volume) or an older version's name: cannot be checked, kept until an hour old.
        "elsewhere": f"{kind}c4+0123456789ab+{me}+{process_start(me)}+abc",
        "legacy": f"{kind}c5-xyz",
    }
    for name in names.values():
        (folder / name).mkdir()
    assert cache.sweep_temporaries() == 2
    left = {p.name for p in folder.iterdir()}
    assert left == {names["live"], names["elsewhere"], names["legacy"]}

    for name in (names["elsewhere"], names["legacy"]):
        os.utime(folder / name, (0, 0))
    assert cache.sweep_temporaries() == 2
    assert {p.name for p in folder.iterdir()} == {names["live"]}
