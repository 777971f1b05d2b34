"""A session whose pages ask for nothing sends nothing: no request of the
browser's own (sign-in checks, component updates) on any route, cold or
warm, in either flavour, for a minute of idling with a client connected.

Full Chromium used to send `CONNECT accounts.google.com` and an on-demand
component check to `update.googleapis.com` within its first second, through
the session's proxy with the session's credentials."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from helpers.routes import routing
from helpers.upstreams import HOST_OVERRIDES
from helpers.waits import eventually
from helpers.workers import RunningWorker, connected_page, make_config, running_worker
from worker.pb import sandbox_pb2 as pb

IDLE_S = 60.0


class LoggingProxy:
    """A proxy that writes down every connection and its first line, and
    forwards nothing: any connection at all is traffic nobody asked for."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
        except (TimeoutError, ConnectionError):
            line = b""
        self.seen.append(line.decode(errors="replace").strip() or "(connection, no request)")
        writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


@contextlib.asynccontextmanager
async def logging_proxy() -> AsyncIterator[LoggingProxy]:
    proxy = LoggingProxy()
    proxy.server = await asyncio.start_server(proxy._serve, "127.0.0.1", 0)
    try:
        yield proxy
    finally:
        proxy.server.close()
        await proxy.server.wait_closed()


def to(proxy: LoggingProxy) -> pb.ProxyConfiguration:
    return routing(pb.Proxy(external_proxy=pb.ExternalProxy(server="127.0.0.1", port=proxy.port)))


async def route_counters(worker: RunningWorker) -> dict[str, Any]:
    """The relay's counters of every session the worker holds, pooled
    browsers included: any request on any route (proxy or direct) shows."""
    manager, relay = worker.server.manager, worker.server.relay
    assert manager is not None and relay is not None
    ids = set(manager.live) | {b.session_id for idle in manager.pool.idle.values() for b in idle}
    return {sid: await relay.stats(sid) for sid in sorted(ids)}


async def test_idle_sessions_send_nothing_in_either_flavour_cold_or_warm(tmp_path: Path) -> None:
    pooled_config = make_config(
        tmp_path / "pooled",
        warm_pool=("chromium=1", "headless-shell=1"),
        max_sessions=4,
        host_overrides=HOST_OVERRIDES,
    )
    cold_config = make_config(tmp_path / "cold", max_sessions=2, host_overrides=HOST_OVERRIDES)
    async with (
        logging_proxy() as proxy,
        running_worker(pooled_config) as pooled,
        running_worker(cold_config) as cold,
    ):
        manager = pooled.server.manager
        assert manager is not None
        await eventually(lambda: all(manager.pool.idle.values()), timeout=30)
        warm_ids = {b.session_id for idle in manager.pool.idle.values() for b in idle}
        sessions = []
        for worker in (pooled, cold):
            shell = await worker.browsers.CreateBrowser(
                pb.CreateBrowserRequest(name="shell", flavour=pb.HEADLESS_SHELL)
            )
            for browser in ("", shell.browser_id):
                started = await worker.start(
                    browser_identifier=browser, proxy_configuration=to(proxy)
                )
                sessions.append((worker, started))
        # Both pooled browsers served a session; the cold worker launched its own.
        assert warm_ids == {s.session_id for w, s in sessions if w is pooled}
        async with contextlib.AsyncExitStack() as clients:
            for _, started in sessions:
                await clients.enter_async_context(connected_page(started))
            await asyncio.sleep(IDLE_S)
            counters = {
                "pooled": await route_counters(pooled),
                "cold": await route_counters(cold),
            }
        for worker, started in sessions:
            await worker.stop(started.session_id, started.browser_identifier)
    # Four sessions and the pool's two refills were looked at, and none of
    # them used any route, nor did anything reach the proxy.
    assert sum(len(c) for c in counters.values()) >= 6
    used = {sid: routes for c in counters.values() for sid, routes in c.items() if routes}
    assert not used, used
    assert proxy.seen == []
