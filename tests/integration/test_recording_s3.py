"""Recordings to S3 (moto_server on loopback): batches readable while the
session runs, metadata.json last, nothing lost when S3 goes away for 30 s."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from helpers.daemon import daemon
from helpers.faults import report_fault
from helpers.recordings import contiguous, custom, drive, events_of, recording_browser, s3_batches
from helpers.upstreams import FaultProxy, FlakyHTTP, SecretsManager
from helpers.waits import eventually
from helpers.workers import (
    connected_page,
    make_config,
    running_worker,
    session_page,
    worker_processes,
)
from recorder import replay
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SECRETS = ("hunter2-password", "fetch-secret-value", "cookie-secret-value")


def s3_config(tmp_path: Path, endpoint: str = "", **fields: Any) -> Any:
    return make_config(
        tmp_path,
        recording_storage="s3",
        s3_endpoint_url=endpoint,
        recording_batch_age_s=1.0,
        **fields,
    )


async def test_batches_are_in_s3_before_the_session_stops_and_metadata_after(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    async with running_worker(s3_config(tmp_path)) as worker:
        browser_id = await recording_browser(worker, "s3rec", prefix="team/a", bucket=bucket)
        async with session_page(worker, browser_identifier=browser_id) as (page, started):
            await drive(page, web)
            folder = f"team/a/{started.session_id}/"
            during = await eventually(lambda: _listed(moto, bucket, folder), timeout=15)
            assert f"{folder}batch-1.ndjson.gz" in during
            assert f"{folder}metadata.json" not in during
        objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=20)
        got = await worker.get(started.session_id, browser_id)
    assert got.session_replay_artifact == f"s3://{bucket}/{folder}"
    meta = json.loads(objects[f"{folder}metadata.json"])
    batches = s3_batches(objects)
    events = events_of(batches)
    assert contiguous(events) and meta["complete"] is True
    assert meta["eventCount"] == len(events) == sum(b["eventCount"] for b in meta["batches"])
    for entry, data in zip(meta["batches"], batches, strict=True):
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
    assert any("order sent by Ada" in c["text"] for c in custom(events, "console"))
    assert any("data.json" in n["url"] for n in custom(events, "network"))
    meta_read, events_read = replay.load(f"s3://{bucket}/{folder}", moto.s3())
    assert meta_read == meta and len(events_read) == len(events)
    everything = b"".join(objects.values()) + json.dumps(events).encode()
    for secret in SECRETS:
        assert secret.encode() not in everything


async def test_s3_unreachable_for_30s_mid_session_loses_no_batch(
    tmp_path: Path, web: str, moto: SecretsManager, s3_faults: FaultProxy
) -> None:
    bucket = moto.bucket()
    config = s3_config(tmp_path, f"http://127.0.0.1:{s3_faults.port}")
    async with running_worker(config) as worker:
        browser_id = await recording_browser(worker, "faulty", bucket=bucket)
        async with session_page(worker, browser_identifier=browser_id) as (page, started):
            folder = f"runs/{started.session_id}/"
            await drive(page, web)
            await eventually(lambda: _listed(moto, bucket, folder), timeout=15)
            for mode in ("refuse", "stall"):  # 15 s of resets, 15 s of silence
                s3_faults.set(mode)
                for i in range(15):
                    await page.evaluate(f"console.log('during outage {mode} {i}')")
                    await asyncio.sleep(1)
            spooled = list((config.spool_dir / started.session_id).glob("batch-*.ndjson.gz"))
            assert spooled, "batches made during the outage wait in the spool"
            s3_faults.set("pass")
        objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=60)
        retries = worker.server.metrics.recording_retries
    meta = json.loads(objects[f"{folder}metadata.json"])
    events = events_of(s3_batches(objects))
    assert contiguous(events) and meta["complete"] is True
    assert len(meta["batches"]) == len(s3_batches(objects)) >= 10
    texts = {c["text"] for c in custom(events, "console")}
    assert {f"during outage {m} {i}" for m in ("refuse", "stall") for i in range(15)} <= texts
    retried = sum(s.value for m in retries.collect() for s in m.samples if s.name.endswith("total"))
    assert retried > 0
    assert not moto.s3().list_multipart_uploads(Bucket=bucket).get("Uploads")
    report_fault(
        "S3 refuses connections for 15 s, then accepts and never answers for 15 s",
        f"{len(meta['batches'])} batches uploaded after, {retried:.0f} retries counted,"
        " 0 multipart uploads left",
        "session ran on",
        f"0 of {len(events)} events; recording complete",
    )


async def test_a_daemon_killed_mid_multipart_upload_leaves_no_upload_and_loses_nothing_kept(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket, s3 = moto.bucket(), moto.s3()
    state = tmp_path / "state"
    env = {
        "SANDBOX_RECORDING_STORAGE": "s3",
        "SANDBOX_S3_ENDPOINT_URL": moto.endpoint,
        # One big batch that streams to S3 in 5 MiB parts while it fills.
        "SANDBOX_RECORDING_PART_BYTES": str(5 * 1024 * 1024),
        "SANDBOX_RECORDING_BATCH_BYTES": str(256 * 1024 * 1024),
        "SANDBOX_RECORDING_BATCH_AGE_S": "600",
    }
    with daemon(state, env=env) as (proc, info):
        channel = grpc.aio.insecure_channel(info["grpc"])
        sessions = pb_grpc.BrowserSessionsStub(channel)
        worker = SimpleNamespace(browsers=pb_grpc.BrowsersStub(channel))
        browser_id = await recording_browser(worker, "killed_mid_part", bucket=bucket)
        started = await sessions.StartBrowserSession(
            pb.StartBrowserSessionRequest(browser_identifier=browser_id)
        )
        other = await sessions.StartBrowserSession(pb.StartBrowserSessionRequest())
        async with connected_page(started) as page:
            await page.goto(f"{web}/record.html")

            async def streaming() -> bool:
                await page.evaluate(NOISE)  # ~0.5 MB that gzip cannot shrink much
                return bool(s3.list_multipart_uploads(Bucket=bucket).get("Uploads"))

            await eventually(streaming, timeout=60)
            os.killpg(proc.pid, signal.SIGKILL)  # sessions, uploads and all
            proc.wait(10)
        await channel.close()
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads"), "one was in flight"
    folder = f"runs/{started.session_id}/"
    with daemon(state, env=env) as (_, info):
        objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=60)
        channel = grpc.aio.insecure_channel(info["grpc"])
        sessions = pb_grpc.BrowserSessionsStub(channel)
        ended = [
            await sessions.GetBrowserSession(
                pb.GetBrowserSessionRequest(session_id=s.session_id, browser_identifier=b)
            )
            for s, b in ((started, browser_id), (other, ""))
        ]
        await channel.close()
        assert not worker_processes(state)
        assert not list((state / "sessions").iterdir())
    assert [(e.status, e.termination_reason) for e in ended] == [
        (pb.TERMINATED, pb.WORKER_RESTARTED)
    ] * 2
    assert not s3.list_multipart_uploads(Bucket=bucket).get("Uploads")
    meta = json.loads(objects[f"{folder}metadata.json"])
    events = events_of(s3_batches(objects))
    assert meta["complete"] is False and meta["terminationReason"] == "WORKER_RESTARTED"
    assert contiguous(events) and len(events) == meta["eventCount"] > 0
    report_fault(
        "daemon SIGKILLed with two live sessions and a batch streaming to S3 in parts",
        "restart kills the browsers, aborts the multipart upload, uploads the spooled batch"
        " whole; both sessions TERMINATED WORKER_RESTARTED",
        "n/a (one daemon)",
        f"{len(events)} events uploaded, as many as the spool recorded, seq contiguous;"
        " recording marked incomplete",
    )


def _listed(moto: SecretsManager, bucket: str, prefix: str) -> list[str]:
    listed = moto.s3().list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [o["Key"] for o in listed]


def _finished(moto: SecretsManager, bucket: str, prefix: str) -> dict[str, bytes] | None:
    if f"{prefix}metadata.json" not in _listed(moto, bucket, prefix):
        return None
    return moto.objects(bucket, prefix)


async def test_a_killed_daemons_spool_is_uploaded_at_restart_and_marked_incomplete(
    tmp_path: Path, web: str, moto: SecretsManager, s3_faults: FaultProxy
) -> None:
    bucket = moto.bucket()
    state = tmp_path / "state"
    env = {
        "SANDBOX_RECORDING_STORAGE": "s3",
        "SANDBOX_S3_ENDPOINT_URL": f"http://127.0.0.1:{s3_faults.port}",
        "SANDBOX_RECORDING_BATCH_AGE_S": "1",
    }
    with daemon(state, env=env) as (proc, info):
        channel = grpc.aio.insecure_channel(info["grpc"])
        browsers = pb_grpc.BrowsersStub(channel)
        sessions = pb_grpc.BrowserSessionsStub(channel)
        worker = SimpleNamespace(browsers=browsers)
        browser_id = await recording_browser(worker, "killed", bucket=bucket)
        started = await sessions.StartBrowserSession(
            pb.StartBrowserSessionRequest(browser_identifier=browser_id)
        )
        s3_faults.set("refuse")  # everything stays in the spool
        async with connected_page(started) as page:
            await drive(page, web)
            spool = state / "spool" / started.session_id

            async def two_batches_closed() -> bool:
                await page.evaluate("console.log('while S3 is away')")
                return len(list(spool.glob("batch-*.json"))) >= 2

            await eventually(two_batches_closed, timeout=15)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        await channel.close()
    s3_faults.set("pass")
    folder = f"runs/{started.session_id}/"
    with daemon(state, env=env):
        objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=30)
        assert not spool.exists()
    meta = json.loads(objects[f"{folder}metadata.json"])
    events = events_of(s3_batches(objects))
    assert meta["complete"] is False and meta["terminationReason"] == "WORKER_RESTARTED"
    assert "the worker stopped" in meta["incompleteReasons"][0]
    assert contiguous(events) and len(events) == meta["eventCount"] > 0
    assert "Order form" in json.dumps(events)
    report_fault(
        "daemon SIGKILLed with a recorded session and spooled batches (S3 away)",
        "restart uploads the spool; session TERMINATED WORKER_RESTARTED; metadata says why",
        "n/a (one daemon)",
        f"{len(events)} events uploaded, as many as the spool recorded, seq contiguous;"
        " recording marked incomplete",
    )


async def test_a_full_spool_drops_events_counts_them_and_marks_the_recording_incomplete(
    tmp_path: Path, web: str, moto: SecretsManager, s3_faults: FaultProxy
) -> None:
    bucket = moto.bucket()
    config = s3_config(tmp_path, f"http://127.0.0.1:{s3_faults.port}", recording_spool_max_mb=1)
    async with running_worker(config) as worker:
        browser_id = await recording_browser(worker, "small_spool", bucket=bucket)
        s3_faults.set("refuse")
        async with session_page(worker, browser_identifier=browser_id) as (page, started):
            await page.goto(f"{web}/record.html")
            await page.wait_for_timeout(300)
            for _ in range(6):  # ~3 MB of text that gzip cannot shrink much
                await page.evaluate(NOISE)
                await page.wait_for_timeout(300)
            s3_faults.set("pass")
        folder = f"runs/{started.session_id}/"
        objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=60)
        metrics = worker.server.metrics
        dropped = metrics.recording_dropped.labels("spool")._value.get()
        # Counted once the uploader has confirmed metadata.json, a moment
        # after S3 lists it.
        finished = metrics.recordings_finished.labels("false")
        await eventually(lambda: finished._value.get() == 1, timeout=10)
    meta = json.loads(objects[f"{folder}metadata.json"])
    assert meta["complete"] is False and meta["droppedEvents"] == dropped > 0
    assert any("spool was full" in r for r in meta["incompleteReasons"])
    events = events_of(s3_batches(objects))
    assert events and len(events) == meta["eventCount"]  # what was kept is whole
    report_fault(
        "spool reaches SANDBOX_RECORDING_SPOOL_MAX_MB (1 MiB) while S3 is away",
        "new events dropped and counted (metric, metadata); kept batches uploaded later",
        "session ran on",
        f"{dropped:.0f} events dropped by policy, all counted; 0 kept events lost",
    )


@contextlib.contextmanager
def small_disk(path: Path, size: str) -> Iterator[None]:
    """A tmpfs of `size` mounted at `path`: a disk that really fills."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


