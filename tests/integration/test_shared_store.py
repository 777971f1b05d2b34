"""Workers sharing a PostgreSQL store (a real cluster the tests start):
browsers and profiles made through one worker are used through another,
each worker heartbeats and copies its session records, the schema migrates
once however many processes start at once, and a store restart costs the
running sessions nothing."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hashlib
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from helpers.postgres import Postgres, postgres
from helpers.references import holders
from helpers.waits import eventually
from helpers.workers import (
    RunningWorker,
    connected_page,
    make_config,
    running_worker,
    session_processes,
    worker_processes,
)
from worker.pb import sandbox_pb2 as pb
from worker.sessions.model import READY, SessionRecord, Viewport
from worker.sessions.postgres_store import PostgresStore
from worker.sessions.session import Session

pytestmark = pytest.mark.integration

PASSWORD = "pg-secret-never-shown"  # trust auth accepts it; nothing may echo it


@pytest.fixture
def pg() -> Iterator[Postgres]:
    with postgres() as server:
        yield server


def store_url(pg: Postgres) -> str:
    return pg.url.replace("postgres@", f"postgres:{PASSWORD}@")


def rows(pg: Postgres, query: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg.url, autocommit=True) as conn:
        return conn.execute(query, args).fetchall()


@contextlib.asynccontextmanager
async def fleet_worker(tmp_path: Path, pg: Postgres, name: str) -> AsyncIterator[RunningWorker]:
    key = tmp_path / "profile.key"
    if not key.exists():
        key.write_bytes(bytes(range(32)))
    config = make_config(
        tmp_path / name,
        store_url=store_url(pg),
        profile_key_file=key,
        heartbeat_interval_s=0.5,
        default_flavour="headless-shell",
    )
    async with running_worker(config) as worker:
        yield worker


async def test_a_browser_and_a_profile_made_through_one_worker_are_used_through_another(
    tmp_path: Path, pg: Postgres, web: str
) -> None:
    async with fleet_worker(tmp_path, pg, "a") as a, fleet_worker(tmp_path, pg, "b") as b:
        created = await a.browsers.CreateBrowser(pb.CreateBrowserRequest(name="shared"))
        seen = await b.browsers.GetBrowser(pb.GetBrowserRequest(browser_id=created.browser_id))
        listed = await b.browsers.ListBrowsers(pb.ListBrowsersRequest(type=pb.CUSTOM))
        with pytest.raises(grpc.aio.AioRpcError) as taken:
            await b.browsers.CreateBrowser(pb.CreateBrowserRequest(name="shared"))
        profile = await a.profiles.CreateBrowserProfile(
            pb.CreateBrowserProfileRequest(name="shared_login")
        )
        first = await a.start(browser_identifier=created.browser_id)
        async with connected_page(first) as page:
            await page.goto(f"{web}/index.html")
            await page.evaluate("localStorage.setItem('who', 'ada')")
            await a.sessions.SaveBrowserSessionProfile(
                pb.SaveBrowserSessionProfileRequest(
                    profile_identifier=profile.profile_id,
                    browser_identifier=created.browser_id,
                    session_id=first.session_id,
                )
            )
        await a.stop(first.session_id, created.browser_id)
        second = await b.start(
            browser_identifier=created.browser_id,
            profile_configuration=pb.ProfileConfiguration(profile_identifier=profile.profile_id),
        )
        async with connected_page(second) as page:
            await page.goto(f"{web}/index.html")
            restored = await page.evaluate("localStorage.getItem('who')")
        await b.stop(second.session_id, created.browser_id)
    assert seen.name == "shared" and [x.browser_id for x in listed.browsers] == [created.browser_id]
    assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert restored == "ada"


async def test_each_worker_heartbeats_indexes_and_copies_its_sessions_and_never_shows_the_password(
    tmp_path: Path, pg: Postgres
) -> None:
    async with fleet_worker(tmp_path, pg, "a") as a, fleet_worker(tmp_path, pg, "b") as b:
        ids = {a.server.worker_id: a, b.server.worker_id: b}
        started = await a.start()
        # In the index before the Start answered: any gateway can route it.
        indexed = rows(
            pg,
            "SELECT worker_id, status, token_sha256 FROM sessions WHERE session_id = %s",
            started.session_id,
        )
        copied = await eventually(
            lambda: rows(
                pg,
                "SELECT worker_id, status FROM sessions WHERE session_id = %s"
                " AND body ? 'session_id'",
                started.session_id,
            ),
            timeout=10,
        )
        beats = {r[0]: r[1] for r in rows(pg, "SELECT worker_id, body FROM workers")}
        await a.stop(started.session_id)
        ended = await eventually(
            lambda: rows(
                pg,
                "SELECT status, body->>'termination_reason' FROM sessions"
                " WHERE session_id = %s AND status = 'TERMINATED'",
                started.session_id,
            ),
            timeout=10,
        )
        status = await a.worker.GetWorkerStatus(pb.GetWorkerStatusRequest())
    token = started.streams.automation_stream.token
    assert indexed == [(a.server.worker_id, "READY", hashlib.sha256(token.encode()).hexdigest())]
    assert copied == [(a.server.worker_id, "READY")]
    assert ended == [("TERMINATED", "STOPPED")]
    assert set(beats) == set(ids)
    for worker_id, body in beats.items():
        worker = ids[worker_id]
        assert body["grpc"] == f"127.0.0.1:{worker.server.grpc_port}"
        assert body["automation"].endswith(f":{worker.server.automation_port}")
        assert body["capacity"] == 3 and body["draining"] is False
    # Stopped workers said so last.
    last = {r[0]: r[1] for r in rows(pg, "SELECT worker_id, body FROM workers")}
    assert all(body["stopped"] and body["draining"] for body in last.values())
    everything = repr(rows(pg, "SELECT body FROM sessions")) + repr(last) + str(status)
    assert PASSWORD not in everything and token not in everything


def other_browsers(worker: RunningWorker, running: Any) -> list[int]:
    """Browser processes of the worker's other than the running session's."""
    state_dir = worker.server.config.state_dir
    mine = set(session_processes(state_dir, running.session_id))
    return [pid for pid in worker_processes(state_dir) if pid not in mine]


def test_the_schema_migrates_once_when_many_processes_start_at_once(pg: Postgres) -> None:
    script = (
        "import asyncio, sys\n"
        "from worker.sessions.postgres_store import PostgresStore\n"
        "async def main():\n"
        "    store = await PostgresStore.open(sys.argv[1], 20)\n"
        "    await store.close()\n"
        "asyncio.run(main())\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script, pg.url], stderr=subprocess.PIPE)
        for _ in range(6)
    ]
    errors = [p.communicate(timeout=60)[1].decode() for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, errors
    versions = [v for (v,) in rows(pg, "SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == [1, 2, 3]  # each step once


async def test_a_silent_worker_is_forgotten_only_once_none_of_its_sessions_is_unfinished(
    pg: Postgres,
) -> None:
    store = await PostgresStore.open(pg.url, 10)
    try:
        await store.heartbeat("wSilent", {"capacity": 1})
        record = SessionRecord(
            "S1", "aws.browser.v1", "s", "chromium", 900, Viewport(1280, 720), 0.0, 0.0, READY
        )
        await store.put_sessions("wSilent", [record])
        with psycopg.connect(pg.url, autocommit=True) as conn:
            conn.execute("UPDATE workers SET heartbeat_at = now() - interval '1 hour'")
        kept = await store.forget(retention_s=60, worker_after_s=60)
        # Until a gateway ends its session WORKER_LOST, the row is what says where it ran.
        lost = await store.mark_lost("wSilent", time.time())
        gone = await store.forget(retention_s=60, worker_after_s=60)
    finally:
        await store.close()
    assert kept.workers == 0 and lost == ["S1"]
    assert gone.workers == 1 and rows(pg, "SELECT worker_id FROM workers") == []
    # The ended session stays for the retention: it ended just now.
    assert gone.sessions == 0 and rows(pg, "SELECT session_id FROM sessions") == [("S1",)]


async def test_a_store_restart_costs_running_sessions_nothing_and_the_worker_reconnects(
    tmp_path: Path, pg: Postgres, web: str
) -> None:
    async with fleet_worker(tmp_path, pg, "a") as worker:
        started = await worker.start()
        async with connected_page(started) as page:
            await page.goto(f"{web}/index.html")
            await asyncio.to_thread(pg.stop)
            try:
                with pytest.raises(grpc.aio.AioRpcError) as down:
                    await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="during"))
                # A Start the fleet could not be told of is refused, and
                # its browser ended, not left running unreachable; with the
                # cycle collector off, the session object is freed too.
                gc.disable()
                try:
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await worker.start()
                    assert set(worker.server.manager.live) == {started.session_id}
                    others = await eventually(
                        lambda: not other_browsers(worker, started), timeout=10
                    )
                    try:
                        freed = await eventually(lambda: len(_sessions_alive()) == 1, timeout=10)
                    except AssertionError:
                        [left] = [
                            s
                            for s in _sessions_alive()
                            if s.record.session_id != started.session_id
                        ]
                        raise AssertionError("\n".join(holders(left))) from None
                finally:
                    gc.enable()
                # The session is untouched: its page still answers.
                assert await page.evaluate("1 + 1") == 2
            finally:
                await asyncio.to_thread(pg.start)

            async def created() -> Any:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    return await worker.browsers.CreateBrowser(
                        pb.CreateBrowserRequest(name="after")
                    )
                return None

            back = await eventually(created, timeout=30)
            assert await page.evaluate("2 + 2") == 4
        await worker.stop(started.session_id)
        stopped = await eventually(
            lambda: rows(
                pg,
                "SELECT 1 FROM sessions WHERE session_id = %s AND status = 'TERMINATED'",
                started.session_id,
            ),
            timeout=15,
        )
    for error in (down.value, refused.value):
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        details = error.details() or ""
        assert f"the store at 127.0.0.1:{pg.port}/postgres is unavailable" in details
        assert PASSWORD not in details
    assert others and freed
    assert back.name == "after" and stopped


def _sessions_alive() -> list[Session]:
    return [o for o in gc.get_objects() if isinstance(o, Session)]
