"""Domain errors, each carrying the gRPC status it maps to.

The servicer turns these into status codes in one place; anything else that
escapes a handler becomes INTERNAL with a generic message, so no stack trace,
upstream text or secret reaches a client.
"""

from __future__ import annotations

import grpc


class WorkerError(Exception):
    """Base of errors whose message is safe to show to the caller."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgument(WorkerError):
    """A request field is malformed; the message starts with the field's name."""

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


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
