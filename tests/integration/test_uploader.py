"""The uploader against a real S3 API (moto_server): multipart while a batch
fills, fallback when streaming fails, and aborting what a killed daemon
left half uploaded."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path
from typing import Any

import boto3

from helpers.faults import report_fault
from helpers.upstreams import FaultProxy, SecretsManager
from recorder.batch import BatchInfo, BatchWriter, write_json
from recorder.sink import S3Sink
from recorder.spool import Meter, write_session
from recorder.uploader import Uploader

PART = 5 * 1024 * 1024


def uploader(root: Path, endpoint: str) -> Uploader:
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return Uploader(
        root,
        lambda d: S3Sink(lambda: client, d.bucket),
        Meter(1 << 40),
        part_bytes=PART,
        retry_max_s=1.0,
    )


def session(root: Path, bucket: str, name: str = "s1") -> Path:
    directory = root / name
    destination = {"storage": "s3", "bucket": bucket, "prefix": "p", "roleArn": ""}
    write_session(
        directory,
        {"sessionId": name, "browserId": "b", "startTime": 1.0, "destination": destination},
    )
    return directory


def incompressible(count: int) -> list[tuple[float, str]]:
    blob = base64.b64encode(os.urandom(96 * 1024)).decode()
    return [(float(i), f'{{"seq":{i + 1},"data":"{blob}"}}') for i in range(count)]


async def fill(up: Uploader, directory: Path, events: list[tuple[float, str]]) -> BatchInfo:
    writer = BatchWriter(directory, max_bytes=1 << 40, max_age_s=1e9)
    for start in range(0, len(events), 10):
        writer.write(events[start : start + 10], start + 1)
        assert writer.info is not None
        up.grew(directory, writer.info.n, writer.open_size)
    info = writer.close()
    assert info is not None
    return info


def uploads(s3: Any, bucket: str) -> list[Any]:
    return s3.list_multipart_uploads(Bucket=bucket).get("Uploads", [])


async def test_a_large_batch_streams_in_parts_while_it_fills(
    tmp_path: Path, moto: SecretsManager
) -> None:
    bucket, s3 = moto.bucket(), moto.s3()
    up = uploader(tmp_path, moto.endpoint)
    directory = session(tmp_path, bucket)
    info = await fill(up, directory, incompressible(150))  # ~14 MiB
    await up.flush(30)  # only the parts: the batch is still open for S3
    assert len(uploads(s3, bucket)) == 1
    up.closed(directory, info)
    assert await up.flush(30)
    body = s3.get_object(Bucket=bucket, Key="p/s1/batch-1.ndjson.gz")["Body"].read()
    assert len(body) == info.bytes > 2 * PART
    assert hashlib.sha256(body).hexdigest() == info.sha256
    assert not uploads(s3, bucket)
    assert not (directory / "batch-1.ndjson.gz").exists()


async def test_a_failed_stream_is_aborted_and_the_closed_batch_uploaded_whole(
    tmp_path: Path, moto: SecretsManager, s3_faults: FaultProxy
) -> None:
    bucket, s3 = moto.bucket(), moto.s3()
    up = uploader(tmp_path, f"http://127.0.0.1:{s3_faults.port}")
    directory = session(tmp_path, bucket)
    events = incompressible(150)
    writer = BatchWriter(directory, max_bytes=1 << 40, max_age_s=1e9)
    writer.write(events[:70], 1)
    assert writer.info is not None
    up.grew(directory, 1, writer.open_size)
    await up.flush(30)
    s3_faults.set("refuse")  # the next parts fail
    writer.write(events[70:], 71)
    up.grew(directory, 1, writer.open_size)
    await up.flush(30)
    s3_faults.set("pass")
    info = writer.close()
    assert info is not None
    up.closed(directory, info)
    assert await up.flush(60)
    body = s3.get_object(Bucket=bucket, Key="p/s1/batch-1.ndjson.gz")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == info.sha256
    assert not uploads(s3, bucket)


async def test_restart_aborts_a_multipart_upload_a_killed_daemon_left(
    tmp_path: Path, moto: SecretsManager
) -> None:
    bucket, s3 = moto.bucket(), moto.s3()
    directory = session(tmp_path, bucket)
    key = "p/s1/batch-1.ndjson.gz"
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    write_json(directory / "batch-1.upload", {"key": key, "uploadId": upload_id, "file": "x"})
    write_json(directory / "end.json", {"endTime": 2.0, "reason": "STOPPED"})
    up = uploader(tmp_path, moto.endpoint)
    assert await up.recover("WORKER_RESTARTED") == 1
    assert await up.flush(30)
    assert not uploads(s3, bucket)
    assert s3.head_object(Bucket=bucket, Key="p/s1/metadata.json")
    assert not directory.exists()


async def test_restart_aborts_uploads_created_as_the_daemon_was_killed(
    tmp_path: Path, moto: SecretsManager
) -> None:
    bucket, s3 = moto.bucket(), moto.s3()
    directory = session(tmp_path, bucket)
    key = "p/s1/batch-1.ndjson.gz"
    # The daemon wrote its intent, S3 created the upload, and the daemon
    # died before it learnt the id: twice, as if retried.
    write_json(directory / "batch-1.upload", {"key": key, "uploadId": "", "file": "x"})
    for _ in range(2):
        s3.create_multipart_upload(Bucket=bucket, Key=key)
    other = s3.create_multipart_upload(Bucket=bucket, Key=key + ".other")["UploadId"]
    write_json(directory / "end.json", {"endTime": 2.0, "reason": "STOPPED"})
    up = uploader(tmp_path, moto.endpoint)
    assert await up.recover("WORKER_RESTARTED") == 1
    assert await up.flush(30)
    left = uploads(s3, bucket)
    assert [u["UploadId"] for u in left] == [other]  # only that key's were ours
    s3.abort_multipart_upload(Bucket=bucket, Key=key + ".other", UploadId=other)
    assert not directory.exists()
    report_fault(
        "daemon killed after S3 created a multipart upload, before the id was saved (twice)",
        "restart aborts both uploads of that key, leaves another key's alone, finishes the"
        " recording",
        "n/a",
        "n/a (the abort only)",
    )
