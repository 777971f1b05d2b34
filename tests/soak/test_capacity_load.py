"""Full capacity with every session recorded to S3 (moto): no failure but
capacity refusals, and nothing left or grown afterwards.

Ten minutes with `pytest tests/soak --soak`; the default run (and so CI)
takes the same test for 60 s. `SANDBOX_TEST_LOAD_SECONDS` sets any other
length. The load generator runs one client more than the worker has room
for, so the worker is always full.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.daemon import daemon
from helpers.faults import report_fault
from helpers.upstreams import SecretsManager
from helpers.workers import browser_root, worker_processes

FULL_SECONDS, SHORT_SECONDS = 600.0, 60.0
CAPACITY = 4


def load_seconds(config: pytest.Config) -> float:
    if "SANDBOX_TEST_LOAD_SECONDS" in os.environ:
        return float(os.environ["SANDBOX_TEST_LOAD_SECONDS"])
    return FULL_SECONDS if config.getoption("--soak") else SHORT_SECONDS


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def loadtest(info: dict[str, Any], out: Path, seconds: float, bucket: str) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "worker.cli", "loadtest",
        "--target", info["grpc"],
        "--concurrency", str(CAPACITY + 1),
        "--sessions", "0", "--duration", str(seconds),
        "--record", bucket,
        "--out", str(out), "--json", "--quiet",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 180)
    assert done.returncode in (0, 1), done.stderr
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def settle(state: Path, pid: int, timeout: float = 30) -> None:
    """Wait for the last sweeps and uploads after a load run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = list((state / "sessions").iterdir()) or any((state / "spool").glob("*/batch-*"))
        if not busy and not worker_processes(state):
            return
        time.sleep(0.2)


@pytest.mark.soak
@pytest.mark.timeout(FULL_SECONDS + 300)
def test_full_capacity_with_recording_leaves_nothing(
    tmp_path: Path, moto: SecretsManager, request: pytest.FixtureRequest
) -> None:
    seconds = load_seconds(request.config)
    bucket = moto.bucket()
    state = tmp_path / "state"
    env = {"SANDBOX_RECORDING_STORAGE": "s3", "SANDBOX_S3_ENDPOINT_URL": moto.endpoint}
    flags = ("--max-sessions", str(CAPACITY))
    with daemon(state, *flags, env=env) as (proc, info):
        warm = loadtest(info, tmp_path / "warm.json", 10, bucket)  # imports, caches, pools
        assert warm["succeeded"] > 0, warm
        settle(state, proc.pid)
        fds_before = fds(proc.pid)
        samples: list[tuple[float, int]] = []
        stop = threading.Event()

        def sample() -> None:
            began = time.monotonic()
            while not stop.wait(2.0):
                samples.append((time.monotonic() - began, rss_bytes(proc.pid)))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = loadtest(info, tmp_path / "load.json", seconds, bucket)
        finally:
            stop.set()
            sampler.join(5)
        settle(state, proc.pid)
        fds_after = fds(proc.pid)
        assert proc.poll() is None, "the daemon stayed up"
    # Only capacity refusals, and real work done all along.
    assert set(result["failures"]) <= {"RESOURCE_EXHAUSTED"}, result["failures"]
    assert result["succeeded"] >= seconds / 10, result
    # Nothing left: processes, directories, spool, multipart uploads, fds.
    assert not worker_processes(state)
    assert not list((state / "sessions").iterdir())
    runtime = browser_root(state)
    assert not runtime.exists() or not list(runtime.iterdir())
    assert not moto.s3().list_multipart_uploads(Bucket=bucket).get("Uploads")
    assert fds_after <= fds_before + 2, (fds_before, fds_after)
    # Every session's recording finished.
    keys = [
        o["Key"]
        for page in moto.s3().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        for o in page.get("Contents", [])
    ]
    finished = sum(1 for k in keys if k.endswith("/metadata.json"))
    assert finished == warm["succeeded"] + result["succeeded"], (finished, result["succeeded"])
    # Memory: the last minute against the first minute after warm-up.
    window = min(60.0, seconds / 5)
    early = [rss for t, rss in samples if window <= t < 2 * window]
    late = [rss for t, rss in samples if t >= seconds - window]
    growth = statistics.median(late) / statistics.median(early) - 1
    assert growth < 0.10, f"daemon RSS grew {growth:.1%}"
    refused = result["failures"].get("RESOURCE_EXHAUSTED", 0)
    report_fault(
        f"{seconds:.0f} s at full capacity ({CAPACITY} sessions, {CAPACITY + 1} clients),"
        " every session recorded to S3",
        f"{result['succeeded']} sessions, {refused} capacity refusals, no other failure;"
        f" daemon RSS {growth:+.1%} (last minute vs first), fds {fds_before} -> {fds_after},"
        " no process, directory, spool file or multipart upload left",
        "all ran",
        f"0: {finished} of {finished} recordings finished",
    )
