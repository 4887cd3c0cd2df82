"""Who wrote a temporary folder: host+boot tag, pid and process start time, and whether that writer still runs.

The cache (:mod:`audio_score.cache`) names each temporary folder after its writer so that the next build removes
a crashed writer's leftovers at once and never a live concurrent writer's (two shard processes share a cache).
This is process bookkeeping (Linux ``/proc``), not storage, so it lives on its own; ``psutil`` would do the
same in more lines of dependency for two fields.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import socket
from pathlib import Path

#: Separates the writer fields in a temporary folder's name: never in an id (ID_PATTERN) nor in the tag.
WRITER_SEP = "+"


@functools.lru_cache(maxsize=1)
def host_tag() -> str:
    """This host and boot, short: a pid and a start time mean something only within one boot of one host."""
    boot = ""
    with contextlib.suppress(OSError):
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    return hashlib.sha256(f"{socket.gethostname()}/{boot}".encode()).hexdigest()[:12]


def process_start(pid: int) -> str:
    """The process's start time in clock ticks since boot (Linux ``/proc``), "0" where it cannot be read.

    With the pid it names one process even after the pid is reused."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "0"
    # Field 22; the command name (field 2) may hold spaces, so count from its closing parenthesis.
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else "0"


def temp_prefix(kind: str, name: str) -> str:
    """``.tmp-<name>+<host tag>+<pid>+<start>+`` (the caller appends a unique suffix)."""
    pid = os.getpid()
    return WRITER_SEP.join((f"{kind}{name}", host_tag(), str(pid), process_start(pid), ""))


def writer_alive(folder_name: str) -> bool | None:
    """Whether the writer recorded in a temporary folder's name still runs: None when it cannot be told (no
    writer fields, or another host or boot)."""
    parts = folder_name.split(WRITER_SEP)
    if len(parts) != 5 or parts[1] != host_tag() or not parts[2].isdigit():
        return None
    pid, start = int(parts[2]), parts[3]
    if start != "0":
        return process_start(pid) == start  # "0" (no such process now) or another process's start: gone
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
