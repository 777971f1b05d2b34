"""A CDP client over a websocket, for whoever drives a session's automation
endpoint without a browser library: the load generator, the benchmarks and
the tests.

Commands are numbered per connection; an answer is matched to its command
by id, and an error answer raises `CommandFailed` naming the method. Events
read while waiting for an answer are kept, in order, for `until`, so an event
that arrives before its waiter is not lost. `AsyncCDP` runs on asyncio;
`SyncCDP` is the same client on a blocking socket, for benchmarks whose
timing loop is synchronous. Neither reads in the background: nothing is
read unless a call waits for it, which keeps a timed call free of a second
task's scheduling.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

from websockets.asyncio.client import ClientConnection as AsyncConnection
from websockets.asyncio.client import connect as async_connect
from websockets.sync.client import ClientConnection as SyncConnection
from websockets.sync.client import connect as sync_connect

Message = dict[str, Any]
TIMEOUT_S = 60.0


class CommandFailed(RuntimeError):
    """The browser (or the worker) answered a command with a CDP error."""

    def __init__(self, method: str, error: dict[str, Any]) -> None:
        self.code = error.get("code")
        super().__init__(f"{method}: {error.get('message', error)}")


def connect_options(token: str, timeout: float) -> dict[str, Any]:
    """How both clients open the socket: the session's token, no compression
    (loopback has no use for it), no size bound on answers."""
    return {
        "additional_headers": {"Authorization": f"Bearer {token}"},
        "compression": None,
        "max_size": None,
        "open_timeout": timeout,
    }


class _Frames:
    """What both clients share: numbering, framing, matching, kept events."""

    def __init__(self) -> None:
        self.last_id = 0
        self.events: list[Message] = []

    def command(self, method: str, session: str, params: dict[str, Any]) -> tuple[int, str]:
        self.last_id += 1
        message: Message = {"id": self.last_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        return self.last_id, json.dumps(message)

    def answer(self, frame: str | bytes, wanted: int, method: str) -> Message | None:
        """The result when `frame` answers command `wanted`; events are kept."""
        message = json.loads(frame)
        if message.get("id") != wanted:
            if "method" in message:
                self.events.append(message)
            return None
        if "error" in message:
            raise CommandFailed(method, message["error"])
        return dict(message.get("result", {}))

    def kept(self, event: str, session: str) -> Message | None:
        for i, message in enumerate(self.events):
            if _is(message, event, session):
                return self.events.pop(i)
        return None


def _is(message: Message, event: str, session: str) -> bool:
    return message.get("method") == event and (not session or message.get("sessionId") == session)


class AsyncCDP:
    def __init__(self, ws: AsyncConnection, timeout: float = TIMEOUT_S) -> None:
        self.ws = ws
        self.timeout = timeout
        self._frames = _Frames()

    @classmethod
    @asynccontextmanager
    async def connect(
        cls, endpoint: str, token: str, timeout: float = TIMEOUT_S
    ) -> AsyncIterator[AsyncCDP]:
        async with async_connect(endpoint, **connect_options(token, timeout)) as ws:
            yield cls(ws, timeout)

    async def call(self, method: str, session: str = "", **params: Any) -> Message:
        wanted, frame = self._frames.command(method, session, params)
        await self.ws.send(frame)
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{method}: no answer within {self.timeout:g}s")
            async with asyncio.timeout(remaining):
                got = self._frames.answer(await self.ws.recv(), wanted, method)
            if got is not None:
                return got

    async def until(self, event: str, session: str = "") -> Message:
        """The next `event` (of `session`, if given), kept or still to come."""
        kept = self._frames.kept(event, session)
        if kept is not None:
            return kept
        async with asyncio.timeout(self.timeout):
            while True:
                message = json.loads(await self.ws.recv())
                if _is(message, event, session):
                    return dict(message)
                if "method" in message:
                    self._frames.events.append(message)


class SyncCDP:
    def __init__(self, ws: SyncConnection, timeout: float = TIMEOUT_S) -> None:
        self.ws = ws
        self.timeout = timeout
        self._frames = _Frames()

    @classmethod
    @contextmanager
    def connect(cls, endpoint: str, token: str, timeout: float = TIMEOUT_S) -> Iterator[SyncCDP]:
        with sync_connect(endpoint, **connect_options(token, timeout)) as ws:
            yield cls(ws, timeout)

    def call(self, method: str, session: str = "", **params: Any) -> Message:
        wanted, frame = self._frames.command(method, session, params)
        self.ws.send(frame)
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{method}: no answer within {self.timeout:g}s")
            got = self._frames.answer(self.ws.recv(timeout=remaining), wanted, method)
            if got is not None:
                return got

    def until(self, event: str, session: str = "") -> Message:
        kept = self._frames.kept(event, session)
        if kept is not None:
            return kept
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{event}: not seen within {self.timeout:g}s")
            message = json.loads(self.ws.recv(timeout=remaining))
            if _is(message, event, session):
                return dict(message)
            if "method" in message:
                self._frames.events.append(message)
