"""The gateway's automation and live-view port. A connection's first
request names a session (`/browser-streams/{browser}/sessions/{id}/...`);
the gateway finds the worker that holds it in the shared store, checks the
session's token (against the digest of it that the worker indexed at
Start) or the request's SigV4 signature, so a refused client never reaches a
worker, then sends the worker the request as it came (the worker checks
again) and from then on moves bytes both ways unchanged: no websocket frame
is parsed or rebuilt on the way, so a CDP round trip costs two socket hops
and nothing more.

Requests that are not websocket upgrades are sent with `Connection: close`,
so a kept-alive connection never carries a later request for another
session to this worker. When the worker goes away under an open websocket
(its connection ends with no close frame from it, or the fleet finds it
lost), the client gets a close frame 1011 saying so, not a dropped socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import socket
import struct
from collections.abc import Awaitable, Callable, Mapping
from http import HTTPStatus
from urllib.parse import urlsplit

import structlog
from websockets.datastructures import Headers

from worker import ids
from worker.api import stream_auth
from worker.api.automation import stream_target
from worker.fleet.metrics import GatewayMetrics
from worker.fleet.placement import WorkerView

log = structlog.get_logger(__name__)

MAX_HEAD = 16 * 1024
HEAD_TIMEOUT_S = 10.0
CHUNK = 64 * 1024
WORKER_GONE = 1011


@dataclasses.dataclass(frozen=True)
class Target:
    worker: WorkerView | None  # None: not reachable (or not known)
    known: bool  # the store knows the session
    token_sha256: str  # "": the session was not started through a gateway


Lookup = Callable[[str], Awaitable[Target]]


class StreamRelay:
    def __init__(self, lookup: Lookup, keys: Mapping[str, str], metrics: GatewayMetrics) -> None:
        self._lookup = lookup
        self._keys = keys  # the HTTP API's SigV4 keys
        self._metrics = metrics
        self._server: asyncio.Server | None = None
        self._open: dict[str, set[_Joined]] = {}  # worker id -> its relayed connections
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._serve, host, port, limit=MAX_HEAD)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for joined in [j for group in self._open.values() for j in group]:
                joined.close(1001, "the gateway is going away")
            await self._server.wait_closed()

    @property
    def relayed(self) -> int:
        """Websockets relayed now (a plain request's relay is not one)."""
        return sum(j.upgrade for group in self._open.values() for j in group)

    def drop(self, worker_id: str) -> int:
        """Close every relayed client of a worker the fleet found lost."""
        group = self._open.pop(worker_id, set())
        for joined in group:
            joined.close(WORKER_GONE, "the session's worker was lost")
        return len(group)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _no_delay(writer)
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, OSError):
            writer.close()
            return
        try:
            await self._relay(head, reader, writer)
        finally:
            writer.close()

    async def _relay(
        self, head: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        target_path = _target(head)
        match = stream_target(target_path) if target_path else None
        if match is None:
            return await self._refuse(writer, 404, "no such stream")
        target = await self._lookup(match.group(2))
        worker = target.worker
        if worker is None:
            if target.known:
                return await self._refuse(writer, 503, "the session's worker is not reachable")
            return await self._refuse(writer, 404, "no such session")
        if target.token_sha256:
            refused = stream_auth.check(
                target_path,
                _headers(head),
                lambda token: stream_auth.matches(ids.token_digest(token), target.token_sha256),
                self._keys,
                match.group(3),
            )
            if refused is not None:
                return await self._refuse(writer, int(refused[0]), refused[1])
        address = urlsplit(worker.automation)
        try:
            up_reader, up_writer = await asyncio.open_connection(address.hostname, address.port)
        except OSError:
            return await self._refuse(writer, 503, "the session's worker is not reachable")
        _no_delay(up_writer)
        upgrade = b"upgrade: websocket" in head.lower()
        up_writer.write(head if upgrade else _closing(head))
        joined = _Joined(writer, up_writer, upgrade)
        self._open.setdefault(worker.worker_id, set()).add(joined)
        try:
            await joined.run(reader, up_reader)
        finally:
            self._forget(worker.worker_id, joined)
            up_writer.close()

    def _forget(self, worker_id: str, joined: _Joined) -> None:
        """A relayed connection ended: no trace of it, or of its worker
        once it has none (worker ids are new at every start)."""
        group = self._open.get(worker_id)
        if group is not None:
            group.discard(joined)
            if not group:
                del self._open[worker_id]

    async def _refuse(self, writer: asyncio.StreamWriter, status: int, text: str) -> None:
        self._metrics.automation_refused.labels(HTTPStatus(status).phrase.lower()).inc()
        log.info("relay.refused", status=status, reason=text)
        await _answer(writer, status, text)


class _Joined:
    """One client joined to its worker: two pumps, and the server-to-client
    frame boundaries, so a close frame can be added between frames."""

    def __init__(
        self, client: asyncio.StreamWriter, worker: asyncio.StreamWriter, upgrade: bool
    ) -> None:
        self._client, self._worker = client, worker
        self.upgrade = upgrade
        self._frames = _FrameTracker() if upgrade else None

    async def run(self, client_in: asyncio.StreamReader, worker_in: asyncio.StreamReader) -> None:
        up = asyncio.ensure_future(_pump(client_in, self._worker))
        down = asyncio.ensure_future(self._down(worker_in))
        _, pending = await asyncio.wait((up, down), return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, OSError):
                await task

    async def _down(self, worker_in: asyncio.StreamReader) -> None:
        with contextlib.suppress(OSError):
            while chunk := await worker_in.read(CHUNK):
                if self._frames is not None:
                    self._frames.feed(chunk)
                self._client.write(chunk)
                await self._client.drain()
        # The worker's side ended: without its close frame, the worker went away.
        self.close(WORKER_GONE, "the session's worker went away")

    def close(self, code: int, reason: str) -> None:
        frames = self._frames
        if frames is not None and frames.at_boundary and not frames.closed:
            frames.closed = True
            with contextlib.suppress(OSError, RuntimeError):
                self._client.write(_close_frame(code, reason))
        self._client.close()
        self._worker.close()


class _FrameTracker:
    """Where server-to-client websocket frames begin and end (unmasked
    frames: a 2-14 byte header, then the payload), and whether the server
    sent its close frame. Nothing is decoded beyond the headers."""

    def __init__(self) -> None:
        self._header = b""  # a header cut between chunks
        self._left = -1  # payload bytes left in this frame; -1: before the handshake ends
        self.closed = False

    @property
    def at_boundary(self) -> bool:
        return self._left == 0 and not self._header

    def feed(self, data: bytes) -> None:
        if self._left < 0:  # the HTTP 101 answer comes first
            end = data.find(b"\r\n\r\n")
            if end < 0:
                return
            self._left, data = 0, data[end + 4 :]
        while data:
            if self._left:
                step = min(self._left, len(data))
                self._left, data = self._left - step, data[step:]
                continue
            data = self._header + data
            size = _header_size(data)
            if size is None or len(data) < size:
                self._header, data = data, b""
                continue
            self._header = b""
            if data[0] & 0x0F == 0x8:
                self.closed = True
            self._left, data = _payload_length(data), data[size:]


def _header_size(data: bytes) -> int | None:
    if len(data) < 2:
        return None
    short = data[1] & 0x7F
    return 2 + {126: 2, 127: 8}.get(short, 0) + (4 if data[1] & 0x80 else 0)


def _payload_length(header: bytes) -> int:
    short = header[1] & 0x7F
    if short == 126:
        return int(struct.unpack("!H", header[2:4])[0])
    if short == 127:
        return int(struct.unpack("!Q", header[2:10])[0])
    return short


def _close_frame(code: int, reason: str) -> bytes:
    payload = struct.pack("!H", code) + reason.encode()[:120]
    return bytes([0x88, len(payload)]) + payload


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            await sink.drain()


def _target(head: bytes) -> str:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    return parts[1] if len(parts) == 3 and parts[1].startswith("/") else ""


_CONNECTION = re.compile(rb"\r\nconnection:[^\r]*", re.IGNORECASE)


def _closing(head: bytes) -> bytes:
    """A plain HTTP request, asking the worker to close after its answer."""
    body = _CONNECTION.sub(b"", head[:-4])
    return body + b"\r\nConnection: close\r\n\r\n"


def _headers(head: bytes) -> Headers:
    """The request's headers, case-insensitive, as the checks read them."""
    headers = Headers()
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, sep, value = line.partition(":")
        if sep and name:
            headers[name.strip()] = value.strip()
    return headers


async def _answer(writer: asyncio.StreamWriter, status: int, text: str) -> None:
    reason = HTTPStatus(status).phrase
    body = text.encode()
    writer.write(
        f"HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )
    with contextlib.suppress(OSError):
        await writer.drain()


def _no_delay(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
