"""The CDP client: framing on real pipes, reply and event routing, close."""

from __future__ import annotations

import asyncio
import json
import os

import pytest

from worker import cdp


def test_replies_resolve_by_id_and_events_route_by_session() -> None:
    sent: list[dict[str, object]] = []
    conn = cdp.Connection(lambda data: sent.append(json.loads(data)))
    replies: list[dict[str, object]] = []
    events: list[dict[str, object]] = []
    root_events: list[dict[str, object]] = []
    conn.on_session_event("S1", events.append)
    conn.on_root_event(root_events.append)
    conn.send("Page.enable", None, "S1", replies.append)
    assert sent == [{"id": 1, "method": "Page.enable", "params": {}, "sessionId": "S1"}]
    conn.dispatch(b'{"method":"Page.loadEventFired","params":{},"sessionId":"S1"}')
    conn.dispatch(b'{"method":"Target.targetCreated","params":{}}')
    conn.dispatch(b'{"id":1,"result":{},"sessionId":"S1"}')
    assert [e["method"] for e in events] == ["Page.loadEventFired"]
    assert [e["method"] for e in root_events] == ["Target.targetCreated"]
    assert replies == [{"id": 1, "result": {}, "sessionId": "S1"}]


def test_close_fails_every_pending_call_keeping_its_session_id() -> None:
    conn = cdp.Connection(lambda data: None)
    replies: list[dict[str, object]] = []
    conn.send("A.b", None, "S9", replies.append)
    conn.send("A.c", None, None, replies.append)
    conn.close()
    assert len(replies) == 2
    assert all("error" in r for r in replies)
    assert replies[0]["sessionId"] == "S9"
    assert "sessionId" not in replies[1]
    late: list[dict[str, object]] = []
    conn.send("A.d", None, None, late.append)
    assert "error" in late[0]


async def test_call_raises_the_browsers_error() -> None:
    conn = cdp.Connection(lambda data: None)
    call = asyncio.ensure_future(conn.call("Nope.nope"))
    await asyncio.sleep(0)
    conn.dispatch(b'{"id":1,"error":{"code":-32601,"message":"\'Nope.nope\' wasn\'t found"}}')
    with pytest.raises(cdp.CDPError, match="wasn't found") as info:
        await call
    assert info.value.code == -32601


async def test_call_raises_connection_closed_when_the_pipe_ends() -> None:
    conn = cdp.Connection(lambda data: None)
    call = asyncio.ensure_future(conn.call("Browser.getVersion"))
    await asyncio.sleep(0)
    conn.close()
    with pytest.raises(cdp.ConnectionClosed):
        await call


async def test_pipe_transport_frames_messages_split_across_reads() -> None:
    to_us_r, to_us_w = os.pipe()
    from_us_r, from_us_w = os.pipe()
    received: list[bytes] = []
    eof = asyncio.Event()
    transport = await cdp.PipeTransport.open(to_us_r, from_us_w, received.append, eof.set)
    big = json.dumps({"id": 1, "result": {"data": "x" * 300_000}}).encode()
    payload = b'{"id":2}\0' + big + b"\0" + b'{"id":3}\0'
    for i in range(0, len(payload), 7000):  # many partial writes
        os.write(to_us_w, payload[i : i + 7000])
        await asyncio.sleep(0)
    os.close(to_us_w)
    await asyncio.wait_for(eof.wait(), 5)
    assert received == [b'{"id":2}', big, b'{"id":3}']
    transport.write(b'{"id":4}')
    await asyncio.sleep(0.05)
    assert os.read(from_us_r, 100) == b'{"id":4}\0'
    transport.close()
    os.close(from_us_r)
