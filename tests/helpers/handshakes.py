"""Websocket handshakes sent as raw bytes, for requests no client library
would make (a target or a Host header that is no URL, a NUL in a path)."""

from __future__ import annotations

import asyncio


async def handshake_status(port: int, target: bytes, host: bytes = b"x") -> bytes:
    """The status line a websocket handshake for `target` on 127.0.0.1:port gets."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET " + target + b" HTTP/1.1\r\nHost: " + host + b"\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        return (await asyncio.wait_for(reader.readline(), 10)).strip()
    finally:
        writer.close()
