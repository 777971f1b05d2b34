"""/metrics scraped while real sessions run: counters, gauges and histograms
move as the sessions, clients, proxies and RPCs do."""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
import websockets
from websockets.asyncio.client import connect

from helpers.scrapes import Scrape, scrape_port
from helpers.upstreams import HOST_OVERRIDES, Origin, Proxy, unique_path
from helpers.waits import eventually
from helpers.workers import (
    RunningWorker,
    connected_page,
    make_config,
    running_worker,
    session_processes,
)
from worker.cli.cdp_client import AsyncCDP
from worker.pb import sandbox_pb2 as pb


@pytest_asyncio.fixture
async def worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    async with running_worker(make_config(tmp_path, host_overrides=HOST_OVERRIDES)) as running:
        yield running


async def scrape(worker: RunningWorker) -> Scrape:
    return await scrape_port(worker.server.metrics_port)


async def test_a_session_moves_the_session_client_and_rpc_metrics(worker: RunningWorker) -> None:
    before = await scrape(worker)
    assert before.value("sandbox_capacity_sessions") == worker.config.max_sessions
    assert before.value("sandbox_sessions_started_total") == 0

    started = await worker.start()
    stream = started.streams.automation_stream
    with pytest.raises(websockets.InvalidStatus):
        async with connect(stream.stream_endpoint + "?token=wrong"):
            pass
    async with AsyncCDP.connect(stream.stream_endpoint, stream.token, timeout=20) as cdp:
        assert "product" in await cdp.call("Browser.getVersion")

        async def running() -> Scrape | None:
            now = await scrape(worker)
            ready = now.value("sandbox_session_start_seconds_count", flavour="chromium")
            return now if ready == 1 else None

        now = await eventually(running)
        assert now.value("sandbox_sessions_started_total", flavour="chromium") == 1
        assert now.value("sandbox_sessions_active", flavour="chromium") == 1
        assert now.value("sandbox_automation_clients") == 1
        assert now.value("sandbox_automation_refused_total", reason="unauthorized") == 1
        assert now.value("sandbox_cdp_messages_total", direction="in") >= 1
        assert now.value("sandbox_cdp_messages_total", direction="out") >= 1
        assert now.value("sandbox_browser_memory_pss_bytes", session_id=started.session_id) > (
            10 * 2**20
        )
        assert now.value("sandbox_browser_cpu_seconds_total", session_id=started.session_id) > 0
        ok = now.value("sandbox_grpc_requests_total", method="StartBrowserSession", code="OK")
        assert ok == 1

    await worker.stop(started.session_id)
    with pytest.raises(grpc.aio.AioRpcError):
        await worker.start(session_timeout_seconds=99999)
    after = await scrape(worker)
    assert after.value("sandbox_sessions_ended_total", reason="STOPPED") == 1
    assert after.value("sandbox_session_duration_seconds_count") == 1
    assert after.value("sandbox_sessions_active") == 0
    refused = after.value(
        "sandbox_grpc_requests_total", method="StartBrowserSession", code="INVALID_ARGUMENT"
    )
    assert refused == 1


async def test_a_crashed_browser_is_counted(worker: RunningWorker) -> None:
    started = await worker.start()

    async def browser_pid() -> int:
        pids = session_processes(worker.config.state_dir, started.session_id)
        return min(pids) if pids else 0

    os.killpg(await eventually(browser_pid), signal.SIGKILL)

    async def counted() -> bool:
        now = await scrape(worker)
        return now.value("sandbox_browser_crashes_total") == 1

    assert await eventually(counted)
    now = await scrape(worker)
    crashed = now.value("sandbox_sessions_ended_total", reason="BROWSER_EXITED")
    failed = now.value("sandbox_sessions_ended_total", reason="START_FAILED")
    assert crashed + failed == 1


async def test_proxy_traffic_is_counted_by_upstream_while_and_after_it_runs(
    worker: RunningWorker, origin: Origin, tinyproxy: Proxy
) -> None:
    routing = pb.ProxyConfiguration(
        proxies=[pb.Proxy(external_proxy=pb.ExternalProxy(server="127.0.0.1", port=tinyproxy.port))]
    )
    upstream = f"127.0.0.1:{tinyproxy.port}"
    started = await worker.start(proxy_configuration=routing)
    async with connected_page(started) as page:
        response = await page.goto(origin.url("web.example.test", unique_path()))
        assert response is not None and response.status == 200
        during = await scrape(worker)
    assert during.value("sandbox_proxy_requests_total", upstream=upstream) >= 1
    assert during.value("sandbox_proxy_received_bytes_total", upstream=upstream) > 0
    await worker.stop(started.session_id)
    after = await scrape(worker)
    assert after.value("sandbox_proxy_requests_total", upstream=upstream) >= during.value(
        "sandbox_proxy_requests_total", upstream=upstream
    )
