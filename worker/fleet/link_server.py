"""A worker's end of the fleet link: it takes connections from gateways
that prove they hold the fleet's key, and answers each call by running the
same servicer method gRPC runs, in-process (as the hosted HTTP API does),
so a call's checks, refusals and metrics are the same whichever door it
came in by.

Calls on one connection run side by side. A call the gateway gives up on
(a cancel frame, or its connection closing) is cancelled here, as gRPC
cancels a handler whose client went away; one past its timeout too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import Any

import grpc
import structlog
from google.protobuf.message import DecodeError

from worker.api.rpc import InProcessContext
from worker.errors import Internal, WorkerError
from worker.fleet.link import (
    HANDSHAKE_TIMEOUT_S,
    LinkError,
    Method,
    encode,
    greet,
    methods,
    read_frame,
)
from worker.pb import link_pb2

log = structlog.get_logger(__name__)


class LinkServer:
    def __init__(self, servicers: dict[str, Any], key: bytes) -> None:
        self._servicers = servicers  # sandbox.proto's service name -> servicer
        self._key = key
        self._methods = methods()
        self._server: asyncio.Server | None = None
        self._open: dict[asyncio.StreamWriter, asyncio.Task[Any]] = {}

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the port."""
        self._server = await asyncio.start_server(self._connection, host, port)
        return int(self._server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self._server is None:
            return
        self._server.close()
        connections = list(self._open.values())
        for writer in list(self._open):
            writer.close()  # each connection's reader ends, cancelling its calls
        await asyncio.gather(*connections, return_exceptions=True)
        await self._server.wait_closed()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = str(writer.get_extra_info("peername"))
        try:
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await greet(reader, writer, self._key)
        except (LinkError, asyncio.IncompleteReadError, TimeoutError, OSError) as exc:
            log.warning("link.refused", peer=peer, reason=str(exc) or type(exc).__name__)
            await _close(writer)
            return
        task = asyncio.current_task()
        assert task is not None
        self._open[writer] = task
        calls: dict[int, asyncio.Task[None]] = {}
        try:
            await self._read(reader, writer, calls)
        except LinkError as exc:  # a gateway of the fleet, but a broken one
            log.warning("link.broken", peer=peer, reason=str(exc))
        finally:
            del self._open[writer]
            for call in calls.values():
                call.cancel()
            await _close(writer)

    async def _read(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        calls: dict[int, asyncio.Task[None]],
    ) -> None:
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                frame = await read_frame(reader)
                if frame.cancel:
                    task = calls.get(frame.call)
                    if task is not None:
                        task.cancel()
                    continue
                task = asyncio.ensure_future(self._answer(frame, writer))
                calls[frame.call] = task
                task.add_done_callback(functools.partial(_forget, calls, frame.call))

    async def _answer(self, frame: link_pb2.Frame, writer: asyncio.StreamWriter) -> None:
        reply = link_pb2.Frame(call=frame.call)
        try:
            method = self._methods.get(frame.method)
            if method is None:
                _refuse(reply, grpc.StatusCode.UNIMPLEMENTED, f"no method {frame.method!r}")
            else:
                reply.body = await self._run(method, frame)
        except WorkerError as err:
            reply.code, reply.field, reply.reason = err.code.value[0], err.field, err.reason
        except TimeoutError:
            _refuse(reply, grpc.StatusCode.DEADLINE_EXCEEDED, "the call ran out of time")
        except DecodeError:
            _refuse(reply, grpc.StatusCode.INVALID_ARGUMENT, "the request does not parse")
        except Exception:  # not a servicer's own refusal: generic, as over gRPC
            log.exception("link.internal_error", method=frame.method)
            _refuse(reply, grpc.StatusCode.INTERNAL, Internal().reason)
        if not writer.is_closing():
            writer.write(encode(reply))

    async def _run(self, method: Method, frame: link_pb2.Frame) -> bytes:
        service = frame.method.partition("/")[0]
        handler = getattr(self._servicers[service], method.handler)
        request = method.request.FromString(frame.body)
        async with asyncio.timeout(frame.timeout_s or None):
            answer = await handler(request, InProcessContext(frame.request_id))
        return bytes(answer.SerializeToString())


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()


def _forget(calls: dict[int, asyncio.Task[None]], number: int, _: object) -> None:
    calls.pop(number, None)


def _refuse(reply: link_pb2.Frame, code: grpc.StatusCode, reason: str) -> None:
    reply.code, reply.reason = code.value[0], reason
