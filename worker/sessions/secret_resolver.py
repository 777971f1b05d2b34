"""Secrets a request refers to: Secrets Manager ARNs and mounted files.

Proxy credentials and CA certificates name where they live, never what they
are. A reference is either a Secrets Manager ARN (fetched with boto3, which
honours `AWS_ENDPOINT_URL` and the standard credential chain) or
`file:NAME`, a file under the worker's `secrets_dir` (a mounted Kubernetes
Secret). Errors name the field and the reference, never the content.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import threading
from pathlib import Path
from typing import Any

from worker.errors import FailedPrecondition, InvalidArgument, Unavailable

FILE_PREFIX = "file:"
SECRET_ARN = re.compile(
    r"arn:aws[a-z-]*:secretsmanager:([a-z0-9-]+):[0-9]{12}:secret:[a-zA-Z0-9/_+=.@-]{1,512}"
)
# A relative path of plain names: no "..", no absolute paths, no hidden parts.
SECRET_FILE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*(/[A-Za-z0-9_-][A-Za-z0-9._-]*)*")
MAX_SECRET_BYTES = 256 * 1024
# What a proxy's Basic credentials may hold: nothing that breaks the header.
USERNAME = re.compile(r"[A-Za-z0-9@._+=-]+")
FORBIDDEN_IN_PASSWORD = frozenset(":\"' \t\r\n")


def is_reference(value: str) -> bool:
    if value.startswith(FILE_PREFIX):
        return SECRET_FILE.fullmatch(value[len(FILE_PREFIX) :]) is not None
    return len(value) <= 2048 and SECRET_ARN.fullmatch(value) is not None


class SecretResolver:
    def __init__(self, secrets_dir: Path | None, timeout_s: float) -> None:
        self._dir = secrets_dir
        self._timeout_s = timeout_s
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    async def fetch(self, field: str, ref: str, holds: str = "text") -> str:
        """The secret's text; FailedPrecondition/Unavailable if unreadable,
        InvalidArgument if it is binary (`holds` says what it should hold)."""
        read = self._read_file if ref.startswith(FILE_PREFIX) else self._fetch_arn
        data = await asyncio.to_thread(read, field, ref)
        if isinstance(data, str):
            return data
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError:
            # Malformed input, not a missing secret: most often a DER
            # certificate where PEM text belongs.
            raise InvalidArgument(
                field, f"secret '{ref}' is binary (for example DER), not text: it must hold {holds}"
            ) from None

    def _read_file(self, field: str, ref: str) -> str | bytes:
        def refuse(why: str) -> FailedPrecondition:
            return FailedPrecondition(field, f"secret '{ref}' {why}")

        if self._dir is None:
            raise refuse("is a file reference, but the worker has no secrets_dir")
        root = self._dir.resolve()
        path = (root / ref[len(FILE_PREFIX) :]).resolve()
        # Kubernetes mounts are symlinks into ..data; they must stay inside.
        if not path.is_relative_to(root):
            raise refuse("points outside the worker's secrets_dir")
        try:
            if path.stat().st_size > MAX_SECRET_BYTES:
                raise refuse(f"is larger than {MAX_SECRET_BYTES} bytes")
            return path.read_bytes()
        except FileNotFoundError:
            raise refuse("does not exist") from None
        except OSError as exc:
            raise refuse(f"cannot be read ({exc.strerror})") from None

    def _client(self, region: str) -> Any:
        with self._lock:  # boto3 sessions are not thread-safe; clients are
            client = self._clients.get(region)
            if client is None:
                import boto3  # costs ~0.2 s: only workers that use secrets pay it
                from botocore.config import Config as BotoConfig

                client = boto3.session.Session().client(
                    "secretsmanager",
                    region_name=region,
                    config=BotoConfig(
                        connect_timeout=self._timeout_s,
                        read_timeout=self._timeout_s,
                        retries={"max_attempts": 2, "mode": "standard"},
                    ),
                )
                self._clients[region] = client
            return client

    def _fetch_arn(self, field: str, ref: str) -> str | bytes:
        from botocore import exceptions as boto_errors

        match = SECRET_ARN.fullmatch(ref)
        if match is None:
            raise FailedPrecondition(field, f"'{ref}' is not a Secrets Manager ARN")
        try:
            answer = self._client(match.group(1)).get_secret_value(SecretId=ref)
        except boto_errors.ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", "error"))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
            if status >= 500 or code in ("ThrottlingException", "InternalServiceError"):
                # Secrets Manager's own trouble, after botocore's retries:
                # the caller may try again; the secret itself may be fine.
                raise Unavailable(
                    field, f"Secrets Manager failed for '{ref}' ({code}, HTTP {status}); try again"
                ) from None
            why = {
                "ResourceNotFoundException": "does not exist",
                "AccessDeniedException": "cannot be read by the worker (access denied)",
            }.get(code, f"cannot be read ({code})")
            raise FailedPrecondition(field, f"secret '{ref}' {why}") from None
        except boto_errors.NoCredentialsError:
            raise FailedPrecondition(
                field, f"the worker has no AWS credentials to read secret '{ref}'"
            ) from None
        except (boto_errors.BotoCoreError, OSError) as exc:
            raise Unavailable(
                field, f"Secrets Manager did not answer for '{ref}' ({type(exc).__name__})"
            ) from None
        if "SecretString" in answer:
            return str(answer["SecretString"])
        return bytes(answer.get("SecretBinary", b""))


def basic_credentials(field: str, ref: str, text: str) -> str:
    """A `{"username", "password"}` secret as a Proxy-Authorization value.

    Messages name the secret, never a byte of its content."""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    where = f"secret '{ref}'"
    _require(
        isinstance(data, dict)
        and isinstance(data.get("username"), str)
        and isinstance(data.get("password"), str),
        field,
        f'{where} must hold JSON {{"username": ..., "password": ...}}',
    )
    username, password = data["username"], data["password"]
    _require(
        USERNAME.fullmatch(username) is not None,
        field,
        f"{where}: username must be letters, digits and @._+=- only",
    )
    _require(
        bool(password) and not FORBIDDEN_IN_PASSWORD.intersection(password),
        field,
        f"{where}: password must be non-empty, without colons, spaces, newlines or quotes",
    )
    token = base64.b64encode(f"{username}:{password}".encode()).decode()
    return f"Basic {token}"


def _require(ok: bool, field: str, reason: str) -> None:
    if not ok:
        raise InvalidArgument(field, reason)
