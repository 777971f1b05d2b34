"""A fleet on loopback: a real PostgreSQL (helpers.postgres), workers that
share it (in this process, or as daemons that can be killed), and gateways
in front of them, each on port 0."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc

from helpers.hosted import keys_file
from helpers.postgres import Postgres
from helpers.upstreams import stop_group
from helpers.workers import RunningWorker, SessionCalls, make_config, running_worker
from worker.config import Config
from worker.fleet.gateway import GatewayServer
from worker.pb import sandbox_pb2_grpc as pb_grpc

# Short enough for tests to see a worker lost in seconds.
LOST_AFTER_S = 4.0
HEARTBEAT_S = 0.5


def fleet_env(pg: Postgres, tmp_path: Path) -> dict[str, Any]:
    """Settings every member of a test fleet shares."""
    key = tmp_path / "profile.key"
    if not key.exists():
        key.write_bytes(bytes(range(32)))
    return {
        "store_url": pg.url,
        "profile_key_file": key,
        "heartbeat_interval_s": HEARTBEAT_S,
        "worker_lost_after_s": LOST_AFTER_S,
        "http_api_keys_file": keys_file(tmp_path),
    }


def daemon_env(pg: Postgres, max_sessions: int) -> dict[str, str]:
    """The environment of a worker run as its own process (one a test can
    kill) in a test fleet."""
    return {
        "SANDBOX_STORE_URL": pg.url,
        "SANDBOX_HEARTBEAT_INTERVAL_S": str(HEARTBEAT_S),
        "SANDBOX_DEFAULT_FLAVOUR": "headless-shell",
        "SANDBOX_MAX_SESSIONS": str(max_sessions),
    }


@contextlib.asynccontextmanager
async def fleet_worker(
    tmp_path: Path, pg: Postgres, name: str, **fields: Any
) -> AsyncIterator[RunningWorker]:
    defaults = {"default_flavour": "headless-shell", "max_sessions": 2}
    config = make_config(tmp_path / name, **{**fleet_env(pg, tmp_path), **defaults, **fields})
    async with running_worker(config) as worker:
        yield worker


@dataclasses.dataclass
class RunningGateway(SessionCalls):
    server: GatewayServer
    channel: grpc.aio.Channel

    @property
    def sessions(self) -> Any:
        return pb_grpc.BrowserSessionsStub(self.channel)

    @property
    def browsers(self) -> Any:
        return pb_grpc.BrowsersStub(self.channel)

    @property
    def status(self) -> Any:
        return pb_grpc.WorkerStub(self.channel)


def gateway_config(tmp_path: Path, pg: Postgres, **fields: Any) -> Config:
    values: dict[str, Any] = {
        **fleet_env(pg, tmp_path),
        "grpc_listen": "127.0.0.1:0",
        "automation_listen": "127.0.0.1:0",
        "http_api_listen": "127.0.0.1:0",
        "metrics_listen": "",
        **fields,
    }
    return Config.from_env({}, **values)


@contextlib.asynccontextmanager
async def running_gateway(
    tmp_path: Path, pg: Postgres, **fields: Any
) -> AsyncIterator[RunningGateway]:
    server = GatewayServer(gateway_config(tmp_path, pg, **fields))
    channel = grpc.aio.insecure_channel("unused")
    try:
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        yield RunningGateway(server, channel)
    finally:
        await channel.close()
        await server.stop()


def owner_of(pg: Postgres, session_id: str) -> str:
    import psycopg

    with psycopg.connect(pg.url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT worker_id FROM sessions WHERE session_id = %s", (session_id,)
        ).fetchone()
    return str(row[0]) if row else ""


@contextlib.contextmanager
def gateway_process(tmp_path: Path, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """`sandbox-worker gateway` as its own process; its ready file's content."""
    home = tmp_path / f"gateway-{time.monotonic_ns()}"
    home.mkdir()
    ready = home / "ready.json"
    argv = [
        sys.executable, "-m", "worker.cli", "gateway",
        "--grpc-listen", "127.0.0.1:0", "--automation-listen", "127.0.0.1:0",
        "--http-api-listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0",
        "--ready-file", str(ready), "--log-format", "json",
    ]  # fmt: skip
    with open(home / "log", "ab") as log:
        process = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=log, env={**os.environ, **env},
            start_new_session=True,
        )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not ready.exists():
            assert process.poll() is None, (home / "log").read_text()[-2000:]
            assert time.monotonic() < deadline, "the gateway was not ready within 30 s"
            time.sleep(0.05)
        yield json.loads(ready.read_text())
    finally:
        stop_group(process)
