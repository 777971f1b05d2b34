"""Soak: 500 sessions through the load generator against one worker, then
look for anything left behind: browser processes, session and temp
directories, the daemon's file descriptors, and growth of the daemon's RSS
from the 50th to the last session. Prints one JSON object on its last line
and writes bench/results/soak.json.

    python bench/soak.py [--sessions 500] [--concurrency 2] [--flavour headless-shell]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import grpc

from common import daemon, write_results
from worker import loadtest, reaper
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
    args = parser.parse_args()
    samples: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="sbxs-") as tmp:
        scratch = Path(tmp)
        with daemon(scratch, "--max-sessions", str(args.concurrency)) as info:
            pid = info["pid"]
            state = next(scratch.glob("state-*")).resolve()
            runtime = Config.from_env({}, state_dir=state).session_tmp_root
            with grpc.insecure_channel(info["grpc"]) as channel:
                browser_id = "aws.browser.v1"
                if args.flavour == "headless-shell":
                    lean = pb.CreateBrowserRequest(name="soak", flavour=pb.HEADLESS_SHELL)
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
            leftovers = {
                "processes": len(reaper.pids_referencing(state)),
                "session_dirs": len(list((state / "sessions").iterdir())),
                "tmp_dirs": len(list(runtime.iterdir())) if runtime.is_dir() else 0,
            }
    growth = samples["rss_at_end_kib"] / samples["rss_at_50_kib"] - 1
    results: dict[str, Any] = {
        "benchmark": "soak",
        "flavour": args.flavour,
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
        "multipart_uploads_left": "n/a: recording has not landed",
    }
    write_results("soak", results)


if __name__ == "__main__":
    main()
