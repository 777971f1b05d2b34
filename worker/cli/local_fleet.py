"""`sandbox-worker fleet --workers N`: a whole fleet on this machine, for
trying the gateway: a PostgreSQL in a temporary directory, N workers (each
`serve` with its own state directory and ports the kernel picks) sharing
it, and one gateway on the given ports. It prints the gateway's endpoints
and runs until SIGINT or SIGTERM, then stops the gateway, drains the
workers and removes the database. The README's `serve` stays one worker."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TextIO

from worker.cli.groups import stop_group
from worker.cli.local_postgres import local_postgres
from worker.config import ConfigError

READY_TIMEOUT_S = 60.0


def run(workers: int, gateway_flags: list[str], out: TextIO = sys.stdout) -> int:
    if not 1 <= workers <= 16:
        raise ConfigError("--workers: from 1 to 16")
    stop = _stop_on_signals()
    with (
        tempfile.TemporaryDirectory(prefix="sandbox-fleet-") as tmp,
        local_postgres(_free_port()) as pg,
    ):
        base = Path(tmp)
        key = base / "profile.key"
        key.write_bytes(secrets.token_bytes(32))  # one profile key for the fleet
        env = {**os.environ, "SANDBOX_STORE_URL": pg.url, "SANDBOX_PROFILE_KEY_FILE": str(key)}
        with contextlib.ExitStack() as stack:
            for n in range(workers):
                args = ["serve", *_worker_flags(base, n)]
                stack.enter_context(_member(base / f"worker-{n}", args, env))
            info = stack.enter_context(_member(base / "gateway", ["gateway", *gateway_flags], env))
            report = {"workers": workers, "directory": str(base), **info}  # logs are there
            print(json.dumps(report), file=out, flush=True)
            while not stop():
                time.sleep(0.2)
    return 0


def _worker_flags(base: Path, n: int) -> list[str]:
    return [
        "--state-dir", str(base / f"worker-{n}" / "state"),
        "--grpc-listen", "127.0.0.1:0",
        "--automation-listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
        "--http-api-listen", "",
        # A try-out: Ctrl-C ends running sessions after a short drain.
        "--drain-timeout", "5",
    ]  # fmt: skip


@contextlib.contextmanager
def _member(home: Path, args: list[str], env: dict[str, str]) -> Iterator[dict[str, object]]:
    """One process of the fleet, in its own process group; its ready file's
    content while it runs; SIGTERM (a drain), then SIGKILL after a grace."""
    home.mkdir(parents=True, exist_ok=True)
    ready = home / "ready.json"
    with open(home / "log", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", *args, "--ready-file", str(ready)],
            stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not ready.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (home / "log").read_text()[-1500:]
                raise ConfigError(f"{args[0]} did not start: {tail}")
            time.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        stop_group(process, 90)  # a worker drains first


def _stop_on_signals() -> Callable[[], bool]:
    stopped = threading.Event()
    signal.signal(signal.SIGINT, lambda _sig, _frame: stopped.set())
    signal.signal(signal.SIGTERM, lambda _sig, _frame: stopped.set())
    return stopped.is_set


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
