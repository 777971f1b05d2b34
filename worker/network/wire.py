"""The relay's wire: HTTP heads and bodies, and the protocols that move bytes.

Request heads are parsed from a stream (the relay must route each request);
everything else moves protocol to transport, with no copy in Python and no
coroutine per chunk: an upstream's `data_received` writes straight into the
browser's transport, and a full transport pauses reading on the other side.
That halves the relay's CPU per byte compared with stream copy loops, which
matters on a small machine where the relay shares cores with the browsers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Protocol, cast

HEAD_LIMIT = 64 * 1024  # largest request or response head accepted


class RelayError(Exception):
    """A request the relay answers itself, with this status and text."""

    def __init__(self, status: int, reason: str, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.reason = reason
        self.text = text


def error_response(err: RelayError) -> bytes:
    body = f"sandbox proxy relay: {err.text}\n".encode()
    head = (
        f"HTTP/1.1 {err.status} {err.reason}\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Sandbox-Proxy-Error: {err.reason}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class Counters:
    """Per-route traffic of one session; the daemon reads them via `stats`."""

    FIELDS = ("requests", "tunnels", "bytes_up", "bytes_down", "auth_failures", "errors")

    def __init__(self) -> None:
        self.routes: dict[str, dict[str, int]] = {}

    def add(self, route: str, field: str, amount: int = 1) -> None:
        counts = self.routes.get(route)
        if counts is None:
            counts = self.routes[route] = dict.fromkeys(self.FIELDS, 0)
        counts[field] += amount


def split_authority(authority: str, default_port: int) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) to (host, port); ValueError if malformed."""
    host, port = authority, default_port
    if authority.startswith("["):
        end = authority.find("]")
        host, rest = authority[1:end], authority[end + 1 :]
        if rest.startswith(":"):
            port = int(rest[1:])
    elif authority.count(":") == 1:
        host, raw = authority.split(":")
        port = int(raw)
    if not host or not 0 < port < 65536:
        raise ValueError(authority)
    return host, port


def status_of(chunk: bytes) -> int:
    """The status code at the start of a response, 0 if there is none."""
    parts = chunk[:16].split(b" ", 2)
    if len(parts) >= 2 and parts[0].startswith(b"HTTP/") and parts[1][:3].isdigit():
        return int(parts[1][:3])
    return 0


class Head:
    """A parsed HTTP request head; header lines kept raw."""

    def __init__(self, raw: bytes) -> None:
        lines = raw[:-4].decode("latin-1").split("\r\n")
        self.start = lines[0]
        self.headers = [line for line in lines[1:] if line]

    def get(self, name: str) -> str:
        prefix = name.lower() + ":"
        for line in self.headers:
            if line[: len(prefix)].lower() == prefix:
                return line[len(prefix) :].strip()
        return ""

    def without(self, *names: str) -> list[str]:
        drop = tuple(n.lower() + ":" for n in names)
        return [h for h in self.headers if not h.lower().startswith(drop)]


