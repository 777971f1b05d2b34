"""The automation endpoint under malformed and abusive traffic, end to end.

Each abusive client shares its session with a Playwright client, and a second
session runs beside them. The abuser is closed (with the websocket code that
says why) or answered with a CDP error; the Playwright client, the session
and the other session carry on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from helpers.faults import report_fault
from helpers.workers import RunningWorker, connected_page, make_config, running_worker
from worker.pb import sandbox_pb2 as pb

LIMIT = 1024 * 1024  # max_client_message_bytes for these tests


@pytest_asyncio.fixture
async def worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    config = make_config(tmp_path, max_client_message_bytes=LIMIT, client_queue_limit=100)
    async with running_worker(config) as running:
        yield running


@pytest_asyncio.fixture
async def sessions(worker: RunningWorker) -> AsyncIterator[tuple[Any, Any]]:
    yield await worker.start(), await worker.start()


def open_client(started: Any) -> Any:
    stream = started.streams.automation_stream
    return connect(
        stream.stream_endpoint,
        additional_headers={"Authorization": f"Bearer {stream.token}"},
        max_size=None,
    )


async def closed_with(ws: ClientConnection) -> int | None:
    """The close code the server sent (waiting at most 10 s)."""
    async with asyncio.timeout(10):
        try:
            while True:
                await ws.recv()
        except ConnectionClosed:
            pass
    received = ws.protocol.close_rcvd
    assert received is not None, "closed without a close frame"
    return received.code


async def replies(ws: ClientConnection, count: int, timeout: float = 20) -> list[dict[str, Any]]:
    got: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while len(got) < count:
            message = json.loads(await ws.recv())
            if "id" in message:
                got.append(message)
    return got


async def still_fine(worker: RunningWorker, page: Any, sessions: tuple[Any, Any]) -> None:
    """The bystanders: the same session's Playwright page, both sessions."""
    assert await page.evaluate("() => 6 * 7") == 42
    for started in sessions:
        assert (await worker.get(started.session_id)).status == pb.READY
    async with open_client(sessions[1]) as other:
        await other.send(json.dumps({"id": 1, "method": "Browser.getVersion"}))
        assert "product" in (await replies(other, 1))[0]["result"]


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("{not json", 1007),
        (b"\xff\xfe\x00binary", 1007),  # a binary frame that is not UTF-8 JSON
        ('["an", "array"]', 1007),
        ('{"id": "seven", "method": "Runtime.evaluate"}', 1007),
        ('{"id": 1, "method": 12}', 1007),
        ("x" * (LIMIT + 1), 1009),  # over max_client_message_bytes
    ],
    ids=["invalid-json", "binary", "array", "string-id", "numeric-method", "oversize"],
)
async def test_malformed_frames_close_only_that_client(
    worker: RunningWorker, sessions: tuple[Any, Any], frame: str | bytes, code: int
) -> None:
    async with connected_page(sessions[0]) as page:
        async with open_client(sessions[0]) as abuser:
            await abuser.send(frame)
            assert await closed_with(abuser) == code
        await still_fine(worker, page, sessions)
    if isinstance(frame, bytes):
        kind = f"binary, {len(frame)} bytes"
    else:
        kind = repr(frame[:20]) if len(frame) < 60 else f"text, {len(frame)} bytes"
    report_fault(
        f"malformed automation frame ({kind})",
        f"that client closed with {code}",
        "same session's Playwright client and the other session kept",
        "n/a",
    )


async def test_unknown_methods_and_foreign_sessions_get_cdp_errors_and_the_client_stays(
    worker: RunningWorker, sessions: tuple[Any, Any]
) -> None:
    async with connected_page(sessions[0]) as page, open_client(sessions[0]) as client:
        await client.send(json.dumps({"id": 1, "method": "No.suchMethod"}))
        await client.send(json.dumps({"id": 2, "method": "Runtime.evaluate", "sessionId": "X"}))
        await client.send(json.dumps({"id": 3, "method": "Browser.crash"}))
        await client.send(json.dumps({"id": 4, "method": "Browser.getVersion"}))
        got = {r["id"]: r for r in await replies(client, 4)}
        assert "wasn't found" in got[1]["error"]["message"]
        assert "error" in got[2]
        assert got[3]["error"]["message"].endswith("is not allowed on this endpoint")
        assert "product" in got[4]["result"]  # still served after the errors
        await still_fine(worker, page, sessions)


async def test_reused_ids_each_get_their_own_answer(
    worker: RunningWorker, sessions: tuple[Any, Any]
) -> None:
    async with connected_page(sessions[0]) as page, open_client(sessions[0]) as client:
        for expression in ("1 + 1", "2 + 2", "3 + 3"):
            await client.send(json.dumps({"id": 7, "method": "Target.getTargets"}))
            del expression
        got = await replies(client, 3)
        assert [r["id"] for r in got] == [7, 7, 7]
        assert all("targetInfos" in r["result"] for r in got)
        await still_fine(worker, page, sessions)


async def test_a_flood_from_a_client_that_never_reads_drops_only_that_client(
    worker: RunningWorker, sessions: tuple[Any, Any]
) -> None:
    async with connected_page(sessions[0]) as page:
        async with open_client(sessions[0]) as flooder:
            # Requests without end, and never a read: its answers pile up
            # past its queue (100) until the endpoint drops it. It cannot
            # read a close frame either, so the connection is cut.
            await flooder.send(
                json.dumps(
                    {"id": 1, "method": "Target.createTarget", "params": {"url": "about:blank"}}
                )
            )
            target = (await replies(flooder, 1))[0]["result"]["targetId"]
            await flooder.send(
                json.dumps(
                    {
                        "id": 2,
                        "method": "Target.attachToTarget",
                        "params": {"targetId": target, "flatten": True},
                    }
                )
            )
            page_session = (await replies(flooder, 1))[0]["result"]["sessionId"]
            # 200 kB answers: the socket buffers fill after a few dozen.
            message = json.dumps(
                {
                    "id": 3,
                    "method": "Runtime.evaluate",
                    "sessionId": page_session,
                    "params": {"expression": "'x'.repeat(200000)"},
                }
            )
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(60):
                    while True:
                        await flooder.send(message)
        manager = worker.server.manager
        assert manager is not None
        mux = manager.live[sessions[0].session_id].mux
        assert mux is not None and len(mux.clients) == 1  # Playwright's, only
        await still_fine(worker, page, sessions)
    report_fault(
        "automation client floods 200 kB answers and never reads",
        "it is cut off (queue bound, then a 5 s grace); the daemon's buffer stays bounded",
        "same session's Playwright client and the other session kept",
        "n/a",
    )


async def test_a_flood_from_a_client_that_reads_is_served_in_full(
    worker: RunningWorker, sessions: tuple[Any, Any]
) -> None:
    async with connected_page(sessions[0]) as page, open_client(sessions[0]) as client:
        count = 2000
        await asyncio.gather(
            *(
                client.send(json.dumps({"id": i, "method": "Target.getTargets"}))
                for i in range(count)
            )
        )
        got = await replies(client, count, timeout=60)
        assert sorted(r["id"] for r in got) == list(range(count))
        await still_fine(worker, page, sessions)
