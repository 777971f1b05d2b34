"""Find and kill browsers (and their leftovers) that outlived their session
or a previous run of the worker, and remove their directories.

A browser is ours when its command line names a directory under our sessions
directory (every browser gets `--user-data-dir=<sessions>/<id>/profile`), so
a pid reused by an unrelated process is never touched, and two workers with
different state directories never reap each other's browsers.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from collections.abc import Callable
from pathlib import Path

REMOVE_ATTEMPTS = 4


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


def sweep(directory: Path, tmp_directory: Path, timeout: float) -> None:
    """Kill what still refers to a session's directories, then remove them.

    Full Chromium starts crashpad handlers in process groups of their own,
    which the group kill does not reach; they name the directory.
    """
    kill_referencing(tmp_directory, timeout)
    kill_referencing(directory, timeout)
    # The browser's own tree first: the session directory (named in the
    # state) goes last, so its absence means the whole session is gone.
    remove_tree(tmp_directory)
    remove_tree(directory)


def remove_tree(path: Path) -> None:
    """Remove a session directory, including files made read-only inside it."""

    def make_writable_and_retry(func: Callable[[str], object], name: str, _exc: object) -> None:
        if not os.path.lexists(name):
            return
        os.chmod(os.path.dirname(name), 0o700)
        func(name)

    for attempt in range(REMOVE_ATTEMPTS):
        if not path.exists():
            return
        try:
            shutil.rmtree(path, onerror=make_writable_and_retry)
        except OSError:
            # A file appeared while the tree was being removed (a process
            # of the browser still dying): go again, a bounded few times.
            if attempt == REMOVE_ATTEMPTS - 1:
                raise
            time.sleep(0.05 * (attempt + 1))