async def read_head(reader: asyncio.StreamReader, timeout: float) -> Head | None:
    """The next head on a connection; None when the peer closed cleanly."""
    try:
        async with asyncio.timeout(timeout):
            raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise RelayError(400, "Bad Request", "incomplete request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise RelayError(431, "Request Header Fields Too Large", "request head too large") from None
    return Head(raw)


class Sink(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


async def copy_body(head: Head, src: asyncio.StreamReader, dst: Sink) -> int:
    """Forward a request body framed by Content-Length or chunked coding."""
    if "chunked" in head.get("transfer-encoding").lower():
        return await _copy_chunked(src, dst)
    remaining = length = int(head.get("content-length") or 0)
    while remaining:
        data = await src.read(min(remaining, 256 * 1024))
        if not data:
            raise ConnectionResetError("request body cut short")
        dst.write(data)
        remaining -= len(data)
        await dst.drain()
    return length


async def _copy_chunked(src: asyncio.StreamReader, dst: Sink) -> int:
    total = 0
    while True:
        size_line = await src.readuntil(b"\r\n")
        dst.write(size_line)
        size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while (trailer := await src.readuntil(b"\r\n")) != b"\r\n":
                dst.write(trailer)
            dst.write(b"\r\n")
            await dst.drain()
            return total
        dst.write(await src.readexactly(size + 2))
        total += size
        await dst.drain()


class UpstreamProtocol(asyncio.Protocol):
    """A connection to a proxy or an origin, copying what it receives into
    the browser's transport (`sink`).

    Before the sink is attached, bytes are held: a proxy's answer to CONNECT
    is read as a head (`head` resolves with it), anything after it waits for
    the tunnel. With `tunnel` set, half-closes pass through; otherwise the
    upstream closing ends the browser's connection too (the end of a
    close-delimited response).
    """

    def __init__(self, on_bytes: Callable[[int], None]) -> None:
        loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.sink: asyncio.Transport | None = None
        self.tunnel = False
        self.on_bytes = on_bytes
        # Called with the status of each response when `expect_status` is
        # set; returning False swallows the response (the relay answered).
        self.on_status: Callable[[int], bool] | None = None
        self.expect_status = False
        self.head: asyncio.Future[bytes] = loop.create_future()
        self.held = bytearray()
        self.want_head = False
        self.closed: asyncio.Future[None] = loop.create_future()
        self.key: tuple[int | str, ...] = ()  # the route it serves (HTTP upstreams)
        self._writable = asyncio.Event()
        self._writable.set()

    # -- events from our transport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        if self.want_head and not self.head.done():
            self.held += data
            end = self.held.find(b"\r\n\r\n")
            if end >= 0:
                self.head.set_result(bytes(self.held[: end + 4]))
                del self.held[: end + 4]
            elif len(self.held) > HEAD_LIMIT:
                self.head.set_exception(ConnectionError("upstream head too large"))
            return
        if self.sink is None:
            self.held += data
            return
        if self.expect_status:
            self.expect_status = False
            if self.on_status is not None and not self.on_status(status_of(data)):
                return
        self.sink.write(data)
        self.on_bytes(len(data))

    def eof_received(self) -> bool:
        if self.tunnel and self.sink is not None and self.sink.can_write_eof():
            self.sink.write_eof()
            return True  # keep sending the browser's bytes upstream
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        if self.want_head and not self.head.done():
            self.head.set_exception(ConnectionError("upstream closed"))
        if not self.closed.done():
            self.closed.set_result(None)
        if self.sink is not None:
            self.sink.close()
        self._writable.set()

    def pause_writing(self) -> None:
        self._writable.clear()
        if self.tunnel and self.sink is not None:
            self.sink.pause_reading()

    def resume_writing(self) -> None:
        self._writable.set()
        if self.tunnel and self.sink is not None:
            self.sink.resume_reading()

    # -- used by the relay

    def attach(self, sink: asyncio.Transport) -> None:
        """Start copying into the browser's transport, held bytes first."""
        self.sink = sink
        if self.held:
            sink.write(bytes(self.held))
            self.on_bytes(len(self.held))
            self.held.clear()

    def write(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(data)

    async def drain(self) -> None:
        await self._writable.wait()
        if self.transport is None or self.transport.is_closing():
            raise ConnectionResetError("upstream closed")

    def detach_and_close(self) -> None:
        """Close without ending the browser's connection."""
        self.sink = None
        if self.transport is not None:
            self.transport.close()


class BrowserProtocol(asyncio.StreamReaderProtocol):
    """The browser's side: a stream for request heads, until a CONNECT turns
    it into a tunnel, after which bytes go straight to the upstream."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        on_connect: Callable[[asyncio.StreamReader, asyncio.StreamWriter], object],
    ) -> None:
        super().__init__(reader, on_connect)  # type: ignore[arg-type]
        self.tunnel_to: UpstreamProtocol | None = None
        self.upstream: UpstreamProtocol | None = None  # the current HTTP upstream
        self.on_tunnel_bytes: Callable[[int], None] = lambda _n: None

    def data_received(self, data: bytes) -> None:
        if self.tunnel_to is not None:
            self.tunnel_to.write(data)
            self.on_tunnel_bytes(len(data))
            return
        super().data_received(data)

    def eof_received(self) -> bool:
        target = self.tunnel_to
        if target is not None and target.transport is not None:
            if target.transport.can_write_eof():
                target.transport.write_eof()
            return True
        return bool(super().eof_received())

    def connection_lost(self, exc: Exception | None) -> None:
        for up in (self.tunnel_to, self.upstream):
            if up is not None:
                up.detach_and_close()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        up = self.tunnel_to or self.upstream
        if up is not None and up.transport is not None:
            up.transport.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        up = self.tunnel_to or self.upstream
        if up is not None and up.transport is not None:
            up.transport.resume_reading()
