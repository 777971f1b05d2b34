"""Soak: 500 sessions through the load generator against one worker, then
look for anything left behind: browser processes, session and temp
directories, the daemon's file descriptors, and growth of the daemon's RSS
from the 50th to the last session. Prints one JSON object on its last line
and writes bench/results/soak.json.

Every session is recorded to S3 (a moto_server on loopback, started here;
`--no-record` turns it off): at the end every recording must be finished
(its metadata.json written), the spool empty and no multipart upload left.

    python bench/soak.py [--sessions 500] [--concurrency 2] [--flavour headless-shell]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import boto3
import grpc

from common import daemon, start_moto, write_results
from worker.browser import reaper
from worker.cli import loadtest
from worker.config import Config
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument(
        "--flavour", choices=["chromium", "headless-shell"], default="headless-shell"
    )
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    samples: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sbxs-") as tmp:
        scratch = Path(tmp)
        moto, endpoint = start_moto(scratch)
        env = {
            "AWS_ACCESS_KEY_ID": "soak",
            "AWS_SECRET_ACCESS_KEY": "soak",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SANDBOX_RECORDING_STORAGE": "s3",
            "SANDBOX_S3_ENDPOINT_URL": endpoint,
        }
        os.environ.update(env)
        s3 = boto3.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="soak")
        try:
            result, leftovers, fds_before = soak(args, scratch, env, samples, s3)
        finally:
            os.killpg(moto.pid, signal.SIGTERM)
            moto.wait(10)
    growth = samples["rss_at_end_kib"] / samples["rss_at_50_kib"] - 1
    results: dict[str, Any] = {
        "benchmark": "soak",
        "flavour": args.flavour,
        "recorded": args.record,
        "concurrency": args.concurrency,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "sessions": result["sessions"],
        "succeeded": result["succeeded"],
        "failures": result["failures"],
        "duration_s": result["duration_s"],
        "sessions_per_s": result["sessions_per_s"],
        "start_ms": result["start_ms"],
        "daemon_rss_mib": {
            "at_50": round(samples["rss_at_50_kib"] / 1024, 1),
            "at_end": round(samples["rss_at_end_kib"] / 1024, 1),
        },
        "daemon_rss_growth_50_to_end": round(growth, 4),
        "daemon_fds": {
            "before": fds_before,
            "at_50": samples["fds_at_50"],
            "at_end": samples["fds_at_end"],
        },
        "left_behind": leftovers,
    }
    write_results("soak", results)


def soak(
    args: argparse.Namespace,
    scratch: Path,
    env: dict[str, str],
    samples: dict[str, int],
    s3: Any,
) -> tuple[dict[str, Any], dict[str, int], int]:
    with daemon(scratch, "--max-sessions", str(args.concurrency), env=env) as info:
        pid = info["pid"]
        state = next(scratch.glob("state-*")).resolve()
        runtime = Config.from_env({}, state_dir=state).session_tmp_root
        with grpc.insecure_channel(info["grpc"]) as channel:
            flavour = pb.HEADLESS_SHELL if args.flavour == "headless-shell" else pb.CHROMIUM
            recording = pb.RecordingConfig(
                enabled=args.record, s3_location=pb.S3Location(bucket="soak", prefix="soak")
            )
            lean = pb.CreateBrowserRequest(name="soak", flavour=flavour, recording=recording)
            browser_id = pb_grpc.BrowsersStub(channel).CreateBrowser(lean).browser_id
        fds_before = fds(pid)

        def on_done(count: int) -> None:
            if count == 50:
                samples["rss_at_50_kib"] = rss_kib(pid)
                samples["fds_at_50"] = fds(pid)

        options = loadtest.Options(
            target=info["grpc"],
            concurrency=args.concurrency,
            sessions=args.sessions,
            duration_s=280,
            browser_id=browser_id,
            metrics_url=f"http://127.0.0.1:{info['metrics_port']}/metrics",
            progress=False,
        )
        result = asyncio.run(loadtest.run(options, on_done))
        samples["rss_at_end_kib"] = rss_kib(pid)
        samples["fds_at_end"] = fds(pid)
        recorded = finished_recordings(s3, result["succeeded"]) if args.record else 0
        # Stop answers once a browser exited; the last sweeps follow within
        # moments: give them up to 10 s before counting what is left.
        deadline = time.monotonic() + 10
        while list((state / "sessions").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.1)
        spool = state / "spool"
        leftovers = {
            "processes": len({*reaper.pids_referencing(state), *reaper.pids_referencing(runtime)}),
            "session_dirs": len(list((state / "sessions").iterdir())),
            "tmp_dirs": len(list(runtime.iterdir())) if runtime.is_dir() else 0,
            "recordings_finished": recorded,
            "spool_entries": len(list(spool.iterdir())) if spool.is_dir() else 0,
            "multipart_uploads": len(s3.list_multipart_uploads(Bucket="soak").get("Uploads", [])),
        }
    return result, leftovers, fds_before


def finished_recordings(s3: Any, expected: int) -> int:
    """metadata.json files in the bucket, once `expected` are there (or 60 s)."""
    deadline = time.monotonic() + 60
    while True:
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket="soak", Prefix="soak/")
        count = sum(
            1
            for page in pages
            for item in page.get("Contents", [])
            if item["Key"].endswith("/metadata.json")
        )
        if count >= expected or time.monotonic() > deadline:
            return count
        time.sleep(0.5)


if __name__ == "__main__":
    main()
