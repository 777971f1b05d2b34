"""Request validation: limits and patterns of the hosted API, one field at a time.

Pure functions over plain values; each failure raises InvalidArgument naming
the field (proto spelling) and the reason, before any resource is touched.
"""

from __future__ import annotations

import re

from worker.errors import InvalidArgument
from worker.model import Recording, Viewport

BROWSER_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_]{0,47}")
BROWSER_ID = re.compile(r"[a-zA-Z][a-zA-Z0-9_.]{0,47}(-[a-zA-Z0-9]{10})?")
SESSION_ID = re.compile(r"[0-9a-zA-Z]{1,40}")
CLIENT_TOKEN = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){32,255}")
SECRET_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:[a-zA-Z0-9/_+=.@-]{1,512}"
)
S3_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")

MAX_TIMEOUT_S = 28800
DEFAULT_TIMEOUT_S = 3600
MAX_CERTIFICATES = 10


def _check(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise InvalidArgument(field, reason)


def _printable(value: str) -> bool:
    return value.isprintable()


def browser_name(name: str) -> str:
    _check(bool(name), "name", "is required")
    _check(
        BROWSER_NAME.fullmatch(name) is not None,
        "name",
        "must start with a letter and hold only letters, digits and '_' (at most 48)",
    )
    return name


def description(text: str) -> str:
    _check(len(text) <= 4096, "description", "must be at most 4096 characters")
    return text


def recording(enabled: bool, bucket: str, prefix: str) -> Recording:
    if not enabled:
        return Recording(False, bucket, prefix)
    _check(bool(bucket), "recording.s3_location.bucket", "is required when recording is enabled")
    _check(
        S3_BUCKET.fullmatch(bucket) is not None,
        "recording.s3_location.bucket",
        "must be a valid S3 bucket name (3-63 lower-case letters, digits, '.' and '-')",
    )
    _check(len(prefix) <= 1024, "recording.s3_location.prefix", "must be at most 1024 characters")
    _check(_printable(prefix), "recording.s3_location.prefix", "must be printable text")
    return Recording(True, bucket, prefix.strip("/"))


def certificate_arns(field: str, arns: list[str]) -> tuple[str, ...]:
    _check(len(arns) <= MAX_CERTIFICATES, field, f"at most {MAX_CERTIFICATES} certificates")
    for i, arn in enumerate(arns):
        name = f"{field}[{i}].location.secrets_manager.secret_arn"
        _check(bool(arn), name, "is required")
        _check(SECRET_ARN.fullmatch(arn) is not None, name, "is not a Secrets Manager secret ARN")
    return tuple(arns)


def browser_id(value: str, field: str = "browser_identifier") -> str:
    _check(bool(value), field, "is required")
    _check(
        len(value) <= 128 and BROWSER_ID.fullmatch(value) is not None,
        field,
        "is not a browser id",
    )
    return value


def session_id(value: str) -> str:
    _check(bool(value), "session_id", "is required")
    _check(SESSION_ID.fullmatch(value) is not None, "session_id", "must match [0-9a-zA-Z]{1,40}")
    return value


def session_name(name: str) -> str:
    _check(len(name) <= 100, "name", "must be at most 100 characters")
    _check(_printable(name), "name", "must be printable text")
    return name


def session_timeout(seconds: int) -> int:
    if seconds == 0:
        return DEFAULT_TIMEOUT_S
    _check(
        1 <= seconds <= MAX_TIMEOUT_S,
        "session_timeout_seconds",
        f"must be between 1 and {MAX_TIMEOUT_S}",
    )
    return seconds


def viewport(width: int, height: int, default: Viewport, present: bool) -> Viewport:
    if not present:
        return default
    _check(320 <= width <= 3840, "view_port.width", "must be between 320 and 3840")
    _check(240 <= height <= 2160, "view_port.height", "must be between 240 and 2160")
    return Viewport(width, height)


def client_token(token: str) -> str:
    if not token:
        return ""
    _check(
        33 <= len(token) <= 256 and CLIENT_TOKEN.fullmatch(token) is not None,
        "client_token",
        "must be 33-256 letters, digits and '-'",
    )
    return token


def max_results(value: int) -> int:
    if value == 0:
        return 10
    _check(1 <= value <= 100, "max_results", "must be between 1 and 100")
    return value


def next_token(value: str, pattern: re.Pattern[str]) -> str:
    if value:
        _check(pattern.fullmatch(value) is not None, "next_token", "is not a token from this API")
    return value
