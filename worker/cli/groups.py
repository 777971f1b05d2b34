"""Stopping a process this program started in a process group of its own
(a local PostgreSQL, a local fleet's members): SIGTERM to the whole group,
the process's own graceful stop, then SIGKILL to what is left after the
grace. Never by name: only the group we made."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from typing import Any


def stop_group(process: subprocess.Popen[Any], grace_s: float) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(grace_s)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(10)
