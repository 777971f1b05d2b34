"""Where finished recordings go: an S3 bucket, or a local directory laid out
the same way (`<root>/<bucket>/<prefix>/<sessionId>/...`).

Calls here block (boto3); the uploader runs them in threads. Every object
and part carries a SHA-256 checksum the server verifies.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

BATCH_CONTENT_TYPE = "application/gzip"


class Sink(Protocol):
    multipart: bool

    def uri(self, key: str) -> str: ...
    def put_file(self, key: str, path: Path, sha256: str) -> None: ...
    def put_bytes(self, key: str, data: bytes, content_type: str) -> None: ...
    def create_multipart(self, key: str) -> str: ...
    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]: ...
    def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None: ...
    def abort_multipart(self, key: str, upload_id: str) -> None: ...
    def abort_all(self, key: str) -> None: ...


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


class S3Sink:
    multipart = True

    def __init__(self, client: Callable[[], Any], bucket: str) -> None:
        # The client is made on first use, in an uploader thread: making one
        # (and assuming a role) blocks on the network.
        self._client = client
        self.bucket = bucket

    @property
    def _s3(self) -> Any:
        return self._client()

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        with open(path, "rb") as body:
            self._s3.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=BATCH_CONTENT_TYPE,
                ChecksumSHA256=_b64(sha256),
            )

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        self._s3.put_object(
            Bucket=self.bucket,
            Key=key,
            Body=data,
            ContentType=content_type,
            ChecksumSHA256=_b64(hashlib.sha256(data).hexdigest()),
        )

    def create_multipart(self, key: str) -> str:
        answer = self._s3.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=BATCH_CONTENT_TYPE, ChecksumAlgorithm="SHA256"
        )
        return str(answer["UploadId"])

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        checksum = _b64(hashlib.sha256(data).hexdigest())
        answer = self._s3.upload_part(
            Bucket=self.bucket,
            Key=key,
            UploadId=upload_id,
            PartNumber=number,
            Body=data,
            ChecksumSHA256=checksum,
        )
        return {"PartNumber": number, "ETag": answer["ETag"], "ChecksumSHA256": checksum}

    def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        self._s3.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        s3 = self._s3
        # Already gone is what we wanted.
        with contextlib.suppress(s3.exceptions.NoSuchUpload):
            s3.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def abort_all(self, key: str) -> None:
        """Abort every multipart upload of exactly `key` (ids unknown)."""
        pages = self._s3.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=key
        )
        for page in pages:
            for upload in page.get("Uploads", []):
                if upload["Key"] == key:
                    self.abort_multipart(key, upload["UploadId"])


class LocalSink:
    """The same layout under a directory; files appear whole (rename)."""

    multipart = False

    def __init__(self, root: Path, bucket: str) -> None:
        self._base = root / bucket

    def uri(self, key: str) -> str:
        return (self._base / key).resolve().as_uri()

    def _target(self, key: str) -> Path:
        path = self._base / key
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def put_file(self, key: str, path: Path, sha256: str) -> None:
        target = self._target(key)
        tmp = target.with_name(target.name + ".tmp")
        shutil.copyfile(path, tmp)
        with open(tmp, "rb") as f:
            if hashlib.file_digest(f, "sha256").hexdigest() != sha256:
                tmp.unlink()
                raise OSError(f"{key}: copy does not match its checksum")
        os.replace(tmp, target)

    def put_bytes(self, key: str, data: bytes, content_type: str) -> None:
        target = self._target(key)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_bytes(data)
        os.replace(tmp, target)

    def create_multipart(self, key: str) -> str:
        raise NotImplementedError("local recordings are copied whole")

    def upload_part(self, key: str, upload_id: str, number: int, data: bytes) -> dict[str, Any]:
        raise NotImplementedError("local recordings are copied whole")

    def complete_multipart(self, key: str, upload_id: str, parts: list[dict[str, Any]]) -> None:
        raise NotImplementedError("local recordings are copied whole")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise NotImplementedError("local recordings are copied whole")

    def abort_all(self, key: str) -> None:
        raise NotImplementedError("local recordings are copied whole")
