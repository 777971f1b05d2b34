"""The proxy relay: a process of its own that routes every proxied session.

Each session with a proxy configuration gets a listener on 127.0.0.1, and its
browser runs with `--proxy-server=http://127.0.0.1:PORT
--proxy-bypass-list=<-loopback>`, so every request it makes arrives here.
The relay picks the route (bypass, pattern, default, direct), adds the
upstream's Basic credentials itself and counts bytes per route. Chromium
never sees a password: not on its command line, not in its environment, not
in its memory, and never a 407 challenge it would answer.

Why a separate process: page loads through a relay inside the daemon's event
loop stall whenever the daemon is busy (measured 1.3-1.7x slower page loads
under load); here they only share the CPU.

The daemon drives it with JSON lines on stdin (`configure`, `open`, `close`,
`stats`) and reads one JSON reply per request on stdout. On stdin EOF (the
daemon went away) it exits. It logs nothing but its own failures, and never
a header value.

Why one module of about 450 lines: it is the relay process's whole main
program (control loop, listeners, routing of each request, counters);
the byte moving and HTTP parsing are in `wire`, the rules in `routing`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from worker.network import netns
from worker.network.routing import DIRECT, ProxyConfig, normalise_host
from worker.network.wire import (
    HEAD_LIMIT,
    BrowserProtocol,
    Counters,
    Head,
    RelayError,
    UpstreamProtocol,
    copy_body,
    error_response,
    read_head,
    split_authority,
    status_of,
)

IDLE_TIMEOUT_S = 300.0  # a kept-alive browser connection with no request
CONNECT_TIMEOUT_S = 10.0  # reaching an upstream proxy or origin
# After an upstream rejects a session's credentials, the relay answers 407
# itself for this long instead of asking again: a page with 100 resources
# must not become 100 failed logins (proxy vendors lock accounts for less).
# Credentials are fixed for a session's life, so asking again rarely helps.
AUTH_HOLD_S = 30.0

Opened = tuple[asyncio.Transport, UpstreamProtocol]


def route_label(index: int) -> str:
    return "direct" if index == DIRECT else str(index)


class Listener:
    """One session's entrance: its routes, credentials and counters."""

    def __init__(self, relay: Relay, config: ProxyConfig, auth: list[str]) -> None:
        self.relay = relay
        self.config = config
        self.auth = auth  # Proxy-Authorization value per proxy, "" for none
        self.rejected_at: dict[int, float] = {}  # proxy index -> time of its last 407
        self.counters = Counters()
        self.server: asyncio.Server | None = None
        self.connections: set[asyncio.Transport] = set()

    async def start(self, port: int, namespace: str = "") -> int:
        """Listen on 127.0.0.1:`port` (0: any), inside the network namespace
        at `namespace` when given: the session's browser lives there, and
        this socket is the only thing it can reach."""
        loop = asyncio.get_running_loop()

        def listen() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("127.0.0.1", port))
            sock.listen(128)
            sock.setblocking(False)
            return sock

        if namespace:
            fd = os.open(namespace, os.O_RDONLY | os.O_CLOEXEC)
            try:
                sock = netns.inside(fd, listen)
            finally:
                os.close(fd)
        else:
            sock = listen()
        self.server = await loop.create_server(
            lambda: BrowserProtocol(asyncio.StreamReader(limit=HEAD_LIMIT), self.handle),
            sock=sock,
        )
        return int(sock.getsockname()[1])

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for transport in list(self.connections):
            transport.close()

    # -- one browser connection

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # (uvloop's transports are not asyncio.Transport subclasses.)
        transport = cast(asyncio.Transport, writer.transport)
        browser = cast(BrowserProtocol, transport.get_protocol())
        self.connections.add(transport)
        try:
            await self._serve(reader, transport, browser)
        except RelayError as err:
            if not transport.is_closing():
                transport.write(error_response(err))
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            if browser.tunnel_to is None:
                transport.close()
                if browser.upstream is not None:
                    browser.upstream.detach_and_close()
            self.connections.discard(transport)

    async def _serve(
        self, reader: asyncio.StreamReader, transport: asyncio.Transport, browser: BrowserProtocol
    ) -> None:
        while (head := await read_head(reader, IDLE_TIMEOUT_S)) is not None:
            method, _, rest = head.start.partition(" ")
            target, _, version = rest.partition(" ")
            if method == "CONNECT":
                await self._tunnel(target, transport, browser)
                return
            await self._forward(head, method, target, version, reader, transport, browser)

    # -- CONNECT: a tunnel through a proxy or straight to the origin

    async def _tunnel(
        self, authority: str, transport: asyncio.Transport, browser: BrowserProtocol
    ) -> None:
        try:
            host, port = split_authority(authority, 443)
        except ValueError:
            raise RelayError(400, "Bad Request", "CONNECT needs host:port") from None
        if browser.upstream is not None:
            browser.upstream.detach_and_close()
            browser.upstream = None
        index = self.config.route(host)
        label = route_label(index)
        if index == DIRECT:
            _, up = await self._open(label, self.relay.direct(host, port, label, self))
        else:
            _, up = await self._open(label, self._proxy_tunnel(index, authority))
        self.counters.add(label, "tunnels")
        transport.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        up.tunnel = True
        browser.on_tunnel_bytes = lambda n: self.counters.add(label, "bytes_up", n)
        browser.tunnel_to = up
        up.attach(transport)
        # The connection now belongs to the two protocols; wait for its end.
        await up.closed
        transport.close()

    async def _proxy_tunnel(self, index: int, authority: str) -> Opened:
        self._check_hold(index)
        proxy = self.config.proxies[index]
        label = route_label(index)
        up_transport, up = await self.relay.connect(proxy.server, proxy.port, label, self)
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        if self.auth[index]:
            lines.append(f"Proxy-Authorization: {self.auth[index]}")
        up.want_head = True
        up_transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            status = status_of(await up.head)
        except ConnectionError:
            status = 0
        up.want_head = False
        if status == 200:
            return up_transport, up
        up.detach_and_close()
        raise self._refusal(index, status)

    def _check_hold(self, index: int) -> None:
        rejected = self.rejected_at.get(index)
        if rejected is not None and time.monotonic() - rejected < AUTH_HOLD_S:
            raise self._refusal(index, 407, again=True)

    def _refusal(self, index: int, status: int, again: bool = False) -> RelayError:
        proxy = self.config.proxies[index]
        where = f"proxy {proxy.server}:{proxy.port}"
        if status == 407:
            if not again:
                self.rejected_at[index] = time.monotonic()
            self.counters.add(route_label(index), "auth_failures")
            said = "rejected the session's credentials"
            if not self.auth[index]:
                said = "requires credentials"
            return RelayError(407, "Proxy Authentication Required", f"{where} {said} (407)")
        self.counters.add(route_label(index), "errors")
        answer = status or "no answer"
        return RelayError(502, "Bad Gateway", f"{where} refused the tunnel ({answer})")

    async def _open(self, label: str, opening: Awaitable[Opened]) -> Opened:
        try:
            async with asyncio.timeout(CONNECT_TIMEOUT_S):
                return await opening
        except RelayError:
            raise
        except TimeoutError:
            self.counters.add(label, "errors")
            raise RelayError(504, "Gateway Timeout", "upstream did not answer in time") from None
        except OSError as exc:
            self.counters.add(label, "errors")
            reason = exc.strerror or type(exc).__name__
            raise RelayError(502, "Bad Gateway", f"cannot reach upstream ({reason})") from None

    # -- plain HTTP through the relay

    async def _forward(
        self,
        head: Head,
        method: str,
        target: str,
        version: str,
        reader: asyncio.StreamReader,
        transport: asyncio.Transport,
        browser: BrowserProtocol,
    ) -> None:
        scheme, sep, rest = target.partition("://")
        if not sep or scheme.lower() != "http":
            raise RelayError(400, "Bad Request", "expected an absolute http:// URI")
        authority, slash, path = rest.partition("/")
        host, port = split_authority(authority, 80)
        index = self.config.route(host)
        label = route_label(index)
        if index != DIRECT:
            self._check_hold(index)
        key = (index,) if index != DIRECT else (index, normalise_host(host), port)
        up = await self._upstream_for(key, label, host, port, transport, browser)
        if index == DIRECT:
            start = f"{method} {slash}{path} {version}"
            headers = head.without("proxy-authorization", "proxy-connection")
        else:
            start = head.start
            headers = head.without("proxy-authorization")
            if self.auth[index]:
                headers.append(f"Proxy-Authorization: {self.auth[index]}")
        raw = ("\r\n".join([start, *headers]) + "\r\n\r\n").encode("latin-1")
        up.expect_status = True
        up.write(raw)
        sent = len(raw) + await copy_body(head, reader, up)
        self.counters.add(label, "requests")
        self.counters.add(label, "bytes_up", sent)

    async def _upstream_for(
        self,
        key: tuple[Any, ...],
        label: str,
        host: str,
        port: int,
        transport: asyncio.Transport,
        browser: BrowserProtocol,
    ) -> UpstreamProtocol:
        # Chromium reuses one proxy connection for any host, and never
        # pipelines: when a request needs another route, the previous
        # response has been fully delivered, so its upstream can go.
        current = browser.upstream
        if current is not None and current.key == key and not current.closed.done():
            return current
        if current is not None:
            current.detach_and_close()
            browser.upstream = None
        index = key[0]
        if index == DIRECT:
            opening = self.relay.direct(host, port, label, self)
        else:
            proxy = self.config.proxies[index]
            opening = self.relay.connect(proxy.server, proxy.port, label, self)
        _, up = await self._open(label, opening)
        up.key = key
        up.on_status = lambda status: self._on_status(up, status, transport)
        up.attach(transport)
        browser.upstream = up
        return up

    def _on_status(self, up: UpstreamProtocol, status: int, transport: asyncio.Transport) -> bool:
        """Catch an upstream 407 before the browser sees its challenge."""
        index = int(up.key[0])
        if status != 407 or index == DIRECT:
            return True
        transport.write(error_response(self._refusal(index, 407)))
        up.detach_and_close()
        transport.close()
        return False


