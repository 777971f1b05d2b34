"""The gateway's relay against a stand-in worker (a socket server that
answers the handshake): a relayed websocket is counted while it is open,
and once it ends the relay keeps nothing of it or of its worker."""

from __future__ import annotations

import asyncio

from helpers.waits import eventually
from worker.fleet.metrics import GatewayMetrics
from worker.fleet.placement import WorkerView
from worker.fleet.relay import StreamRelay, Target

HANDSHAKE = (
    b"GET /browser-streams/b/sessions/S1/automation HTTP/1.1\r\nHost: x\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def test_a_relayed_websocket_is_counted_while_open_and_forgotten_when_it_ends() -> None:
    async def stand_in(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n")
        await reader.read()  # until the client's side ends
        writer.close()

    worker_server = await asyncio.start_server(stand_in, "127.0.0.1", 0)
    port = worker_server.sockets[0].getsockname()[1]
    worker = WorkerView("w1", "", "", f"ws://127.0.0.1:{port}", 1, 1, 0, {}, False, False, 0)

    async def lookup(session_id: str) -> Target:
        return Target(worker, True, "")  # no token digest: the worker checks

    relay = StreamRelay(lookup, {}, GatewayMetrics())
    relay_port = await relay.start("127.0.0.1", 0)
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", relay_port)
        writer.write(HANDSHAKE)
        status = await asyncio.wait_for(reader.readline(), 10)
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        open_while = relay.relayed
        writer.close()
        await eventually(lambda: relay.relayed == 0 and not relay._open, timeout=10)
    finally:
        await relay.stop()
        worker_server.close()
        await worker_server.wait_closed()
    assert status.startswith(b"HTTP/1.1 101") and open_while == 1
