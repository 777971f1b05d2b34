"""Egress enforced at the network layer (`network_isolation=namespace`): each
browser lives in a network namespace whose only reachable socket is its
relay listener. Pages still load, through proxies and bypass rules alike;
anything in that namespace that tries to go around the relay finds no route.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helpers.faults import report_fault
from helpers.routes import external, load, routing
from helpers.upstreams import HOST_OVERRIDES, Origin, Proxy, unique_path
from helpers.workers import RunningWorker, make_config, running_worker, session_page
from worker.network import netns

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or bool(netns.probe()), reason="needs root to make network namespaces"
)

# What a compromised browser process might try: connect anywhere itself.
TRY_CONNECT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
try:
    socket.create_connection((host, port), timeout=3).close()
    print("connected")
except OSError as exc:
    print(type(exc).__name__, exc.errno)
"""


@pytest_asyncio.fixture
async def isolated(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    config = make_config(tmp_path, host_overrides=HOST_OVERRIDES, network_isolation="namespace")
    async with running_worker(config) as running:
        yield running


def connect_from(pid: int, host: str, port: int) -> str:
    """Try a TCP connection from inside the network namespace of `pid`."""
    done = subprocess.run(
        [
            "nsenter",
            f"--net=/proc/{pid}/ns/net",
            sys.executable,
            "-c",
            TRY_CONNECT,
            host,
            str(port),
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    return done.stdout.strip() or done.stderr.strip()


async def test_pages_load_through_the_relay_and_nothing_else_is_reachable(
    isolated: RunningWorker, origin: Origin, tinyproxy: Proxy
) -> None:
    proxy = routing(external(tinyproxy), bypass=("www.example.test",))
    paths = {name: unique_path(name) for name in ("proxied", "bypass", "plain")}
    async with session_page(isolated, proxy_configuration=proxy) as (page, started):
        manager = isolated.server.manager
        assert manager is not None
        session = manager.live[started.session_id]
        assert session.process is not None
        pid = session.process.pid
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        # Both routes work: the proxy, and the bypass (direct, from the relay).
        status, _ = await load(page, origin.url("web.example.test", paths["proxied"]))
        assert status == 200 and tinyproxy.log_lines(paths["proxied"])
        status, _ = await load(page, origin.url("www.example.test", paths["bypass"]))
        assert status == 200 and not tinyproxy.log_lines(paths["bypass"])
        assert origin.requests_for(paths["bypass"])[0].via == ""
        # Around the relay: the origin and the proxy themselves listen on the
        # worker's loopback, which this namespace does not have; any other
        # address has no route at all.
        tries = {
            "origin": await asyncio.to_thread(connect_from, pid, "127.0.0.1", origin.port),
            "proxy": await asyncio.to_thread(connect_from, pid, "127.0.0.1", tinyproxy.port),
            "outside": await asyncio.to_thread(connect_from, pid, "10.255.255.1", 80),
            "relay": await asyncio.to_thread(connect_from, pid, "127.0.0.1", session.proxy_port),
        }
    assert tries["origin"].startswith("ConnectionRefusedError"), tries
    assert tries["proxy"].startswith("ConnectionRefusedError"), tries
    assert tries["outside"].startswith("OSError 101"), tries  # ENETUNREACH
    assert tries["relay"] == "connected", tries
    report_fault(
        "a process in a session's network namespace connects around the relay",
        "origin and proxy ports refused (not in its namespace), other addresses unreachable;"
        " only the relay listener answers; pages load through proxy and bypass routes",
        "n/a",
        "n/a",
    )


async def test_a_session_without_a_proxy_goes_direct_through_the_relay(
    isolated: RunningWorker, origin: Origin
) -> None:
    path = unique_path("direct")
    async with session_page(isolated) as (page, started):
        status, body = await load(page, origin.url("web.example.test", path))
        manager = isolated.server.manager
        assert manager is not None
        assert manager.live[started.session_id].proxy_port  # it has a relay listener
    assert status == 200 and f"web.example.test{path}" in body
    assert origin.requests_for(path)[0].via == ""
