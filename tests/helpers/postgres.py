"""A real PostgreSQL for the tests: Debian's binaries, a cluster made with
initdb in a fresh directory and run in the foreground as an unprivileged
user (initdb refuses root), on a loopback port, in a process group of its
own that is killed whatever happens. It can be restarted on the same port
and data, as an operator's restart would."""

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

from helpers.upstreams import free_port, stop_group

BIN = (
    Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    if glob.glob("/usr/lib/postgresql/*/bin")
    else Path("/usr/lib/postgresql/15/bin")
)


class Postgres:
    def __init__(self, base: Path, port: int) -> None:
        self.base, self.port = base, port
        self.data = base / "data"
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def init(self) -> None:
        self._run([str(BIN / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"])

    def start(self) -> None:
        argv = [
            str(BIN / "postgres"), "-D", str(self.data), "-p", str(self.port),
            "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.base}",
            "-c", "fsync=off", "-c", "max_connections=200",
        ]  # fmt: skip
        with open(self.base / "postgres.log", "ab") as log:
            self._process = subprocess.Popen(
                _as_owner(argv), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(BIN / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return
            assert self._process is not None and self._process.poll() is None, self.log()
            time.sleep(0.1)
        raise TimeoutError(f"PostgreSQL did not accept connections: {self.log()}")

    def stop(self) -> None:
        if self._process is not None:
            stop_group(self._process)
            self._process = None

    def restart(self, down_for: float = 0.0) -> None:
        self.stop()
        time.sleep(down_for)
        self.start()

    def log(self) -> str:
        path = self.base / "postgres.log"
        return path.read_text()[-2000:] if path.exists() else ""

    def _run(self, argv: list[str]) -> None:
        subprocess.run(_as_owner(argv), check=True, capture_output=True, timeout=120)


def _as_owner(argv: list[str]) -> list[str]:
    """As `nobody` when the tests run as root: PostgreSQL refuses root."""
    if os.geteuid() != 0:
        return argv
    return ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv]


@contextlib.contextmanager
def postgres() -> Iterator[Postgres]:
    # Under /tmp, not pytest's 0700 root-owned tree: nobody must reach it.
    base = Path(tempfile.mkdtemp(prefix="sandbox-pg-"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(base, nobody.pw_uid, nobody.pw_gid)
    server = Postgres(base, free_port())
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
