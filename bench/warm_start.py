"""Warm start: StartBrowserSession -> first CDP answer through the automation
endpoint when a pooled browser serves the session, with sessions arriving at
1 per second (the pool refills between them), against cold starts of the
same flavour in the same worker (a non-default viewport, which the pool
cannot serve). Prints one JSON object on its last line and writes
bench/results/warm_start.json.

    python bench/warm_start.py [--runs 40] [--interval 1.0]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from common import daemon, percentile, start_to_first_answer, summary, write_results
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc


def measure(sessions: Any, browser_id: str, runs: int, interval: float, cold: bool) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.monotonic()
        request = pb.StartBrowserSessionRequest(browser_identifier=browser_id)
        if cold:
            request.view_port.CopyFrom(pb.ViewPort(width=1024, height=700))
        elapsed, session_id = start_to_first_answer(sessions, request)
        times.append(elapsed)
        sessions.StopBrowserSession(
            pb.StopBrowserSessionRequest(browser_identifier=browser_id, session_id=session_id)
        )
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "warm_start",
        "runs": args.runs,
        "interval_s": args.interval,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for flavour in ("chromium", "headless-shell"):
        with tempfile.TemporaryDirectory(prefix="sbxw-") as tmp:
            flags = ("--warm-pool", f"{flavour}=2", "--max-sessions", "4")
            with daemon(Path(tmp), *flags) as info, grpc.insecure_channel(info["grpc"]) as ch:
                sessions = pb_grpc.BrowserSessionsStub(ch)
                browser_id = "aws.browser.v1"
                if flavour != "chromium":
                    browser_id = (
                        pb_grpc.BrowsersStub(ch)
                        .CreateBrowser(pb.CreateBrowserRequest(name="w", flavour=pb.HEADLESS_SHELL))
                        .browser_id
                    )
                time.sleep(3)  # let the pool fill
                warm = measure(sessions, browser_id, args.runs, args.interval, cold=False)
                cold = measure(sessions, browser_id, max(10, args.runs // 4), 0.5, cold=True)
        results[flavour] = {
            "warm": {**summary(warm), "p99_ms": round(percentile(warm, 99), 1)},
            "cold": summary(cold),
            "warm_vs_cold_median": round(statistics.median(warm) / statistics.median(cold), 3),
        }
    write_results("warm_start", results)


if __name__ == "__main__":
    main()
