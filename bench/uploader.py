"""Recording uploads vs. boto3's own `upload_fileobj`, same bytes, same S3.

A moto_server on loopback (started and stopped here) is the S3 API. The
recorder's batch writer puts N batches of incompressible events (~12 MB of
gzip each: every batch goes up as a multipart upload in 8 MiB parts) in a
spool; then, alternating in each round, the uploader sends them all (its
default concurrency, part reads from disk, SHA-256 on every part) and
boto3's managed transfer sends the same files one after another with its
defaults. Throughput is MB/s of compressed bytes confirmed by the server;
CPU is this process's, per MB. Prints one JSON object on its last line and
writes bench/results/uploader.json.

    python bench/uploader.py [--batches 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import signal
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3

from common import start_moto, write_results
from recorder.batch import BatchInfo, BatchWriter
from recorder.sink import S3Sink
from recorder.spool import Meter, write_session
from recorder.uploader import Uploader


def make_batches(directory: Path, count: int) -> list[BatchInfo]:
    writer = BatchWriter(directory, max_bytes=16 * 1024 * 1024, max_age_s=1e9)
    blob_count = 0
    infos: list[BatchInfo] = []
    while len(infos) < count:
        blob = base64.b64encode(os.urandom(64 * 1024)).decode()
        blob_count += 1
        line = f'{{"seq":{blob_count},"type":5,"data":{{"tag":"bench","payload":"{blob}"}}}}'
        infos += writer.write([(float(blob_count), line)], blob_count)
    return infos[:count]


async def ours(
    client: Any, bucket: str, spool: Path, infos: list[BatchInfo], run: int
) -> tuple[float, float]:
    directory = spool / f"s{run}"
    write_session(
        directory,
        {
            "sessionId": directory.name,
            "browserId": "bench",
            "startTime": 0.0,
            "destination": {"storage": "s3", "bucket": bucket, "prefix": "ours", "roleArn": ""},
        },
    )
    for info in infos:  # the same bytes, in this run's folder
        os.link(spool / "source" / info.file, directory / info.file)
    up = Uploader(spool, lambda d: S3Sink(lambda: client, d.bucket), Meter(1 << 40))
    cpu, wall = time.process_time(), time.perf_counter()
    for info in infos:
        up.closed(directory, info)
    if not await up.flush(600):
        raise RuntimeError("uploads did not finish")
    return time.perf_counter() - wall, time.process_time() - cpu


def theirs(client: Any, bucket: str, spool: Path, infos: list[BatchInfo]) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    for info in infos:
        with open(spool / "source" / info.file, "rb") as f:
            client.upload_fileobj(f, bucket, f"theirs/{info.file}")
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-uploader-") as tmp:
        scratch = Path(tmp)
        os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"})
        moto, endpoint = start_moto(scratch)
        try:
            results = run(scratch, endpoint, args.batches, args.rounds)
        finally:
            os.killpg(moto.pid, signal.SIGTERM)
            moto.wait(10)
    write_results("uploader", results)


def run(scratch: Path, endpoint: str, batches: int, rounds: int) -> dict[str, Any]:
    spool = scratch / "spool"
    (spool / "source").mkdir(parents=True)
    infos = make_batches(spool / "source", batches)
    megabytes = sum(i.bytes for i in infos) / 1e6
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    bucket = "bench"
    client.create_bucket(Bucket=bucket)
    ours_mbps, theirs_mbps, ours_cpu, theirs_cpu = [], [], [], []
    for r in range(rounds):
        order = ("ours", "theirs") if r % 2 == 0 else ("theirs", "ours")
        for who in order:
            if who == "ours":
                wall, cpu = asyncio.run(ours(client, bucket, spool, infos, r))
                ours_mbps.append(megabytes / wall)
                ours_cpu.append(cpu / megabytes)
            else:
                wall, cpu = theirs(client, bucket, spool, infos)
                theirs_mbps.append(megabytes / wall)
                theirs_cpu.append(cpu / megabytes)
        for item in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=item["Key"])  # moto keeps them in RAM
    left = client.list_multipart_uploads(Bucket=bucket).get("Uploads", [])
    return {
        "batches": batches,
        "megabytes_per_round": round(megabytes, 1),
        "rounds": rounds,
        "ours_mb_per_s": round(statistics.median(ours_mbps), 1),
        "boto3_upload_fileobj_mb_per_s": round(statistics.median(theirs_mbps), 1),
        "throughput_ratio": round(statistics.median(ours_mbps) / statistics.median(theirs_mbps), 3),
        "ours_cpu_s_per_mb": round(statistics.median(ours_cpu), 4),
        "boto3_cpu_s_per_mb": round(statistics.median(theirs_cpu), 4),
        "multipart_uploads_left": len(left),
        "server": "moto_server on loopback",
    }


if __name__ == "__main__":
    main()
