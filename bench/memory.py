"""Memory per session: how many sessions fit in a GiB, per flavour.

One worker; for each flavour, N sessions each holding a loaded page (the
test suite's pages, served on loopback) and a connected client. Measured two
ways in the same run: the drop in the machine's MemAvailable per session
(what the kernel can no longer hand out), and the proportional set size of
each session's browser processes as the worker's /metrics reports it. The
daemon's own PSS (with its proxy relay) is the fixed cost per worker.
Prints one JSON object on its last line and writes bench/results/memory.json.

    python bench/memory.py [--sessions 6]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import http.server
import os
import platform
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from common import ROOT, daemon, load_over_pipe, raw_spec, write_results
from worker.browser import launcher, reaper
from worker.cli.cdp_client import SyncCDP
from worker.config import Config
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.procfs import process_groups, pss_bytes

MiB = 1024 * 1024


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable")


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def settled_mem_available(timeout: float = 20.0) -> int:
    """MemAvailable once it stops moving: the previous flavour's browsers
    and directories are freed after their Stop returns (the sweep runs off
    the caller's path), and a baseline taken meanwhile hides a session's
    cost entirely."""
    time.sleep(1)
    last = mem_available()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        now = mem_available()
        if abs(now - last) < 4 * MiB:
            return now
        last = now
    return last


@contextlib.contextmanager
def pages() -> Iterator[str]:
    handler = functools.partial(Quiet, directory=str(ROOT / "tests" / "pages"))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/index.html"
    finally:
        server.shutdown()
        server.server_close()


def open_page(cdp: SyncCDP, url: str) -> None:
    """Create a page and load `url` in it, waiting for the load event."""
    target = cdp.call("Target.createTarget", url="about:blank")["targetId"]
    session = cdp.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
    cdp.call("Page.enable", session)
    cdp.call("Page.navigate", session, url=url)
    cdp.until("Page.loadEventFired", session)


def scrape_pss(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        text = answer.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith("sandbox_browser_memory_pss_bytes{"):
            session = line.split('session_id="', 1)[1].split('"', 1)[0]
            values[session] = float(line.rsplit(" ", 1)[1])
    return values


def measure(info: dict[str, Any], browser_id: str, url: str, count: int) -> dict[str, Any]:
    with grpc.insecure_channel(info["grpc"]) as channel, contextlib.ExitStack() as stack:
        sessions = pb_grpc.BrowserSessionsStub(channel)
        before = settled_mem_available()
        daemon_idle = rss_bytes(info["pid"])
        ids = []
        for _ in range(count):
            started = sessions.StartBrowserSession(
                pb.StartBrowserSessionRequest(browser_identifier=browser_id)
            )
            ids.append(started.session_id)
            stream = started.streams.automation_stream
            cdp = stack.enter_context(SyncCDP.connect(stream.stream_endpoint, stream.token))
            open_page(cdp, url)
        after = settled_mem_available()  # the browsers done with their first page
        pss = scrape_pss(info["metrics_port"])
        daemon_busy = rss_bytes(info["pid"])
        daemon_pss = pss_bytes(info["pid"]) + pss_bytes(info["relay_pid"])
        stack.close()
        for session_id in ids:
            sessions.StopBrowserSession(
                pb.StopBrowserSessionRequest(browser_identifier=browser_id, session_id=session_id)
            )
    per_session = sorted(pss[s] for s in ids)
    marginal = (before - after) / count
    # PSS counts each session's share of the browser binary's pages too:
    # the conservative figure to size requests with.
    sizing = statistics.median(per_session)
    return {
        "sessions": count,
        "memavailable_drop_per_session_mib": round(marginal / MiB, 1),
        "pss_per_session_mib": {
            "median": round(statistics.median(per_session) / MiB, 1),
            "max": round(per_session[-1] / MiB, 1),
        },
        "daemon_and_relay_pss_mib": round(daemon_pss / MiB, 1),
        "daemon_rss_per_active_session_mib": round((daemon_busy - daemon_idle) / count / MiB, 2),
        "sessions_per_gib_by_pss": round(1024 * MiB / sizing, 1),
        "sessions_per_gib_by_memavailable": round(1024 * MiB / marginal, 1),
    }


async def raw_browsers(flavour: str, url: str, count: int, scratch: Path) -> list[int]:
    """PSS of `count` browsers launched raw (the worker's launcher, no
    daemon), each with the same page loaded over its CDP pipe."""
    config = Config.from_env({})
    binary = config.chromium_path if flavour == "chromium" else config.headless_shell_path
    processes = []
    try:
        for i in range(count):
            root = scratch / f"raw-{flavour}-{i}"
            root.mkdir()
            process = await launcher.launch(raw_spec(binary, flavour, root))
            processes.append(process)
            await launcher.wait_ready(process, 30)
            await load_over_pipe(process.connection, url)
        await asyncio.sleep(2)
        groups = process_groups({p.pid for p in processes})
        return sorted(sum(pss_bytes(pid) for pid in groups[p.pid]) for p in processes)
    finally:
        for process in processes:
            await process.terminate(5)
        reaper.kill_referencing(scratch)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sessions", type=int, default=6)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "memory",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "memtotal_gib": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30),
        },
    }
    with tempfile.TemporaryDirectory(prefix="sbxm-") as tmp, pages() as url:
        flags = ("--max-sessions", str(args.sessions))
        with daemon(Path(tmp), *flags) as info, grpc.insecure_channel(info["grpc"]) as channel:
            shell = (
                pb_grpc.BrowsersStub(channel)
                .CreateBrowser(
                    pb.CreateBrowserRequest(name="bench_shell", flavour=pb.HEADLESS_SHELL)
                )
                .browser_id
            )
            for flavour, browser_id in (("chromium", "aws.browser.v1"), ("headless-shell", shell)):
                results[flavour] = measure(info, browser_id, url, args.sessions)
                raw_dir = Path(tmp) / f"raw-{flavour}"  # never the daemon's directory
                raw_dir.mkdir()
                raw = asyncio.run(raw_browsers(flavour, url, args.sessions, raw_dir))
                worker_median = results[flavour]["pss_per_session_mib"]["median"]
                raw_median = statistics.median(raw) / MiB
                results[flavour]["raw_pss_per_browser_mib"] = round(raw_median, 1)
                results[flavour]["pss_vs_raw"] = round(worker_median / raw_median, 3)
    write_results("memory", results)


if __name__ == "__main__":
    main()
