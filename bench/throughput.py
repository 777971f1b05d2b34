"""Sustained throughput: sessions per minute at concurrency 1, 2, 4 and 8,
through the worker (the load generator's scenario: StartBrowserSession,
connect, open the page, wait for load, evaluate, stop) against a raw loop
that does the same with the same Chromium and flags and nothing else:
spawn it with the worker's own launcher, the same CDP calls over the pipe,
kill it, remove its directory. Both sides run for the same time at each
level, alternating, and each reports the machine's CPU time per session.
Settings come from SANDBOX_* variables for both sides (e.g.
SANDBOX_BROWSER_NICE=0 for browsers at the daemon's priority). Prints one
JSON object on its last line, writes bench/results/throughput.json and a
chart, bench/results/throughput.png.

    python bench/throughput.py [--seconds 12]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from common import RESULTS, daemon, load_over_pipe, raw_spec, write_results
from worker.browser import launcher, reaper
from worker.cli import loadtest, loopback
from worker.config import Config
from worker.procfs import cpu_seconds

LEVELS = (1, 2, 4, 8)


async def raw_session(config: Config, scratch: Path, url: str) -> None:
    root = Path(tempfile.mkdtemp(dir=scratch))
    process = await launcher.launch(raw_spec(config.chromium_path, "chromium", root))
    try:
        conn = process.connection
        await launcher.wait_ready(process, 30)
        page = await load_over_pipe(conn, url)
        await conn.call("Runtime.evaluate", {"expression": "document.title"}, page)
    finally:
        await process.terminate(5)
        await asyncio.to_thread(reaper.kill_referencing, root)
        shutil.rmtree(root, ignore_errors=True)


def busy_seconds() -> float:
    """CPU time the whole machine has spent not idle, in seconds."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # idle, iowait


async def raw_rate(concurrency: int, seconds: float, url: str, scratch: Path) -> tuple[int, float]:
    """(sessions done, sessions a minute)."""
    config = Config.from_env(os.environ)
    deadline = time.monotonic() + seconds
    done = 0

    async def loop() -> None:
        nonlocal done
        while time.monotonic() < deadline:
            await raw_session(config, scratch, url)
            done += 1

    began = time.monotonic()
    await asyncio.gather(*(loop() for _ in range(concurrency)))
    return done, done / (time.monotonic() - began) * 60


async def worker_rate(target: str, concurrency: int, seconds: float, url: str) -> tuple[int, float]:
    """(sessions done, sessions a minute)."""
    options = loadtest.Options(
        target=target,
        concurrency=concurrency,
        sessions=0,
        duration_s=seconds,
        url=url,
        progress=False,
    )
    result = await loadtest.run(options)
    assert not result["failures"], result["failures"]
    done = int(result["succeeded"])
    return done, done / float(result["duration_s"]) * 60


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = [int(k) for k in results["levels"]]
    figure, axis = plt.subplots(figsize=(7, 4))
    for side in ("worker", "raw"):
        rates = [results["levels"][str(c)][f"{side}_per_min"] for c in levels]
        axis.plot(levels, rates, marker="o", label=side)
    axis.set_xscale("log", base=2)
    axis.set_xticks(levels, [str(c) for c in levels])
    axis.set_xlabel("concurrent sessions")
    axis.set_ylabel("sessions / minute")
    axis.set_title("start -> navigate -> stop, worker vs raw Chromium loop")
    axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


async def measure(seconds: float) -> dict[str, Any]:
    levels: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="sbxt-") as tmp,
        loopback.serving_bytes(loadtest.PAGE) as base,
        daemon(Path(tmp), "--max-sessions", str(max(LEVELS))) as info,
    ):
        url = base + "/"
        scratch = Path(tmp) / "raw"
        scratch.mkdir()
        await raw_rate(1, 2, url, scratch)  # warm the page cache for both
        for concurrency in LEVELS:
            # Machine CPU per session says where a gap comes from: two cores
            # are saturated from one session on, so rate follows CPU cost.
            busy, own = busy_seconds(), cpu_seconds(info["pid"])
            sessions, worker = await worker_rate(info["grpc"], concurrency, seconds, url)
            worker_cpu = (busy_seconds() - busy) / sessions
            daemon_cpu = (cpu_seconds(info["pid"]) - own) / sessions
            busy = busy_seconds()
            sessions, raw = await raw_rate(concurrency, seconds, url, scratch)
            raw_cpu = (busy_seconds() - busy) / sessions
            levels[str(concurrency)] = {
                "worker_per_min": round(worker, 1),
                "raw_per_min": round(raw, 1),
                "ratio": round(worker / raw, 3),
                "worker_cpu_ms_per_session": round(worker_cpu * 1000, 1),
                "raw_cpu_ms_per_session": round(raw_cpu * 1000, 1),
                "daemon_cpu_ms_per_session": round(daemon_cpu * 1000, 1),
            }
    return levels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "throughput",
        "seconds_per_side": args.seconds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "levels": asyncio.run(measure(args.seconds)),
    }
    results["min_ratio"] = min(level["ratio"] for level in results["levels"].values())
    with contextlib.suppress(ImportError):
        RESULTS.mkdir(parents=True, exist_ok=True)
        plot(results, RESULTS / "throughput.png")
    write_results("throughput", results)


if __name__ == "__main__":
    main()
