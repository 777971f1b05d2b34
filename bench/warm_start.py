"""Warm start: StartBrowserSession -> first CDP answer through the automation
endpoint when a pooled browser serves the session, with sessions arriving at
1 per second (the pool refills between them), against cold starts of the
same flavour in a worker without a pool. Then, from the client's side, time
to a usable first page (Start, Playwright connect_over_cdp, new_page,
set_content, evaluate), warm and cold. Prints one JSON object on its last
line and writes bench/results/warm_start.json.

    python bench/warm_start.py [--runs 40] [--pages 15] [--interval 1.0]
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

from common import (
    daemon,
    percentile,
    start_to_first_answer,
    summary,
    time_to_first_page,
    write_results,
)
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc


def measure(sessions: Any, browser_id: str, runs: int, interval: float) -> list[float]:
    times = []
    for _ in range(runs):
        began = time.monotonic()
        request = pb.StartBrowserSessionRequest(browser_identifier=browser_id)
        elapsed, session_id = start_to_first_answer(sessions, request)
        times.append(elapsed)
        sessions.StopBrowserSession(
            pb.StopBrowserSessionRequest(browser_identifier=browser_id, session_id=session_id)
        )
        time.sleep(max(0.0, interval - (time.monotonic() - began)))
    return times


def first_pages(sessions: Any, runs: int, interval: float) -> dict[str, Any]:
    """Time to a usable first page, p50/p95 of the total and each phase's p50."""
    from playwright.sync_api import sync_playwright

    phases: list[dict[str, float]] = []
    with sync_playwright() as playwright:
        for _ in range(runs):
            began = time.monotonic()
            phases.append(time_to_first_page(sessions, playwright, "aws.browser.v1"))
            time.sleep(max(0.0, interval - (time.monotonic() - began)))
    totals = [p["total"] for p in phases]
    medians = {k: round(statistics.median(p[k] for p in phases), 1) for k in phases[0]}
    return {**summary(totals), "phase_medians_ms": medians}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--pages", type=int, default=15)
    parser.add_argument("--interval", type=float, default=1.0)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "warm_start",
        "runs": args.runs,
        "interval_s": args.interval,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    for flavour in ("chromium", "headless-shell"):
        times, pages = {}, {}
        for kind, pool in (("warm", ("--warm-pool", f"{flavour}=2")), ("cold", ())):
            with tempfile.TemporaryDirectory(prefix="sbxw-") as tmp:
                flags = (*pool, "--max-sessions", "4", "--default-flavour", flavour)
                with daemon(Path(tmp), *flags) as info, grpc.insecure_channel(info["grpc"]) as ch:
                    sessions = pb_grpc.BrowserSessionsStub(ch)
                    time.sleep(3)  # let the pool fill
                    runs = args.runs if kind == "warm" else max(10, args.runs // 2)
                    times[kind] = measure(sessions, "aws.browser.v1", runs, args.interval)
                    pages[kind] = first_pages(sessions, args.pages, args.interval)
        warm, cold = times["warm"], times["cold"]
        results[flavour] = {
            "warm": {**summary(warm), "p99_ms": round(percentile(warm, 99), 1)},
            "cold": summary(cold),
            "warm_vs_cold_median": round(statistics.median(warm) / statistics.median(cold), 3),
            "first_page": {
                **pages,
                "warm_vs_cold_median": round(
                    pages["warm"]["median_ms"] / pages["cold"]["median_ms"], 3
                ),
            },
        }
    write_results("warm_start", results)


if __name__ == "__main__":
    main()
