"""The fleet link on loopback: a worker's LinkServer over servicers that
record what they were asked, and a gateway's WorkerLink calling it. Calls
are answered and refused as over gRPC; a peer without the fleet's key is
refused in either direction before any call passes; a call the gateway
gives up on ends at the worker; calls in flight fail at once when the
worker goes, and the next call connects again."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from helpers.waits import eventually
from worker.api.rpc import rpc
from worker.errors import Internal, NotFound
from worker.fleet.forward import Forwarder, WorkerUnreachable
from worker.fleet.link import MAGIC, NONCE, Method, encode, greet, join, methods, read_frame
from worker.fleet.link_client import LinkDown, WorkerLink
from worker.fleet.link_server import LinkServer
from worker.fleet.metrics import GatewayMetrics
from worker.fleet.placement import WorkerView
from worker.metrics import Metrics
from worker.pb import link_pb2
from worker.pb import sandbox_pb2 as pb

KEY = secrets.token_bytes(32)
METHODS = methods()
START = METHODS["BrowserSessions/StartBrowserSession"]
GET = METHODS["BrowserSessions/GetBrowserSession"]
STOP = METHODS["BrowserSessions/StopBrowserSession"]


class Sessions:
    """Start answers at once; Get refuses; Stop waits until released."""

    def __init__(self) -> None:
        self.metrics = Metrics()
        self.calls: list[str] = []
        self.release = asyncio.Event()
        self.stops_cancelled = 0

    @rpc
    async def StartBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        self.calls.append(f"start {request.name}")
        return pb.BrowserSession(session_id="S1", name=request.name)

    @rpc
    async def GetBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        raise NotFound("session_id", f"no session '{request.session_id}'")

    @rpc
    async def StopBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        self.calls.append("stop")
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.stops_cancelled += 1
            raise
        return pb.BrowserSession(session_id=request.session_id)


@contextlib.asynccontextmanager
async def serving(sessions: Sessions, key: bytes = KEY, port: int = 0) -> AsyncIterator[str]:
    server = LinkServer({"BrowserSessions": sessions}, key)
    bound = await server.start("127.0.0.1", port)
    try:
        yield f"127.0.0.1:{bound}"
    finally:
        await server.stop()


async def test_a_call_is_answered_and_a_refusal_keeps_its_field_and_reason() -> None:
    sessions = Sessions()
    async with serving(sessions) as address:
        link = WorkerLink(address, KEY)
        try:
            answer = await link.call(START, pb.StartBrowserSessionRequest(name="one"), 5, "r1")
            with pytest.raises(NotFound) as refused:
                await link.call(GET, pb.GetBrowserSessionRequest(session_id="nope"), 5, "r2")
            unknown = Method("BrowserSessions/Nothing", "Nothing", START.request, START.answer)
            with pytest.raises(Internal):
                await link.call(unknown, pb.StartBrowserSessionRequest(), 5, "r3")
        finally:
            await link.close()
    assert answer.session_id == "S1" and answer.name == "one"
    assert (refused.value.field, refused.value.reason) == ("session_id", "no session 'nope'")
    assert sessions.calls == ["start one"]


async def test_a_gateway_without_the_fleet_key_is_refused_before_any_call_runs() -> None:
    sessions = Sessions()
    async with serving(sessions) as address:
        stranger = WorkerLink(address, secrets.token_bytes(32))
        with pytest.raises(LinkDown):
            await stranger.call(START, pb.StartBrowserSessionRequest(name="x"), 5, "")
        await stranger.close()
        # Nor does a frame sent without the handshake's proof get through.
        host, port = address.split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        await reader.readexactly(len(MAGIC) + NONCE)
        writer.write(bytes(64) + b"\x00\x00\x00\x05start")
        closed = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        await writer.wait_closed()
    assert closed == b"" and sessions.calls == []


async def test_a_gateway_sends_nothing_to_a_far_end_that_cannot_prove_the_key() -> None:
    received = bytearray()

    async def impostor(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(MAGIC + secrets.token_bytes(NONCE))
        await reader.readexactly(64)  # whatever the gateway proves
        writer.write(secrets.token_bytes(32))  # a proof it cannot make
        with contextlib.suppress(ConnectionError):
            received.extend(await asyncio.wait_for(reader.read(), 5))
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(impostor, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    link = WorkerLink(f"127.0.0.1:{port}", KEY)
    try:
        with pytest.raises(LinkDown):
            request = pb.StartBrowserSessionRequest(name="secret-bearing")
            await link.call(START, request, 5, "")
    finally:
        await link.close()
        server.close()
        await server.wait_closed()
    assert b"secret-bearing" not in received and not received


async def test_a_call_the_gateway_gives_up_on_is_cancelled_at_the_worker() -> None:
    sessions = Sessions()
    async with serving(sessions) as address:
        link = WorkerLink(address, KEY)
        try:
            with pytest.raises(TimeoutError):
                await link.call(STOP, pb.StopBrowserSessionRequest(session_id="S1"), 0.3, "")
            for _ in range(50):
                if sessions.stops_cancelled:
                    break
                await asyncio.sleep(0.05)
            # The connection still serves.
            answer = await link.call(START, pb.StartBrowserSessionRequest(name="two"), 5, "")
        finally:
            await link.close()
    assert sessions.stops_cancelled == 1 and answer.name == "two"


async def test_calls_run_side_by_side_and_fail_at_once_when_the_worker_goes() -> None:
    sessions = Sessions()
    async with serving(sessions) as address:
        link = WorkerLink(address, KEY)
        stop = asyncio.ensure_future(
            link.call(STOP, pb.StopBrowserSessionRequest(session_id="S1"), 30, "")
        )
        # A slow call does not hold up another on the same connection.
        quick = await link.call(START, pb.StartBrowserSessionRequest(name="q"), 5, "")
        began = time.monotonic()
    with pytest.raises(LinkDown):  # the server stopped: not after 30 s
        await stop
    failed_after = time.monotonic() - began
    port = int(address.rpartition(":")[2])
    async with serving(sessions, port=port):
        again = await link.call(START, pb.StartBrowserSessionRequest(name="back"), 5, "")
    await link.close()
    assert quick.name == "q" and failed_after < 5 and again.name == "back"
    assert sessions.stops_cancelled == 1


async def test_a_frame_cut_into_pieces_is_answered_and_a_broken_one_closes_the_link() -> None:
    sessions = Sessions()
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, what: unhandled.append(what))
    body = pb.StartBrowserSessionRequest(name="in pieces").SerializeToString()
    request = encode(link_pb2.Frame(call=7, method=START.name, body=body, timeout_s=5))
    async with serving(sessions) as address:
        async with _joined(address) as (reader, writer):
            for byte in range(len(request)):  # one read each, as a slow network might
                writer.write(request[byte : byte + 1])
                await writer.drain()
                await asyncio.sleep(0.001)
            reply = await asyncio.wait_for(read_frame(reader), 5)
        closed = []
        for broken in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x03\xff\xff\xff"):
            # A length past any frame's; a frame that does not parse.
            async with _joined(address) as (reader, writer):
                writer.write(broken)
                closed.append(await asyncio.wait_for(reader.read(), 5))
    assert reply.call == 7 and not reply.code
    assert pb.BrowserSession.FromString(reply.body).name == "in pieces"
    assert closed == [b"", b""] and sessions.calls == ["start in pieces"]
    assert not unhandled  # a broken frame is the peer's fault, not a crash here


async def test_a_broken_answer_fails_the_call_at_once_and_the_next_call_connects_again() -> None:
    unhandled: list[dict[str, Any]] = []
    asyncio.get_running_loop().set_exception_handler(lambda _loop, what: unhandled.append(what))
    answers = [b"\x00\x00\x00\x03\xff\xff\xff"]  # then, on the next connection, a good one

    async def worker(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await greet(reader, writer, KEY)
        asked = await read_frame(reader)
        good = encode(
            link_pb2.Frame(call=asked.call, body=pb.BrowserSession(name="ok").SerializeToString())
        )
        writer.write(answers.pop() if answers else good)
        await writer.drain()
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(worker, "127.0.0.1", 0)
    link = WorkerLink(f"127.0.0.1:{server.sockets[0].getsockname()[1]}", KEY)
    try:
        began = time.monotonic()
        with pytest.raises(LinkDown):
            await link.call(START, pb.StartBrowserSessionRequest(), 30, "")
        failed_after = time.monotonic() - began
        again = await link.call(START, pb.StartBrowserSessionRequest(), 5, "")
    finally:
        await link.close()
        server.close()
        await server.wait_closed()
    gc.collect()  # a reader task that died of the broken frame says so when collected
    assert failed_after < 5 and again.name == "ok"
    assert not unhandled


@contextlib.asynccontextmanager
async def _joined(
    address: str,
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """A connection that passed the handshake, as a gateway's does."""
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        await join(reader, writer, KEY)
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def test_the_gateway_counts_each_forwarded_call_by_how_the_worker_answered() -> None:
    sessions = Sessions()
    metrics = GatewayMetrics()
    forward = Forwarder(KEY, metrics)
    async with serving(sessions) as address:
        worker = WorkerView("w1", "", address, "", 1, 0, 0, {}, False, False, 0)
        await forward.call(
            worker, "sessions", "StartBrowserSession", pb.StartBrowserSessionRequest(), 5
        )
        with pytest.raises(NotFound):
            await forward.call(
                worker, "sessions", "GetBrowserSession", pb.GetBrowserSessionRequest(), 5
            )
        stop = asyncio.ensure_future(
            forward.call(
                worker, "sessions", "StopBrowserSession", pb.StopBrowserSessionRequest(), 5
            )
        )
        await eventually(lambda: sessions.calls[-1:] == ["stop"])
        stop.cancel()  # the caller gives up
        with contextlib.suppress(asyncio.CancelledError):
            await stop
    gone = dataclasses.replace(worker, worker_id="w2")  # nothing listens there now
    with pytest.raises(WorkerUnreachable):
        await forward.call(
            gone, "sessions", "StartBrowserSession", pb.StartBrowserSessionRequest(), 5
        )
    await forward.close()
    counted = {
        (method, code): metrics.registry.get_sample_value(
            "sandbox_fleet_forwarded_calls_total", {"method": method, "code": code}
        )
        for method, code in (
            ("StartBrowserSession", "OK"),
            ("GetBrowserSession", "NOT_FOUND"),
            ("StopBrowserSession", "CANCELLED"),
            ("StartBrowserSession", "UNREACHABLE"),
        )
    }
    assert set(counted.values()) == {1.0}, counted
