"""A PostgreSQL of one's own for a local fleet (`sandbox-worker fleet`) and
the tests: Debian's binaries, a cluster made with initdb in a fresh
directory, run in the foreground in a process group of its own, as an
unprivileged user when we are root (PostgreSQL refuses root), on a loopback
port, trusting loopback connections. Not for production: a cluster gives a
fleet its store (docs/fleet.md)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from worker.cli.groups import stop_group


def bin_dir() -> Path:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    if not found:
        raise FileNotFoundError("PostgreSQL is not installed (Debian: apt install postgresql)")
    return Path(found[-1])


class LocalPostgres:
    def __init__(self, base: Path, port: int) -> None:
        self.base, self.port = base, port
        self.data = base / "data"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        argv = [str(bin_dir() / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"]
        subprocess.run(_as_owner(argv), check=True, capture_output=True, timeout=120)

    def start(self, timeout: float = 30.0) -> None:
        argv = [
            str(bin_dir() / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
            "-c", "fsync=off", "-c", "max_connections=200",
        ]  # fmt: skip
        with open(self.base / "postgres.log", "ab") as log:
            self._process = subprocess.Popen(
                _as_owner(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        ready = [str(bin_dir() / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if subprocess.run(ready, check=False).returncode == 0:
                return
            if self._process is None or self._process.poll() is not None:
                raise RuntimeError(f"PostgreSQL exited: {self.log()}")
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not accept connections: {self.log()}")

    def stop(self) -> None:
        """SIGTERM (a smart shutdown), then SIGKILL the group after a grace."""
        process, self._process = self._process, None
        if process is not None:
            stop_group(process, 10)

    def log(self) -> str:
        path = self.base / "postgres.log"
        return path.read_text()[-2000:] if path.exists() else ""


def _as_owner(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@contextlib.contextmanager
def local_postgres(port: int) -> Iterator[LocalPostgres]:
    """A running cluster in a new directory under /tmp (the unprivileged
    user must reach it), removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix="sandbox-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
    server = LocalPostgres(base, port)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