async def test_a_full_spool_disk_drops_events_says_so_and_the_daemon_stays_up(
    tmp_path: Path, web: str, moto: SecretsManager, s3_faults: FaultProxy
) -> None:
    bucket = moto.bucket()
    spool = tmp_path / "small-spool"
    with small_disk(spool, "3m"):
        config = s3_config(
            tmp_path, f"http://127.0.0.1:{s3_faults.port}", recording_spool_dir=spool
        )
        async with running_worker(config) as worker:
            browser_id = await recording_browser(worker, "small_disk", bucket=bucket)
            s3_faults.set("refuse")  # nothing leaves the spool: the disk fills
            async with session_page(worker, browser_identifier=browser_id) as (page, started):
                await page.goto(f"{web}/record.html")
                for _ in range(8):  # ~4 MB of text that gzip cannot shrink much
                    await page.evaluate(NOISE)
                    await page.wait_for_timeout(300)
                free = os.statvfs(spool)
                assert free.f_bavail * free.f_frsize < 2 * 1024 * 1024  # it did fill
                # The daemon and other sessions carry on meanwhile.
                other = await worker.start()
                assert other.status == pb.READY
                await worker.stop(other.session_id)
            s3_faults.set("pass")
            folder = f"runs/{started.session_id}/"
            objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=60)
            dropped = worker.server.metrics.recording_dropped.labels("disk")._value.get()
        meta = json.loads(objects[f"{folder}metadata.json"])
        assert meta["complete"] is False and meta["droppedEvents"] == dropped > 0
        assert any("spool's disk was full" in r for r in meta["incompleteReasons"])
        events = events_of(s3_batches(objects))
        assert events and len(events) == meta["eventCount"]  # what was kept is whole
        assert not list(spool.glob("*/batch-*"))  # uploaded once S3 came back
    report_fault(
        "spool on a 3 MiB tmpfs that fills (S3 away)",
        "events dropped and counted (metric, log line, metadata); daemon up, new session started",
        "new session started and stopped meanwhile",
        f"{dropped:.0f} events dropped by policy, all counted; 0 kept events lost",
    )


