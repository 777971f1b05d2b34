"""Objects a Start reads from S3 (extension ZIPs, policy files): fetched
with the worker's own credentials, bounded in size before a byte of the body
is read, and cached on disk by bucket, key and version (or ETag when no
version is named), so the hundredth session with an extension costs one
HEAD request, or none when the version is pinned.

Errors name the field and the object, never the worker's credentials.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from recorder.clients import Clients
from worker.errors import FailedPrecondition, InvalidArgument, Unavailable
from worker.sessions.model import S3Object


class S3Objects:
    def __init__(self, cache_dir: Path, endpoint_url: str, timeout_s: float, cache_mb: int):
        self._dir = cache_dir
        self._clients = Clients(endpoint_url=endpoint_url, timeout_s=timeout_s)
        self._cache_bytes = cache_mb * 1024 * 1024
        self._lock = threading.Lock()  # one writer prunes the cache at a time

    async def read(self, field: str, obj: S3Object, max_bytes: int) -> bytes:
        return await asyncio.to_thread(self._read, field, obj, max_bytes)

    def _read(self, field: str, obj: S3Object, max_bytes: int) -> bytes:
        pinned = self._path(obj, obj.version_id) if obj.version_id else None
        if pinned is not None and pinned.exists():
            return pinned.read_bytes()
        head = self._call(field, obj, "head_object")
        size = int(head.get("ContentLength", 0))
        if size > max_bytes:
            raise InvalidArgument(field, f"{obj} is {size} bytes; the limit is {max_bytes}")
        path = pinned or self._path(obj, str(head.get("ETag", "")).strip('"'))
        if path.exists():
            return path.read_bytes()
        body = self._call(field, obj, "get_object")["Body"]
        data = body.read(max_bytes + 1)
        body.close()
        if len(data) > max_bytes:
            raise InvalidArgument(field, f"{obj} is larger than {max_bytes} bytes")
        self._keep(path, data)
        return bytes(data)

    def _path(self, obj: S3Object, tag: str) -> Path:
        name = hashlib.sha256(f"{obj.bucket}\0{obj.key}\0{tag}".encode()).hexdigest()
        return self._dir / name

    def _call(self, field: str, obj: S3Object, operation: str) -> dict[str, Any]:
        from botocore import exceptions as boto_errors

        args = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            args["VersionId"] = obj.version_id
        try:
            answer: dict[str, Any] = getattr(self._clients.s3(), operation)(**args)
            return answer
        except boto_errors.ClientError as exc:
            raise _refusal(field, obj, exc.response) from None
        except boto_errors.NoCredentialsError:
            raise FailedPrecondition(
                field, f"the worker has no AWS credentials to read {obj}"
            ) from None
        except (boto_errors.BotoCoreError, OSError) as exc:
            raise Unavailable(
                field, f"S3 did not answer for {obj} ({type(exc).__name__})"
            ) from None

    def _keep(self, path: Path, data: bytes) -> None:
        """Write into the cache (whole files only: a rename), then drop the
        least recently written files past the cache's size."""
        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.part")
        partial.write_bytes(data)
        partial.replace(path)
        with self._lock:
            files = sorted(_cached(self._dir))
            total = sum(size for _, size, _ in files)
            for _, size, old in files:
                if total <= self._cache_bytes or old == path:
                    break
                old.unlink(missing_ok=True)
                total -= size


def _cached(directory: Path) -> list[tuple[float, int, Path]]:
    found = []
    for path in directory.iterdir():
        if path.suffix == ".part":
            continue  # another thread's, about to be renamed
        with contextlib.suppress(FileNotFoundError):
            st = path.stat()
            found.append((st.st_mtime, st.st_size, path))
    return found


def _refusal(field: str, obj: S3Object, response: dict[str, Any]) -> Exception:
    code = str(response.get("Error", {}).get("Code", "error"))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    if status >= 500 or code in ("SlowDown", "ServiceUnavailable"):
        return Unavailable(field, f"S3 failed for {obj} ({code}, HTTP {status}); try again")
    if status == 404 or code in ("NoSuchKey", "NoSuchBucket", "NoSuchVersion", "404"):
        return InvalidArgument(field, f"{obj} does not exist")
    if status == 403:
        return FailedPrecondition(field, f"{obj} cannot be read by the worker (access denied)")
    return InvalidArgument(field, f"{obj} cannot be read ({code}, HTTP {status})")
