"""The warm pool: browsers launched ahead of demand, each serving exactly one
session, refilled in the background, counted against capacity."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import pytest_asyncio

from helpers.upstreams import HOST_OVERRIDES, Origin, Proxy, TLSOrigin, unique_path
from helpers.waits import eventually
from helpers.workers import (
    RunningWorker,
    connected_page,
    make_config,
    running_worker,
    session_processes,
)
from worker.pb import sandbox_pb2 as pb
from worker.sessions.pool import PooledBrowser


@pytest_asyncio.fixture
async def pooled(tmp_path: Path, tls_origin: TLSOrigin) -> AsyncIterator[RunningWorker]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "origin-ca").write_text(tls_origin.ca.cert_pem.bytes().decode())
    config = make_config(
        tmp_path,
        warm_pool=("chromium=1",),
        max_sessions=2,
        host_overrides=HOST_OVERRIDES,
        secrets_dir=secrets,
    )
    async with running_worker(config) as running:
        yield running


async def idle_browser(worker: RunningWorker, flavour: str = "chromium") -> PooledBrowser:
    """The pool's idle browser, once it answers."""
    manager = worker.server.manager
    assert manager is not None
    idle = manager.pool.idle[flavour]
    await eventually(lambda: idle, timeout=20)
    return idle[0]


async def test_a_start_claims_the_warm_browser_and_the_pool_refills(
    pooled: RunningWorker, web: str
) -> None:
    warm = await idle_browser(pooled)
    started = await pooled.start(name="warm")
    assert started.session_id == warm.session_id
    async with connected_page(started) as page:
        await page.goto(f"{web}/index.html")
        assert await page.title()
    got = await pooled.get(started.session_id)
    assert got.status == pb.READY and got.name == "warm"
    replacement = await idle_browser(pooled)
    assert replacement.session_id != warm.session_id


async def test_a_pooled_browser_serves_one_session_and_goes_with_it(
    pooled: RunningWorker,
) -> None:
    warm = await idle_browser(pooled)
    started = await pooled.start()
    assert started.session_id == warm.session_id
    await pooled.stop(started.session_id)
    state = pooled.config.state_dir
    await eventually(lambda: not session_processes(state, warm.session_id), timeout=10)
    await eventually(lambda: not (pooled.config.sessions_dir / warm.session_id).exists(), 10)
    second = await pooled.start()
    assert second.session_id != warm.session_id


@contextlib.asynccontextmanager
async def client(started: Any) -> AsyncIterator[Any]:
    """A Playwright client of the session (its default context)."""
    from playwright.async_api import async_playwright

    stream = started.streams.automation_stream
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(
            stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
        )
        try:
            yield browser.contexts[0]
        finally:
            await browser.close()


async def test_a_warm_sessions_first_new_page_is_its_ready_tab(
    pooled: RunningWorker, web: str
) -> None:
    await idle_browser(pooled)
    started = await pooled.start()
    async with client(started) as context:
        assert [p.url for p in context.pages] == ["about:blank"]  # there at once
        first = await context.new_page()
        assert first is context.pages[0] and len(context.pages) == 1
        await first.goto(f"{web}/index.html")
        second = await context.new_page()  # later pages are new
        assert second is not first and len(context.pages) == 2
    await pooled.stop(started.session_id)
    # A client that used the ready tab first gets a page of its own.
    await idle_browser(pooled)
    started = await pooled.start()
    async with client(started) as context:
        await context.pages[0].evaluate("document.title = 'mine'")
        fresh = await context.new_page()
        assert fresh is not context.pages[0] and len(context.pages) == 2
        assert await context.pages[0].title() == "mine"


async def window_size(started: Any, url: str) -> list[int]:
    """The inner size of a page a Playwright client opens in the session."""
    async with connected_page(started) as page:
        await page.goto(url)
        size: list[int] = await page.evaluate("[innerWidth, outerWidth, outerHeight]")
    return size


