"""A gateway's end of the fleet link to one worker: connected on first
use (and again after a loss), one reader task that hands each reply to the
call waiting on its number, and every call in flight failed at once when
the connection drops, so none waits out its timeout on a dead worker.

A call the gateway stops waiting for (its timeout, or its own caller gone)
is cancelled at the worker too.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import grpc
import structlog

from worker.api.rpc import refusal
from worker.fleet.link import HANDSHAKE_TIMEOUT_S, LinkError, Method, encode, join, read_frame
from worker.listen import split_host_port
from worker.pb import link_pb2

log = structlog.get_logger(__name__)

_CODES = {code.value[0]: code for code in grpc.StatusCode}


class LinkDown(Exception):
    """The worker could not be reached, or went, before it answered."""


class _Connection:
    """One connection and the calls waiting on it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.waiting: dict[int, asyncio.Future[link_pb2.Frame]] = {}
        self.reading = asyncio.ensure_future(self._read(reader))

    @property
    def open(self) -> bool:
        return not self.reading.done() and not self.writer.is_closing()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await read_frame(reader)
                waiting = self.waiting.get(reply.call)
                if waiting is not None and not waiting.done():
                    waiting.set_result(reply)
        except (asyncio.IncompleteReadError, ConnectionError, LinkError):
            pass
        finally:
            self.writer.close()
            for waiting in self.waiting.values():
                if not waiting.done():
                    waiting.set_exception(LinkDown())

    def cancel(self, number: int) -> None:
        if self.open:
            self.writer.write(encode(link_pb2.Frame(call=number, cancel=True)))

    async def close(self) -> None:
        self.writer.close()
        self.reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reading
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


class WorkerLink:
    def __init__(self, address: str, key: bytes) -> None:
        self.address = address
        self._key = key
        self._connection: _Connection | None = None
        self._numbers = 0
        self._connecting = asyncio.Lock()

    async def call(self, method: Method, request: Any, timeout: float, request_id: str) -> Any:
        """The worker's answer; its refusal as the WorkerError it was there;
        LinkDown or TimeoutError when it did not answer."""
        connection = await self._connected(timeout)
        self._numbers += 1
        number = self._numbers
        waiting = asyncio.get_running_loop().create_future()
        connection.waiting[number] = waiting
        frame = link_pb2.Frame(
            call=number, method=method.name, body=request.SerializeToString(),
            request_id=request_id, timeout_s=timeout,
        )  # fmt: skip
        try:
            connection.writer.write(encode(frame))
            async with asyncio.timeout(timeout):
                reply = await waiting
        except BaseException:  # timed out, or our caller gave up: so does the worker
            connection.cancel(number)
            raise
        finally:
            connection.waiting.pop(number, None)
        if reply.code:
            code = _CODES.get(reply.code, grpc.StatusCode.INTERNAL)
            raise refusal(code, reply.field, reply.reason)
        return method.answer.FromString(reply.body)

    async def _connected(self, timeout: float) -> _Connection:
        async with self._connecting:
            if self._connection is not None and self._connection.open:
                return self._connection
            host, port = split_host_port(self.address, "link")
            try:
                async with asyncio.timeout(min(timeout, HANDSHAKE_TIMEOUT_S)):
                    reader, writer = await asyncio.open_connection(host, port)
                    try:
                        await join(reader, writer, self._key)
                    except BaseException:
                        writer.close()
                        with contextlib.suppress(OSError):
                            await writer.wait_closed()
                        raise
            except LinkError as exc:
                log.warning("link.refused", worker=self.address, reason=str(exc))
                raise LinkDown() from None
            except (OSError, TimeoutError, asyncio.IncompleteReadError):
                raise LinkDown() from None
            self._connection = _Connection(reader, writer)
            return self._connection

    async def close(self) -> None:
        if self._connection is not None:
            await self._connection.close()