class Relay:
    """All listeners of this process, and how it reaches the outside."""

    def __init__(self) -> None:
        self.listeners: dict[str, Listener] = {}
        self.host_overrides: dict[str, str] = {}

    def resolve(self, host: str) -> str:
        """Apply the worker's static host entries (exact, or `.suffix`)."""
        name = normalise_host(host)
        if name in self.host_overrides:
            return self.host_overrides[name]
        for pattern, address in self.host_overrides.items():
            if pattern.startswith(".") and (name == pattern[1:] or name.endswith(pattern)):
                return address
        return host

    def own_ports(self) -> set[int]:
        return {
            int(s.getsockname()[1])
            for listener in self.listeners.values()
            if listener.server is not None
            for s in listener.server.sockets
        }

    async def connect(self, host: str, port: int, label: str, listener: Listener) -> Opened:
        def made() -> UpstreamProtocol:
            return UpstreamProtocol(lambda n: listener.counters.add(label, "bytes_down", n))

        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_connection(made, self.resolve(host), port)
        return transport, protocol

    async def direct(self, host: str, port: int, label: str, listener: Listener) -> Opened:
        """Connect to an origin, refusing the relay's own listeners: a page
        must not reach another session's routes and credentials."""
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(self.resolve(host), port, type=socket.SOCK_STREAM)
        address, to_port = str(infos[0][4][0]), int(infos[0][4][1])
        if ipaddress.ip_address(address).is_loopback and to_port in self.own_ports():
            raise RelayError(403, "Forbidden", "the relay does not connect to itself")
        return await self.connect(address, to_port, label, listener)

    # -- control

    async def open(self, session: str, body: dict[str, Any]) -> dict[str, Any]:
        if session in self.listeners:
            self.listeners.pop(session).close()
        listener = Listener(self, ProxyConfig.from_dict(body["config"]), list(body["auth"]))
        self.listeners[session] = listener
        try:
            port = await listener.start(int(body.get("port", 0)), str(body.get("netns", "")))
        except OSError:
            self.listeners.pop(session, None)
            raise
        return {"port": port}

    def update(self, session: str, body: dict[str, Any]) -> dict[str, Any]:
        """New routes and credentials for a listener, on the same port (a
        pooled browser's proxy is set when a session claims it)."""
        listener = self.listeners[session]
        listener.config = ProxyConfig.from_dict(body["config"])
        listener.auth = list(body["auth"])
        listener.rejected_at.clear()
        return {}

    def close(self, session: str) -> dict[str, Any]:
        listener = self.listeners.pop(session, None)
        if listener is None:
            return {"stats": {}}
        listener.close()
        return {"stats": listener.counters.routes}

    def stats(self, session: str) -> dict[str, Any]:
        if not session:  # every session at once (metrics scrapes)
            return {"all": {sid: lst.counters.routes for sid, lst in self.listeners.items()}}
        listener = self.listeners.get(session)
        return {"stats": listener.counters.routes if listener else {}}

    async def dispatch(self, message: dict[str, Any]) -> dict[str, Any]:
        op = message.get("op")
        if op == "configure":
            self.host_overrides = {
                normalise_host(k) if not k.startswith(".") else k.lower(): v
                for k, v in message.get("host_overrides", {}).items()
            }
            return {}
        if op == "open":
            return await self.open(message["session"], message)
        if op == "update":
            return self.update(message["session"], message)
        if op == "close":
            return self.close(message["session"])
        if op == "stats":
            return self.stats(message.get("session", ""))
        raise ValueError(f"unknown op {op!r}")


async def _control(relay: Relay) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    out = sys.stdout.buffer

    def reply(body: dict[str, Any]) -> None:
        out.write(json.dumps(body).encode() + b"\n")
        out.flush()

    reply({"ready": True})
    tasks: set[asyncio.Task[None]] = set()
    while line := await reader.readline():
        message = json.loads(line)
        task = asyncio.ensure_future(_answer(relay, message, reply))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    for session in list(relay.listeners):
        relay.close(session)


async def _answer(
    relay: Relay, message: dict[str, Any], reply: Callable[[dict[str, Any]], None]
) -> None:
    try:
        body = await relay.dispatch(message)
    except Exception as exc:  # reported to the daemon, which decides
        body = {"error": f"{type(exc).__name__}: {exc}"}
    reply({"seq": message.get("seq"), **body})


def main() -> None:
    try:
        import uvloop  # ~30% less CPU per relayed byte than the default loop
    except ImportError:
        asyncio.run(_control(Relay()))
        return
    uvloop.run(_control(Relay()))


if __name__ == "__main__":
    main()