NOISE = """
(() => {
  const p = document.createElement("p");
  let text = "";
  for (let i = 0; i < 6; i++) {
    const bytes = crypto.getRandomValues(new Uint8Array(65536));
    text += btoa(String.fromCharCode(...bytes));
  }
  p.textContent = text;
  document.body.appendChild(p);
})()
"""


async def test_a_slow_s3_failing_every_third_request_loses_nothing(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    # Every third request a 503 SlowDown or 500 InternalError; each of the
    # others held 1.5 s before moto sees it. moto's own state is untouched.
    flaky = FlakyHTTP(int(moto.endpoint.rsplit(":", 1)[1]), fail_every=3, delay_s=1.5)
    try:
        config = s3_config(tmp_path, f"http://127.0.0.1:{flaky.port}")
        async with running_worker(config) as worker:
            browser_id = await recording_browser(worker, "flaky", bucket=bucket)
            async with session_page(worker, browser_identifier=browser_id) as (page, started):
                await drive(page, web)
                for i in range(5):  # several batches (1 s age), each uploaded through it
                    await page.evaluate(f"console.log('through flaky s3 {i}')")
                    await asyncio.sleep(1)
            folder = f"runs/{started.session_id}/"
            objects = await eventually(lambda: _finished(moto, bucket, folder), timeout=90)
    finally:
        flaky.close()
    assert flaky.failed >= 2, "the faults were injected"
    meta = json.loads(objects[f"{folder}metadata.json"])
    assert meta["complete"] is True, meta["incompleteReasons"]
    events = events_of(s3_batches(objects))
    assert contiguous(events) and len(events) == meta["eventCount"]
    texts = [c["text"] for c in custom(events, "console")]
    assert all(f"through flaky s3 {i}" in texts for i in range(5))
    assert not moto.s3().list_multipart_uploads(Bucket=bucket).get("Uploads")
    report_fault(
        "S3 answers every 3rd request 503 SlowDown / 500 InternalError, holds the rest 1.5 s",
        f"{flaky.failed} injected errors retried; every batch and metadata.json uploaded",
        "session ran on",
        f"0 of {len(events)} events; recording complete",
    )
