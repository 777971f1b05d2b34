"""A worker in the test's own process on port 0, and what tests look at
of its browsers: pages through the automation endpoint, their processes and
the tree they write. Every helper that starts processes kills them by
process group (or by the directory they live in), even when a test fails."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc

from worker.browser import reaper
from worker.config import Config
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.server import WorkerServer

ROOT = Path(__file__).resolve().parent.parent.parent  # the repository


class SessionCalls:
    """Start, Get and Stop on whatever serves BrowserSessions (`sessions`):
    a worker or a fleet gateway."""

    sessions: Any

    async def start(self, **fields: Any) -> Any:
        return await self.sessions.StartBrowserSession(pb.StartBrowserSessionRequest(**fields))

    async def get(self, session_id: str, browser: str = "") -> Any:
        return await self.sessions.GetBrowserSession(
            pb.GetBrowserSessionRequest(session_id=session_id, browser_identifier=browser)
        )

    async def stop(self, session_id: str, browser: str = "") -> Any:
        return await self.sessions.StopBrowserSession(
            pb.StopBrowserSessionRequest(session_id=session_id, browser_identifier=browser)
        )


@dataclasses.dataclass
class RunningWorker(SessionCalls):
    server: WorkerServer
    channel: grpc.aio.Channel
    sessions: Any
    browsers: Any
    worker: Any

    @property
    def config(self) -> Config:
        return self.server.config

    @property
    def profiles(self) -> Any:
        return pb_grpc.BrowserProfilesStub(self.channel)


def make_config(tmp_path: Path, **fields: Any) -> Config:
    defaults: dict[str, Any] = {
        "state_dir": tmp_path / "state",
        "grpc_listen": "127.0.0.1:0",
        "automation_listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "http_api_listen": "127.0.0.1:0",
        "max_sessions": 3,
        "drain_timeout_s": 5.0,
    }
    defaults.update(fields)
    return Config.from_env({}, **defaults)


@contextlib.asynccontextmanager
async def running_worker(config: Config) -> AsyncIterator[RunningWorker]:
    server = WorkerServer(config)
    channel = grpc.aio.insecure_channel("unused")
    try:
        await server.start()
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}")
        yield RunningWorker(
            server,
            channel,
            pb_grpc.BrowserSessionsStub(channel),
            pb_grpc.BrowsersStub(channel),
            pb_grpc.WorkerStub(channel),
        )
    finally:
        await channel.close()
        await server.stop(drain_timeout=0.1)
        leftovers = await asyncio.to_thread(reaper.pids_referencing, server.config.state_dir)
        await asyncio.to_thread(reaper.kill_referencing, server.config.state_dir)
        assert not leftovers, f"browser processes outlived the worker: {leftovers}"


@contextlib.asynccontextmanager
async def connected_page(started: Any) -> AsyncIterator[Any]:
    """A new Playwright page in a started session, over its automation endpoint."""
    from playwright.async_api import async_playwright

    stream = started.streams.automation_stream
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(
            stream.stream_endpoint,
            headers={"Authorization": f"Bearer {stream.token}"},
            timeout=20000,
        )
        try:
            yield await browser.contexts[0].new_page()
        finally:
            await browser.close()


@contextlib.asynccontextmanager
async def session_page(worker: RunningWorker, **fields: Any) -> AsyncIterator[tuple[Any, Any]]:
    """Start a session, yield (page, StartBrowserSession answer), stop it.

    Stopping closes the browser's kept-alive connections, so proxies write
    their log lines for them (squid logs a tunnel when it closes)."""
    started = await worker.start(**fields)
    try:
        async with connected_page(started) as page:
            yield page, started
    finally:
        await worker.stop(started.session_id, started.browser_identifier)


def browser_root(state_dir: Path, session_id: str = "") -> Path:
    """The tree a session's browser writes (profile, home, downloads, tmp),
    under the worker's runtime root; the whole root without a session."""
    runtime = Config.from_env({}, state_dir=state_dir.resolve()).session_tmp_root
    return runtime / session_id if session_id else runtime


def worker_processes(state_dir: Path) -> list[int]:
    """Every process naming the worker's state tree or its runtime root."""
    named = reaper.pids_referencing(state_dir.resolve())
    return sorted({*named, *reaper.pids_referencing(browser_root(state_dir))})


def kill_worker_processes(state_dir: Path) -> None:
    reaper.kill_referencing(state_dir.resolve())
    reaper.kill_referencing(browser_root(state_dir))


def session_processes(state_dir: Path, session_id: str) -> list[int]:
    return reaper.pids_referencing(browser_root(state_dir, session_id))


def thread_nices(pid: int) -> set[int]:
    """The nice value of every thread of `pid` (nice is per thread)."""
    nices = set()
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/stat") as f:
            nices.add(int(f.read().rpartition(")")[2].split()[16]))
    return nices
