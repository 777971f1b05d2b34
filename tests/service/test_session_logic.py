"""The manager's and servicers' rules, with the fake browser: capacity,
client tokens, timeouts, listing, drain, the warm pool and browsers that
die. The same rules are tested with real Chromium in tests/integration;
here they run in seconds."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time
import weakref
from pathlib import Path

import grpc
import pytest
from service.conftest import fake_config

from helpers.waits import eventually
from helpers.workers import RunningWorker, running_worker
from worker.errors import WorkerError
from worker.pb import sandbox_pb2 as pb
from worker.sessions import session as session_module


async def refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value


async def terminated(worker: RunningWorker, session_id: str) -> pb.BrowserSession:
    async def ended() -> pb.BrowserSession | None:
        got = await worker.get(session_id)
        return got if got.status == pb.TERMINATED else None

    return await eventually(ended)


async def test_a_full_worker_refuses_starts_until_a_session_ends(worker: RunningWorker) -> None:
    started = [await worker.start() for _ in range(3)]
    error = await refused(worker.start())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert (error.details() or "").startswith("capacity: all 3 sessions")
    await worker.stop(started[0].session_id)
    again = await worker.start()
    status = await worker.worker.GetWorkerStatus(pb.GetWorkerStatusRequest())
    assert again.status == pb.READY and status.sessions_in_use == 3


async def test_concurrent_starts_stop_at_capacity(worker: RunningWorker) -> None:
    results = await asyncio.gather(*(worker.start() for _ in range(6)), return_exceptions=True)
    ok = [r for r in results if not isinstance(r, BaseException)]
    codes = {r.code() for r in results if isinstance(r, grpc.aio.AioRpcError)}
    assert len(ok) == 3 and codes == {grpc.StatusCode.RESOURCE_EXHAUSTED}


async def test_a_client_token_names_one_session_live_or_ended(worker: RunningWorker) -> None:
    token = "t" * 40
    first = await worker.start(name="a", client_token=token)
    again = await worker.start(name="a", client_token=token)
    assert again.session_id == first.session_id
    assert again.streams.automation_stream.token == first.streams.automation_stream.token
    error = await refused(worker.start(name="b", client_token=token))
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS
    assert (error.details() or "").startswith("client_token:")
    await worker.stop(first.session_id)
    ended = await worker.start(name="a", client_token=token)
    assert (ended.session_id, ended.status) == (first.session_id, pb.TERMINATED)
    assert not ended.streams.automation_stream.token


async def test_concurrent_starts_with_one_token_start_one_session(worker: RunningWorker) -> None:
    token = "c" * 40
    answers = await asyncio.gather(*(worker.start(client_token=token) for _ in range(3)))
    assert len({a.session_id for a in answers}) == 1
    status = await worker.worker.GetWorkerStatus(pb.GetWorkerStatusRequest())
    assert status.sessions_in_use == 1


async def test_a_session_past_its_timeout_ends_with_timeout(worker: RunningWorker) -> None:
    started = await worker.start(session_timeout_seconds=1)
    ended = await terminated(worker, started.session_id)
    assert ended.termination_reason == pb.TIMEOUT


async def test_a_browser_that_exits_ends_its_session_and_frees_its_room(
    worker: RunningWorker,
) -> None:
    started = await worker.start()
    manager = worker.server.manager
    assert manager is not None
    session = manager.live[started.session_id]
    await eventually(lambda: session.ready is not None and session.ready.done())  # booted
    os.kill(session.record.pid, signal.SIGKILL)
    ended = await terminated(worker, started.session_id)
    assert ended.termination_reason == pb.BROWSER_EXITED
    assert manager.in_use == 0


async def test_listing_is_newest_first_paged_and_filtered(worker: RunningWorker) -> None:
    ids = [(await worker.start()).session_id for _ in range(3)]
    await worker.stop(ids[0])
    seen, token = [], ""
    for _ in range(4):
        page = await worker.sessions.ListBrowserSessions(
            pb.ListBrowserSessionsRequest(max_results=2, next_token=token)
        )
        seen += [s.session_id for s in page.items]
        token = page.next_token
        if not token:
            break
    assert seen == ids[::-1]
    ready = await worker.sessions.ListBrowserSessions(
        pb.ListBrowserSessionsRequest(status=pb.READY)
    )
    assert {s.session_id for s in ready.items} == set(ids[1:])


async def test_a_stream_update_for_an_ended_session_is_refused(worker: RunningWorker) -> None:
    started = await worker.start()
    await worker.stop(started.session_id)
    update = pb.UpdateBrowserStreamRequest(
        session_id=started.session_id,
        stream_update=pb.StreamUpdate(
            automation_stream_update=pb.AutomationStreamUpdate(stream_status=pb.DISABLED)
        ),
    )
    error = await refused(worker.sessions.UpdateBrowserStream(update))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert (error.details() or "").startswith("session_id:")


async def test_a_browser_with_running_sessions_cannot_be_deleted(worker: RunningWorker) -> None:
    created = await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="busy"))
    started = await worker.start(browser_identifier=created.browser_id)
    error = await refused(
        worker.browsers.DeleteBrowser(pb.DeleteBrowserRequest(browser_id=created.browser_id))
    )
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    await worker.stop(started.session_id, created.browser_id)
    deleted = await worker.browsers.DeleteBrowser(
        pb.DeleteBrowserRequest(browser_id=created.browser_id)
    )
    assert deleted.status == pb.BROWSER_DELETED


async def test_drain_refuses_starts_and_ends_the_rest_with_worker_shutdown(
    worker: RunningWorker,
) -> None:
    started = await worker.start()
    manager = worker.server.manager
    assert manager is not None
    stopping = asyncio.ensure_future(worker.server.stop(drain_timeout=0.5))
    await eventually(lambda: manager.draining)
    error = await refused(worker.start())
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    session = manager.live[started.session_id]
    await asyncio.wait_for(stopping, 10)
    assert session.record.termination_reason == "WORKER_SHUTDOWN"


async def test_a_warm_start_claims_a_pooled_browser_and_the_pool_refills(
    tmp_path: Path, fake_binary: Path
) -> None:
    config = fake_config(tmp_path, fake_binary, warm_pool=("headless-shell=1",))
    async with running_worker(config) as worker:
        manager = worker.server.manager
        assert manager is not None
        await eventually(lambda: manager.pool.idle["headless-shell"])
        pooled = manager.pool.idle["headless-shell"][0]
        shell = await worker.browsers.CreateBrowser(
            pb.CreateBrowserRequest(name="shell", flavour=pb.HEADLESS_SHELL)
        )
        started = await worker.start(browser_identifier=shell.browser_id)
        assert started.session_id == pooled.session_id
        assert manager.metrics.sessions_started.labels("headless-shell", "warm")._value.get() == 1
        await eventually(
            lambda: [s for s in manager.pool.idle["headless-shell"] if s is not pooled]
        )


async def test_shutdown_waits_for_the_sweep_of_sessions_stopped_before_it(
    tmp_path: Path, fake_binary: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Stop answers before the session's directories are gone; a worker
    stopped right after must still see them removed, not exit mid-sweep
    (as a starved machine showed)."""
    real_sweep = session_module.sweep

    def slow_sweep(*args: object) -> None:
        time.sleep(1.0)  # a starved machine's sweep
        real_sweep(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(session_module, "sweep", slow_sweep)
    config = fake_config(tmp_path, fake_binary)
    async with running_worker(config) as worker:
        started = await worker.start()
        await worker.stop(started.session_id)
        await worker.server.stop(drain_timeout=0.1)
        runtime = worker.config.session_tmp_root
        assert not list(worker.config.sessions_dir.iterdir())
        assert not (runtime / started.session_id).exists()


async def test_an_ended_warm_session_is_freed_without_the_cycle_collector(
    tmp_path: Path, fake_binary: Path
) -> None:
    """A claimed pooled browser's session, once ended, is freed by reference
    counting like a cold one: nothing it told of its end keeps it."""
    config = fake_config(tmp_path, fake_binary, warm_pool=("chromium=1",))
    async with running_worker(config) as worker:
        manager = worker.server.manager
        assert manager is not None
        await eventually(lambda: manager.pool.idle["chromium"])
        gc.collect()
        gc.disable()
        try:
            started = await worker.start()
            session = weakref.ref(manager.live[started.session_id])
            await worker.stop(started.session_id)
            await eventually(lambda: session() is None)
        finally:
            gc.enable()


async def test_a_refusal_is_answered_and_dropped_without_the_cycle_collector(
    worker: RunningWorker,
) -> None:
    """A refused call's error, and the frames of the call in its traceback
    (a failed Start's session among them, in a fleet), is freed once the
    refusal is sent, not kept by gRPC's abort until a collection."""
    gc.collect()
    gc.disable()
    try:
        error = await refused(worker.get("01ABSENTSESSION0000000000"))
        left = await eventually(
            lambda: not [o for o in gc.get_objects() if isinstance(o, WorkerError)]
        )
    finally:
        gc.enable()
    assert error.code() == grpc.StatusCode.NOT_FOUND and left
