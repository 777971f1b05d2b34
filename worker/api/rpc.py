"""How every servicer's call is made and refused, the worker's and the
gateway's alike: one place maps errors. A WorkerError becomes its own status
code and message (its field also rides in trailing metadata, so a gateway
forwarding the call can rebuild the error exactly); anything else becomes
INTERNAL with a generic message and a logged traceback, so no stack, secret
or upstream text reaches a caller.
"""

from __future__ import annotations

import functools
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog

from worker.errors import (
    AlreadyExists,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    WorkerError,
)
from worker.metrics import DaemonMetrics

log = structlog.get_logger(__name__)

R = TypeVar("R")
# Trailing metadata of a refusal: that a servicer chose it (as against a
# status gRPC made up for a broken connection), and the refused field.
REFUSED_KEY, FIELD_KEY = "sandbox-refused", "sandbox-field"


class InProcessContext:
    """What the hosted HTTP API passes for a gRPC context when it calls a
    servicer in-process: its request id, and no status codes: a domain error
    reaches the HTTP edge as itself, field and reason kept apart."""

    def __init__(self, request_id: str) -> None:
        self._metadata = (("x-request-id", request_id),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def rpc(
    handler: Callable[[Any, Any, Any], Awaitable[R]],
) -> Callable[[Any, Any, Any], Awaitable[R]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get("x-request-id", "")) or secrets.token_hex(8)
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=handler.__name__)
        metrics: DaemonMetrics = self.metrics
        started, code = time.perf_counter(), "OK"
        refused: WorkerError = Internal()
        try:
            return await handler(self, request, context)
        except WorkerError as err:
            code = err.code.name
            log.info("rpc.refused", code=code, detail=err.message)
            refused = err
        except Exception:
            code = "INTERNAL"
            log.exception("rpc.internal_error")
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "rpc")
            metrics.rpc_requests.labels(handler.__name__, code).inc()
            metrics.rpc_seconds.labels(handler.__name__).observe(time.perf_counter() - started)
        if isinstance(context, InProcessContext):
            raise refused from None  # the HTTP edge maps it, field and reason apart
        # Aborted out here, not in the except blocks, with the refusal's
        # parts only: gRPC keeps its abort error a while, and as that
        # error's context the refusal, with every frame of the call in its
        # traceback (a failed Start's session among them), would stay too.
        status, field, message = refused.code, refused.field, refused.message
        del refused
        context.set_trailing_metadata(((REFUSED_KEY, "1"), (FIELD_KEY, field)))
        await context.abort(status, message)
        raise AssertionError("unreachable: abort raises")

    return wrapper


# Codes a forwarded call may answer with, as the errors that carry them.
_BY_CODE: dict[grpc.StatusCode, type[WorkerError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        ResourceExhausted,
        Unavailable,
    )
}


def refused_on_purpose(error: grpc.aio.AioRpcError) -> bool:
    return dict(error.trailing_metadata() or ()).get(REFUSED_KEY) == "1"


def rebuild(error: grpc.aio.AioRpcError) -> WorkerError:
    """A refusal from another process (a worker behind a gateway) as the
    error it was there: field and reason apart. A code no worker refuses
    with on purpose becomes a generic INTERNAL: its text stays unseen."""
    trailing = dict(error.trailing_metadata() or ())
    field = str(trailing.get(FIELD_KEY, ""))
    details = error.details() or ""
    reason = details[len(field) + 2 :] if field and details.startswith(f"{field}: ") else details
    return refusal(error.code(), field, reason)


def refusal(code: grpc.StatusCode, field: str, reason: str) -> WorkerError:
    """The error a refusal's code, field and reason make; a code no worker
    refuses with on purpose is a generic INTERNAL."""
    kind = _BY_CODE.get(code)
    return Internal() if kind is None else kind(field, reason)
