"""A fleet behind gateways, all real: a PostgreSQL the tests start, workers
sharing it, two gateways in front. Stock boto3 and Playwright drive it
through either gateway; Starts spread and a full fleet says so; a
clientToken is one session fleet-wide; List pages across workers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest
from botocore.exceptions import ClientError
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from helpers.daemon import daemon
from helpers.fleet import (
    LOST_AFTER_S,
    RunningGateway,
    daemon_env,
    fleet_worker,
    gateway_process,
    owner_of,
    running_gateway,
)
from helpers.handshakes import handshake_status
from helpers.hosted import KEY_ID, SECRET, client, first_page
from helpers.postgres import Postgres, postgres
from helpers.scrapes import Scrape, scrape_port
from helpers.upstreams import SecretsManager
from helpers.waits import eventually
from helpers.workers import RunningWorker, browser_root, session_processes
from worker.browser import reaper
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

BUILT_IN = "aws.browser.v1"
STORE_PASSWORD = "fleet-store-password"  # trust auth takes it; nothing may show it


@pytest.fixture
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


@contextlib.asynccontextmanager
async def fleet(
    tmp_path: Path, pg: Postgres, workers: int = 2, grpc_only: tuple[int, ...] = (), **fields: Any
) -> AsyncIterator[tuple[list[RunningWorker], list[RunningGateway]]]:
    """Workers (those numbered in grpc_only offer no fleet link: gateways
    call them over gRPC) and two gateways."""
    async with contextlib.AsyncExitStack() as stack:
        members = [
            await stack.enter_async_context(
                fleet_worker(
                    tmp_path,
                    pg,
                    f"w{n}",
                    **fields,
                    **({"link_listen": "off"} if n in grpc_only else {}),
                )
            )
            for n in range(workers)
        ]
        gateways = [
            await stack.enter_async_context(running_gateway(tmp_path, pg)) for _ in range(2)
        ]
        yield members, gateways


async def test_boto3_and_playwright_use_the_fleet_through_either_gateway(
    tmp_path: Path, pg: Postgres, web: str
) -> None:
    async with fleet(tmp_path, pg) as (workers, (g1, g2)):
        control1, data2 = client(g1, "bedrock-agentcore-control"), client(g2, "bedrock-agentcore")
        data1 = client(g1, "bedrock-agentcore")
        created = await control1.create_browser(
            name="fleet_browser", networkConfiguration={"networkMode": "PUBLIC"}
        )
        browser_id = created["browserId"]
        started = await data2.start_browser_session(browserIdentifier=browser_id)
        session_id = started["sessionId"]
        endpoint = started["streams"]["automationStream"]["streamEndpoint"]
        async with first_page(started) as page:
            await page.goto(f"{web}/index.html")
            title = await page.title()
            seen = await data1.get_browser_session(
                browserIdentifier=browser_id, sessionId=session_id
            )
        live_view = started["streams"]["liveViewStream"]["streamEndpoint"]
        page_html = await asyncio.to_thread(
            lambda: urllib.request.urlopen(live_view, timeout=10).read().decode()
        )
        listed = await data1.list_browser_sessions(browserIdentifier=browser_id)
        await g2.server.stop()  # a gateway goes: the other serves everything
        await data1.stop_browser_session(browserIdentifier=browser_id, sessionId=session_id)
        ended = await eventually(
            lambda: _status(data1, browser_id, session_id, "TERMINATED"), timeout=10
        )
        owners = {owner_of(pg, session_id)}
    assert endpoint.startswith(f"ws://127.0.0.1:{g2.server.automation_port}/")
    assert title == "sandbox test page"
    assert live_view.startswith(f"http://127.0.0.1:{g2.server.automation_port}/")
    assert "<title>Live view</title>" in page_html  # its page, through the relay
    assert seen["status"] == "READY" and seen["browserIdentifier"] == browser_id
    assert [s["sessionId"] for s in listed["items"]] == [session_id]
    assert ended["status"] == "TERMINATED"
    assert owners <= {w.server.worker_id for w in workers}


async def _status(data: Any, browser_id: str, session_id: str, status: str) -> Any:
    got = await data.get_browser_session(browserIdentifier=browser_id, sessionId=session_id)
    return got if got["status"] == status else None


async def test_starts_spread_a_full_fleet_says_so_and_a_client_token_is_one_session(
    tmp_path: Path, pg: Postgres
) -> None:
    # One worker is called over the fleet link, the other over gRPC.
    async with fleet(tmp_path, pg, grpc_only=(1,)) as (workers, (g1, g2)):
        started = [await (g1 if n % 2 else g2).start() for n in range(4)]
        with pytest.raises(grpc.aio.AioRpcError) as full:
            await g1.start()
        with pytest.raises(ClientError) as quota:
            await client(g2, "bedrock-agentcore").start_browser_session(browserIdentifier=BUILT_IN)
        owners = [owner_of(pg, s.session_id) for s in started]
        await g1.stop(started[0].session_id)
        token = "fleet-token-0123456789abcdef0123456789"
        await eventually(lambda: _room(g1), timeout=10)
        twice = await asyncio.gather(g1.start(client_token=token), g2.start(client_token=token))
        for s in started[1:]:
            await g2.stop(s.session_id)
    assert sorted(owners.count(w.server.worker_id) for w in workers) == [2, 2]
    assert workers[0].server.link_port and not workers[1].server.link_port
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert full.value.details() == "capacity: all 4 sessions of the fleet's 2 workers are in use"
    assert quota.value.response["Error"]["Code"] == "ServiceQuotaExceededException"
    assert twice[0].session_id == twice[1].session_id


async def _room(gateway: RunningGateway) -> bool:
    status = await gateway.status.GetWorkerStatus(pb.GetWorkerStatusRequest())
    return bool(status.sessions_in_use < status.capacity)


async def test_list_pages_across_workers_return_each_session_once(
    tmp_path: Path, pg: Postgres
) -> None:
    async with fleet(tmp_path, pg, workers=3) as (_, (g1, g2)):
        started = {(await g1.start()).session_id for _ in range(5)}
        await eventually(lambda: _all_listed(g1, len(started)), timeout=10)
        seen: list[str] = []
        token, gateways = "", [g1, g2]
        for turn in range(10):  # pages of two, alternating gateways
            page = await gateways[turn % 2].sessions.ListBrowserSessions(
                pb.ListBrowserSessionsRequest(max_results=2, next_token=token)
            )
            seen += [s.session_id for s in page.items]
            token = page.next_token
            if not token:
                break
        with pytest.raises(grpc.aio.AioRpcError) as garbage:
            await g2.sessions.ListBrowserSessions(
                pb.ListBrowserSessionsRequest(next_token="bm90IGEgdG9rZW4.AAAA")
            )
        for session_id in started:
            await g2.stop(session_id)
    assert sorted(seen) == sorted(started) and len(seen) == 5
    assert seen == sorted(seen, reverse=True)  # newest first
    assert garbage.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (garbage.value.details() or "").startswith("next_token")


async def _all_listed(gateway: RunningGateway, count: int) -> bool:
    page = await gateway.sessions.ListBrowserSessions(
        pb.ListBrowserSessionsRequest(max_results=100)
    )
    return len(page.items) == count


async def test_a_killed_worker_s_sessions_end_worker_lost_and_the_fleet_carries_on(
    tmp_path: Path, pg: Postgres
) -> None:
    env = daemon_env(pg, max_sessions=2)
    victim_dir, other_dir = tmp_path / "victim" / "state", tmp_path / "other" / "state"
    victim_dir.parent.mkdir()
    other_dir.parent.mkdir()
    with daemon(victim_dir, env=env) as (victim, victim_info):
        async with running_gateway(tmp_path, pg) as gateway:
            started = await gateway.start()  # the only worker yet
            stream = started.streams.automation_stream
            with daemon(other_dir, env=env) as (_, other_info):
                await eventually(lambda: len(gateway.server.fleet.directory.fresh()) == 2)
                async with connect(
                    stream.stream_endpoint,
                    additional_headers={"Authorization": f"Bearer {stream.token}"},
                ) as client:
                    await client.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
                    answer = json.loads(await client.recv())
                    os.killpg(victim.pid, signal.SIGKILL)
                    killed_at = time.monotonic()
                    with pytest.raises(ConnectionClosed) as closed:
                        await asyncio.wait_for(client.recv(), 10)
                lost = await eventually(
                    lambda: _ended(gateway, started.session_id), timeout=LOST_AFTER_S + 16
                )
                lost_after = time.monotonic() - killed_at
                replacement = await gateway.start()
                replaced_by = owner_of(pg, replacement.session_id)
                await gateway.stop(replacement.session_id)
    # The killed worker left its session's files (its browser died with the
    # CDP pipe); its restart removes them and leaves no process of it.
    left = browser_root(victim_dir, started.session_id)
    left_before = left.exists()
    with daemon(victim_dir, env=env):
        await eventually(lambda: not left.exists(), timeout=15)
        assert not session_processes(victim_dir, started.session_id)
    assert answer["id"] == 1 and "product" in answer["result"]
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
    assert "worker" in closed.value.rcvd.reason
    assert lost.termination_reason == pb.WORKER_LOST and lost_after < 20
    assert replaced_by == other_info["worker_id"] != victim_info["worker_id"]
    assert left_before  # so the clean-up above was seen, not assumed


async def test_a_gateway_s_metrics_show_the_fleet_its_relay_and_a_worker_that_went(
    tmp_path: Path, pg: Postgres
) -> None:
    env = daemon_env(pg, max_sessions=3)  # more room than the other: Starts go here first
    victim_dir = tmp_path / "victim" / "state"
    victim_dir.parent.mkdir()
    with daemon(victim_dir, env=env) as (victim, victim_info):
        async with (
            fleet_worker(tmp_path, pg, "w0", max_sessions=1),
            running_gateway(tmp_path, pg, metrics_listen="127.0.0.1:0") as gateway,
        ):
            port = gateway.server.metrics_port
            await eventually(lambda: len(gateway.server.fleet.directory.fresh()) == 2)
            whole = await scrape_port(port)
            started = await gateway.start()
            stream = started.streams.automation_stream
            async with connect(
                stream.stream_endpoint,
                additional_headers={"Authorization": f"Bearer {stream.token}"},
            ) as client:
                await client.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
                await client.recv()
                # Use is as each worker last reported: a heartbeat away.
                relaying = await eventually(
                    lambda: _scrape_showing(port, "sandbox_fleet_sessions_in_use")
                )
                os.killpg(victim.pid, signal.SIGKILL)
                # Still fresh in the directory: the Start tries it, finds
                # no one there, and goes to the other worker.
                replacement = await gateway.start()
                with pytest.raises(ConnectionClosed):
                    await asyncio.wait_for(client.recv(), 10)

            after = await eventually(
                lambda: _scrape_showing(port, "sandbox_fleet_workers_lost_total"),
                timeout=LOST_AFTER_S + 10,
            )
            await gateway.stop(replacement.session_id)
    assert owner_of(pg, started.session_id) == victim_info["worker_id"]
    assert whole.value("sandbox_fleet_store_up") == 1
    assert whole.value("sandbox_fleet_workers", state="ready") == 2
    assert whole.value("sandbox_fleet_capacity_sessions") == 4
    assert relaying.value("sandbox_fleet_relayed_streams") == 1
    assert relaying.value("sandbox_fleet_sessions_in_use") == 1
    forwarded = lambda code: after.value(  # noqa: E731
        "sandbox_fleet_forwarded_calls_total", method="StartBrowserSession", code=code
    )
    assert (forwarded("OK"), forwarded("UNREACHABLE")) == (2, 1)
    assert after.value("sandbox_fleet_sessions_lost_total") == 1
    assert after.value("sandbox_fleet_workers", state="silent") == 1
    assert after.value("sandbox_fleet_relayed_streams") == 0
    assert "sandbox_sessions_started_total" not in after.names()  # a worker's, not here


async def test_a_gateway_forgets_ended_sessions_their_tokens_and_workers_gone_for_good(
    tmp_path: Path, pg: Postgres
) -> None:
    retention = {"session_retention_s": 1.0, "session_purge_interval_s": 0.5}
    token = lambda n: f"forget-{n:032d}"  # noqa: E731
    async with (
        fleet_worker(tmp_path, pg, "w0", **retention) as stays,
        running_gateway(tmp_path, pg, worker_forget_after_s=LOST_AFTER_S, **retention) as gateway,
    ):
        directory, forward = gateway.server.fleet.directory, gateway.server.fleet.forward
        async with fleet_worker(tmp_path, pg, "w1", **retention) as goes:
            await eventually(lambda: len(directory.fresh()) == 2)
            # The second Start goes to the other worker (more room, or its turn).
            ended = [await gateway.start(client_token=token(n)) for n in range(2)]
            for session in ended:
                await gateway.stop(session.session_id)
            owners = {owner_of(pg, s.session_id) for s in ended}
            gone = goes.server.worker_id, f"127.0.0.1:{goes.server.link_port}"
            known_before = gone[0] in directory.placed and gone[1] in forward.addresses
        await eventually(lambda: gone[0] not in {w.worker_id for w in directory.fresh()})
        running = await gateway.start(client_token=token(2))
        left = await eventually(
            lambda: _store_rows_when(pg, [stays.server.worker_id], [running.session_id]),
            timeout=LOST_AFTER_S + 15,
        )
        with pytest.raises(grpc.aio.AioRpcError) as purged:
            await gateway.get(ended[0].session_id)
        # What the gateway kept about the gone worker goes at its next read.
        await eventually(
            lambda: (
                gone[0] not in {*directory.placed, *directory.pending}
                and gone[1] not in forward.addresses
            )
        )
        await gateway.stop(running.session_id)
    assert owners == {stays.server.worker_id, gone[0]} and known_before
    assert purged.value.code() == grpc.StatusCode.NOT_FOUND
    # The running session's token stays; the ended ones' go.
    assert left["claims"] == [token(2)]


def _store_rows_when(
    pg: Postgres, workers: list[str], sessions: list[str]
) -> dict[str, list[str]] | None:
    left = _store_rows(pg)
    return left if (left["workers"], left["sessions"]) == (workers, sessions) else None


def _store_rows(pg: Postgres) -> dict[str, list[str]]:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        return {
            table: sorted(str(r[0]) for r in conn.execute(query).fetchall())
            for table, query in (
                ("workers", "SELECT worker_id FROM workers"),
                ("sessions", "SELECT session_id FROM sessions"),
                ("claims", "SELECT client_token FROM start_claims"),
            )
        }


async def _scrape_showing(port: int, name: str, value: float | None = None) -> Scrape | None:
    """A scrape in which `name` is `value` (or, without one, not 0)."""
    seen = await scrape_port(port)
    shown = seen.value(name)
    return seen if (shown == value if value is not None else shown) else None


def _probe(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as refused:
        return refused.code


async def _ended(gateway: RunningGateway, session_id: str) -> Any:
    got = await gateway.get(session_id)
    return got if got.status == pb.TERMINATED else None


async def test_a_store_restart_fails_starts_clearly_and_the_gateway_recovers_by_itself(
    tmp_path: Path, pg: Postgres, capfd: pytest.CaptureFixture[str]
) -> None:
    secret_url = pg.url.replace("postgres@", f"postgres:{STORE_PASSWORD}@")
    async with (
        fleet_worker(tmp_path, pg, "w0", store_url=secret_url),
        running_gateway(
            tmp_path, pg, store_url=secret_url, metrics_listen="127.0.0.1:0"
        ) as gateway,
    ):
        running = await gateway.start()
        await asyncio.to_thread(pg.stop)
        try:
            with pytest.raises(grpc.aio.AioRpcError) as down:
                await gateway.start()
            port = gateway.server.metrics_port
            await eventually(lambda: _scrape_showing(port, "sandbox_fleet_store_up", 0), timeout=15)
            unready = await asyncio.to_thread(_probe, port, "/readyz")
        finally:
            await asyncio.to_thread(pg.start)

        async def started() -> Any:
            with contextlib.suppress(grpc.aio.AioRpcError):
                return await gateway.start()
            return None

        after = await eventually(started, timeout=30)
        recovered = await eventually(lambda: _scrape_showing(port, "sandbox_fleet_store_up", 1))
        still = await gateway.get(running.session_id)
        for session_id in (running.session_id, after.session_id):
            await gateway.stop(session_id)
    assert down.value.code() == grpc.StatusCode.UNAVAILABLE
    assert f"127.0.0.1:{pg.port}" in (down.value.details() or "")
    assert unready == 503  # a gateway without its store takes no traffic
    assert recovered.value("sandbox_fleet_store_up") == 1
    assert still.status == pb.READY  # the running session never noticed
    out, err = capfd.readouterr()
    assert STORE_PASSWORD not in out + err + str(down.value.details())


def test_the_load_generator_runs_its_recorded_scenario_through_a_gateway(
    tmp_path: Path, pg: Postgres, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    env = {**daemon_env(pg, max_sessions=2), "SANDBOX_RECORDING_STORAGE": "s3"}
    with contextlib.ExitStack() as stack:
        for n in range(2):
            (tmp_path / f"w{n}").mkdir()
            stack.enter_context(daemon(tmp_path / f"w{n}" / "state", env=env))
        gateway = stack.enter_context(gateway_process(tmp_path, {**env}))
        argv = [
            sys.executable, "-m", "worker.cli", "loadtest",
            "--target", gateway["grpc"], "--concurrency", "5", "--sessions", "0",
            "--duration", "20", "--record", bucket, "--json", "--quiet",
        ]  # fmt: skip
        out = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert out.returncode in (0, 1), out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["succeeded"] >= 4
    assert set(result["failures"]) <= {"RESOURCE_EXHAUSTED"}, result["failures"]
    recorded = {key.split("/")[1] for key in moto.objects(bucket, "loadtest/")}
    assert len(recorded) >= result["succeeded"] - 2  # the last may still be flushing


def test_one_command_runs_a_local_fleet_and_ctrl_c_leaves_nothing() -> None:
    argv = [
        sys.executable, "-m", "worker.cli", "fleet", "--workers", "2",
        "--grpc-listen", "127.0.0.1:0", "--automation-listen", "127.0.0.1:0",
        "--http-api-listen", "127.0.0.1:0", "--metrics-listen", "",
    ]  # fmt: skip
    env = {**os.environ, "SANDBOX_DEFAULT_FLAVOUR": "headless-shell"}
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            info = json.loads(process.stdout.readline())
            with grpc.insecure_channel(info["grpc"]) as channel:
                status = pb_grpc.WorkerStub(channel).GetWorkerStatus(pb.GetWorkerStatusRequest())
                sessions = pb_grpc.BrowserSessionsStub(channel)
                started = sessions.StartBrowserSession(pb.StartBrowserSessionRequest(), timeout=60)
            os.killpg(process.pid, signal.SIGINT)
            code = process.wait(120)
            errors = process.stderr.read().decode()[-2000:]
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(10)
    assert info["workers"] == 2 and status.capacity > 0
    assert started.status == pb.READY
    assert code == 0, errors
    assert not Path(info["directory"]).exists()
    assert not reaper.pids_referencing(Path(info["directory"]))


async def test_direct_endpoints_name_the_worker_and_a_browser_in_use_is_not_deleted(
    tmp_path: Path, pg: Postgres
) -> None:
    async with (
        fleet_worker(tmp_path, pg, "w0") as worker,
        running_gateway(tmp_path, pg, gateway_direct_endpoints=True) as gateway,
    ):
        created = await gateway.browsers.CreateBrowser(pb.CreateBrowserRequest(name="in_use"))
        started = await gateway.start(browser_identifier=created.browser_id)
        stream = started.streams.automation_stream
        async with connect(
            stream.stream_endpoint, additional_headers={"Authorization": f"Bearer {stream.token}"}
        ) as client:
            await client.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
            answer = json.loads(await client.recv())
        with pytest.raises(grpc.aio.AioRpcError) as in_use:
            await gateway.browsers.DeleteBrowser(
                pb.DeleteBrowserRequest(browser_id=created.browser_id)
            )
        await gateway.stop(started.session_id, created.browser_id)
        deleted = await eventually(lambda: _deleted(gateway, created.browser_id), timeout=10)
    assert stream.stream_endpoint.startswith(f"ws://127.0.0.1:{worker.server.automation_port}/")
    assert "product" in answer["result"]
    assert in_use.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (in_use.value.details() or "").startswith("browser_id: 1 session(s) of this browser")
    assert deleted.browser_id == created.browser_id


async def _deleted(gateway: RunningGateway, browser_id: str) -> Any:
    with contextlib.suppress(grpc.aio.AioRpcError):
        return await gateway.browsers.DeleteBrowser(pb.DeleteBrowserRequest(browser_id=browser_id))
    return None


async def test_the_gateway_refuses_a_wrong_token_before_any_worker_sees_it(
    tmp_path: Path, pg: Postgres
) -> None:
    async with (
        fleet_worker(tmp_path, pg, "w0") as worker,
        running_gateway(tmp_path, pg) as gateway,
    ):
        started = await gateway.start()
        stream = started.streams.automation_stream
        refusals = []
        for token in ("", "not-the-token", stream.token[:-1] + "x"):
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            with pytest.raises(InvalidStatus) as refused:
                async with connect(stream.stream_endpoint, additional_headers=headers):
                    pass
            refusals.append(refused.value.response.status_code)
        # Ids no session can have reach no query of the store (a NUL byte
        # in one was an error of psycopg's, and a dropped connection).
        port, path = gateway.server.automation_port, f"/browser-streams/{BUILT_IN}/sessions/"
        not_ids = [
            await handshake_status(port, f"{path}{bad}/automation".encode("latin-1"))
            for bad in ("a\x00b", "x" * 5000, "ünï")
        ]
        signed = sign_handshake(stream.stream_endpoint)
        async with connect(stream.stream_endpoint, additional_headers=signed) as client:
            await client.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
            answer = json.loads(await client.recv())
        seen = await asyncio.to_thread(  # a scrape reads state on the loop: not from it
            worker.server.metrics.registry.get_sample_value,
            "sandbox_automation_refused_total",
            {"reason": "unauthorized"},
        )
        await gateway.stop(started.session_id)
    assert refusals == [401, 401, 401]
    assert not_ids == [b"HTTP/1.1 404 Not Found"] * 3
    assert seen in (None, 0.0)  # the worker never saw them
    assert "product" in answer["result"]  # a SigV4 signature over the gateway's URL


async def test_a_bad_client_token_is_refused_by_the_gateway_before_it_claims_anything(
    tmp_path: Path, pg: Postgres
) -> None:
    async with (
        fleet_worker(tmp_path, pg, "w0"),
        running_gateway(tmp_path, pg) as gateway,
    ):
        details = []
        for token in ("too-short", "x" * 40 + "\x00", "ü" * 40):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await gateway.start(client_token=token)
            details.append((refused.value.code(), refused.value.details()))
    reason = "client_token: must be 33-256 letters, digits and '-'"
    assert details == [(grpc.StatusCode.INVALID_ARGUMENT, reason)] * 3
    with psycopg.connect(pg.url, autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM start_claims").fetchone() == (0,)


def sign_handshake(endpoint: str) -> dict[str, str]:
    """SigV4 headers for a websocket URL, as the hosted SDK makes them."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    host = endpoint.split("/")[2]
    request = AWSRequest("GET", endpoint.replace("ws://", "https://", 1), headers={"host": host})
    SigV4Auth(Credentials(KEY_ID, SECRET), "bedrock-agentcore", "us-east-1").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}
