"""Domain errors, each carrying the gRPC status it maps to.

An error keeps the request field it is about (`field`, "" when none) and
the reason apart, as data, up to the edge: the gRPC servicer shows
`field: reason`, the hosted HTTP API puts the field in `fieldList` in its
own spelling. Anything else that escapes a handler becomes INTERNAL with a
generic message, so no stack trace, upstream text or secret reaches a client.
"""

from __future__ import annotations

import grpc


class WorkerError(Exception):
    """Base of errors whose message is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(self.message)

    @property
    def message(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


class InvalidArgument(WorkerError):
    """A request field is malformed."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(WorkerError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(WorkerError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(WorkerError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhausted(WorkerError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class Unavailable(WorkerError):
    code = grpc.StatusCode.UNAVAILABLE


class BrowserStartError(WorkerError):
    """The browser process did not come up; the session was cleaned up."""

    code = grpc.StatusCode.UNAVAILABLE


class Internal(WorkerError):
    """Something unexpected: the caller sees only that, the log the rest."""

    def __init__(self) -> None:
        super().__init__("", "internal error")
