"""Find and kill browsers a previous run of the worker left behind.

A browser is ours when its command line names a directory under our sessions
directory (every browser gets `--user-data-dir=<sessions>/<id>/profile`), so
a pid reused by an unrelated process is never touched, and two workers with
different state directories never reap each other's browsers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path


def pids_referencing(directory: Path) -> list[int]:
    """Pids whose command line mentions `directory` (an absolute path)."""
    needle = str(directory).encode() + b"/"
    found = []
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdline = f.read()
        except OSError:
            continue  # exited while we looked, or not ours to read
        if needle in cmdline:
            found.append(int(entry))
    return found


def kill_referencing(directory: Path, timeout: float = 5.0) -> int:
    """SIGKILL every process that mentions `directory`; returns how many."""
    killed: set[int] = set()
    deadline = time.monotonic() + timeout
    while (pids := pids_referencing(directory)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
            killed.add(pid)
        time.sleep(0.05)  # let the kernel finish them; bounded by the deadline
    return len(killed)
