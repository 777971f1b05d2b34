"""The CDP client: one connection to a browser over `--remote-debugging-pipe`.

`PipeTransport` frames messages (JSON terminated by NUL) on the two pipe
ends; `Connection` owns the id -> reply map and the event routing. The pipe
is read by one asyncio protocol (there is no reader task to cancel: the event
loop delivers bytes as they arrive), replies resolve by id, and events go to
the handler registered for their flattened `sessionId` (or the root handlers
when they have none). On close every pending call is failed, so no awaiter
hangs when a browser dies.

Daemon code awaits `Connection.call`; the multiplexer uses `Connection.send`
with its own reply callback so client messages share the one id space.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable
from typing import Any

Message = dict[str, Any]
ReplyCallback = Callable[[Message], None]
EventHandler = Callable[[Message], None]


class CDPError(Exception):
    """A CDP call answered with an error, or could not be answered."""

    def __init__(self, message: str, code: int = -32000) -> None:
        super().__init__(message)
        self.code = code


class ConnectionClosed(CDPError):
    """The browser connection closed before the call was answered."""


class _ReadProtocol(asyncio.Protocol):
    def __init__(self, on_message: Callable[[bytes], None], on_eof: Callable[[], None]):
        self._parts: list[bytes] = []
        self._on_message = on_message
        self._on_eof = on_eof

    def data_received(self, data: bytes) -> None:
        # Scan only the bytes just read: rescanning a growing buffer for the
        # terminator would be quadratic on multi-megabyte screenshots.
        start = 0
        while (end := data.find(b"\0", start)) >= 0:
            self._parts.append(data[start:end])
            message = b"".join(self._parts)
            self._parts.clear()
            self._on_message(message)
            start = end + 1
        if start < len(data):
            self._parts.append(data[start:])

    def eof_received(self) -> bool:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._on_eof()


class PipeTransport:
    """Reads from and writes to a browser's CDP pipe ends (our side)."""

    def __init__(self) -> None:
        self._writer: asyncio.WriteTransport | None = None
        self._reader: asyncio.ReadTransport | None = None

    @classmethod
    async def open(
        cls,
        read_fd: int,
        write_fd: int,
        on_message: Callable[[bytes], None],
        on_eof: Callable[[], None],
    ) -> PipeTransport:
        loop = asyncio.get_running_loop()
        self = cls()
        rfile = os.fdopen(read_fd, "rb", buffering=0)
        wfile = os.fdopen(write_fd, "wb", buffering=0)
        self._reader, _ = await loop.connect_read_pipe(
            lambda: _ReadProtocol(on_message, on_eof), rfile
        )
        self._writer, _ = await loop.connect_write_pipe(asyncio.Protocol, wfile)
        return self

    def write(self, data: bytes) -> None:
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data + b"\0")

    def close(self) -> None:
        for transport in (self._writer, self._reader):
            if transport is not None:
                transport.close()


class Connection:
    """Routes CDP replies by id and events by session over one transport."""

    def __init__(self, write: Callable[[bytes], None]) -> None:
        self._write = write
        self._next_id = 0
        self._pending: dict[int, tuple[str | None, ReplyCallback]] = {}
        self._session_handlers: dict[str, EventHandler] = {}
        self._root_handlers: list[EventHandler] = []
        self._close_handlers: list[Callable[[], None]] = []
        self.closed = False
        self.version: Message | None = None  # Browser.getVersion, once known

    # -- sending

    def send(
        self,
        method: str,
        params: Message | None,
        session_id: str | None,
        on_reply: ReplyCallback,
    ) -> int:
        """Send a command; `on_reply` gets the raw reply (result or error)."""
        if self.closed:
            on_reply(_closed_reply(session_id))
            return -1
        self._next_id += 1
        msg_id = self._next_id
        message: Message = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            message["sessionId"] = session_id
        self._pending[msg_id] = (session_id, on_reply)
        self._write(json.dumps(message, separators=(",", ":")).encode())
        return msg_id

    async def call(
        self,
        method: str,
        params: Message | None = None,
        session_id: str | None = None,
        timeout: float | None = None,
    ) -> Message:
        """Send a command and return its result; raise CDPError on error."""
        future: asyncio.Future[Message] = asyncio.get_running_loop().create_future()

        def on_reply(reply: Message) -> None:
            if not future.done():
                future.set_result(reply)

        self.send(method, params, session_id, on_reply)
        reply = await asyncio.wait_for(future, timeout)
        if "error" in reply:
            error = reply["error"]
            cls = ConnectionClosed if reply.get("_closed") else CDPError
            raise cls(str(error.get("message", "CDP error")), int(error.get("code", -32000)))
        result: Message = reply.get("result", {})
        return result

    # -- routing

    def on_session_event(self, session_id: str, handler: EventHandler | None) -> None:
        """Route events of a flattened session to `handler` (None removes)."""
        if handler is None:
            self._session_handlers.pop(session_id, None)
        else:
            self._session_handlers[session_id] = handler

    def on_root_event(self, handler: EventHandler) -> None:
        self._root_handlers.append(handler)

    def on_close(self, handler: Callable[[], None]) -> None:
        self._close_handlers.append(handler)

    def dispatch(self, raw: bytes) -> None:
        """Handle one message from the browser."""
        try:
            message: Message = json.loads(raw)
        except ValueError:
            return  # Chromium never sends this; a torn write is not ours to fix
        msg_id = message.get("id")
        if msg_id is not None:
            entry = self._pending.pop(msg_id, None)
            if entry is not None:
                entry[1](message)
            return
        session_id = message.get("sessionId")
        if session_id:
            handler = self._session_handlers.get(session_id)
            if handler is not None:
                handler(message)
            return
        for root_handler in list(self._root_handlers):
            root_handler(message)

    def close(self) -> None:
        """Fail every pending call and tell close handlers; idempotent."""
        if self.closed:
            return
        self.closed = True
        pending, self._pending = self._pending, {}
        for session_id, on_reply in pending.values():
            on_reply(_closed_reply(session_id))
        self._session_handlers.clear()
        for handler in self._close_handlers:
            handler()


def _closed_reply(session_id: str | None) -> Message:
    # The reply keeps the call's sessionId: Playwright's driver asserts (and
    # its node process dies) on an error reply that lost it.
    reply: Message = {
        "error": {"code": -32000, "message": "Target closed: the browser connection closed"},
        "_closed": True,
    }
    if session_id:
        reply["sessionId"] = session_id
    return reply