@pytest.mark.parametrize("flavour", ["chromium", "headless-shell"])
async def test_a_warm_browser_takes_the_viewport_its_session_asks_for(
    tmp_path: Path, web: str, flavour: str
) -> None:
    config = make_config(tmp_path, warm_pool=(f"{flavour}=1",), max_sessions=2)
    async with running_worker(config) as worker:
        browser_id = "aws.browser.v1"
        if flavour != "chromium":
            lean = pb.CreateBrowserRequest(name="lean", flavour=pb.HEADLESS_SHELL)
            browser_id = (await worker.browsers.CreateBrowser(lean)).browser_id
        warm = await idle_browser(worker, flavour)
        started = await worker.start(
            browser_identifier=browser_id, view_port=pb.ViewPort(width=800, height=600)
        )
        assert started.session_id == warm.session_id
        inner, outer_width, outer_height = await window_size(started, f"{web}/index.html")
        assert (inner, outer_width, outer_height) == (800, 800, 600)


async def test_a_warm_browser_routes_through_the_proxy_its_session_brings(
    pooled: RunningWorker, origin: Origin, tinyproxy: Proxy
) -> None:
    warm = await idle_browser(pooled)
    routing = pb.ProxyConfiguration(
        proxies=[pb.Proxy(external_proxy=pb.ExternalProxy(server="127.0.0.1", port=tinyproxy.port))]
    )
    started = await pooled.start(proxy_configuration=routing)
    assert started.session_id == warm.session_id
    path = unique_path("warm-proxy")
    async with connected_page(started) as page:
        response = await page.goto(origin.url("web.example.test", path))
        assert response is not None and response.status == 200
    assert tinyproxy.log_lines(path)
    assert "tinyproxy" in origin.requests_for(path)[0].via
    got = await pooled.get(started.session_id)
    assert got.proxy_configuration == routing


async def test_a_warm_browser_without_a_proxy_connects_direct(
    pooled: RunningWorker, origin: Origin
) -> None:
    warm = await idle_browser(pooled)
    started = await pooled.start()
    assert started.session_id == warm.session_id
    path = unique_path("warm-direct")
    async with connected_page(started) as page:
        response = await page.goto(origin.url("web.example.test", path))
        assert response is not None and response.status == 200
    assert origin.requests_for(path)[0].via == ""


async def test_a_pooled_browser_that_dies_is_replaced_and_leaves_nothing(
    pooled: RunningWorker,
) -> None:
    warm = await idle_browser(pooled)
    assert warm.process is not None
    os.killpg(warm.process.pid, signal.SIGKILL)
    manager = pooled.server.manager
    assert manager is not None
    idle = manager.pool.idle["chromium"]
    await eventually(lambda: idle and idle[0].session_id != warm.session_id, timeout=20)
    state = pooled.config.state_dir
    await eventually(lambda: not session_processes(state, warm.session_id), timeout=10)
    await eventually(lambda: not (pooled.config.sessions_dir / warm.session_id).exists(), 10)
    listed = await pooled.sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest())
    assert not listed.items  # a pooled browser was never a session


async def test_a_cold_start_takes_the_room_of_an_idle_pooled_browser(
    pooled: RunningWorker,
) -> None:
    await idle_browser(pooled)
    lean = await pooled.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name="lean", flavour=pb.HEADLESS_SHELL)
    )
    await pooled.start(browser_identifier=lean.browser_id)  # 1 session + 1 pooled = capacity
    second = await pooled.start(browser_identifier=lean.browser_id)  # evicts the pooled one
    assert second.status == pb.READY
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await pooled.start(browser_identifier=lean.browser_id)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_a_warm_session_trusts_the_cas_it_brings(
    pooled: RunningWorker, tls_origin: TLSOrigin
) -> None:
    warm = await idle_browser(pooled)
    certificate = pb.Certificate(
        location=pb.CertificateLocation(
            secrets_manager=pb.SecretsManagerLocation(secret_arn="file:origin-ca")
        )
    )
    started = await pooled.start(certificates=[certificate])
    assert started.session_id == warm.session_id
    async with connected_page(started) as page:
        response = await page.goto(tls_origin.url("secure.company.test", unique_path()))
        assert response is not None and response.status == 200
