"""The worker as its own process (`sandbox-worker serve`) on ports the kernel
picks, and the CLI run against it; everything it started is killed by
process group and by the directories it names."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from helpers.workers import kill_worker_processes


def serve_argv(state_dir: Path, *flags: str) -> list[str]:
    """`sandbox-worker serve` on ports the kernel picks."""
    return [
        sys.executable, "-m", "worker.cli", "serve",
        "--state-dir", str(state_dir),
        "--grpc-listen", "127.0.0.1:0",
        "--automation-listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
        "--http-api-listen", "127.0.0.1:0",
        *flags,
    ]  # fmt: skip


@contextlib.contextmanager
def daemon(
    state_dir: Path, *flags: str, reap: bool = True, env: dict[str, str] | None = None
) -> Iterator[tuple[subprocess.Popen[bytes], dict[str, Any]]]:
    ready = state_dir.parent / f"ready-{time.monotonic_ns()}.json"
    log = open(state_dir.parent / "daemon.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen(
        serve_argv(state_dir, "--ready-file", str(ready), "--log-format", "json", *flags),
        stdout=subprocess.DEVNULL,
        stderr=log,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert proc.poll() is None, "the daemon exited before it was ready"
            assert time.monotonic() < deadline, "the daemon was not ready within 30s"
            time.sleep(0.05)
        yield proc, json.loads(ready.read_text())
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()
        if reap:
            kill_worker_processes(state_dir)


def cli(target: str, *args: str) -> Any:
    out = subprocess.run(
        [sys.executable, "-m", "worker.cli", *args, "--target", target, "--json"],
        capture_output=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout)
