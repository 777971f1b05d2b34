"""`sandbox-worker loadtest`: sessions against a running worker, measured.

N concurrent clients each repeat a scenario until M sessions were run or
the duration is up: StartBrowserSession, connect to the automation endpoint
(start latency ends at the first CDP answer), open a page at the served
URL, wait for its load event, evaluate an expression, StopBrowserSession.
It reports sessions/s, start and scenario latency percentiles, failures by
gRPC code or error, and the worker's CPU and memory (from its /metrics),
writes JSON, and can draw a PNG of latency and throughput over time.

Every wait is bounded: each call has a timeout and the run a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc

from worker.cli import loopback
from worker.cli.cdp_client import AsyncCDP
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

CALL_TIMEOUT_S = 60.0
# Refused starts (capacity, draining) wait this long before the next try.
REFUSALS = ("RESOURCE_EXHAUSTED", "UNAVAILABLE")
REFUSAL_BACKOFF_S = 0.05
PAGE = (
    b"<!doctype html><html><head><title>loadtest</title></head><body>"
    + b"".join(b"<p>paragraph %d of the load test page</p>" % i for i in range(200))
    + b"<button id=go>go</button></body></html>"
)


@dataclasses.dataclass
class Options:
    target: str
    concurrency: int = 2
    sessions: int = 20  # stop after this many (0: only the duration bounds it)
    duration_s: float = 60.0  # and after this long, whichever comes first
    url: str = ""  # the page to load; empty: serve one on 127.0.0.1
    browser_id: str = ""
    metrics_url: str = ""  # the worker's /metrics, for its CPU and memory
    progress: bool = True
    # Record every session to this bucket (a browser "loadtest_recorded" is
    # created on the worker, or reused): the scenario with recording.
    record_bucket: str = ""


@dataclasses.dataclass
class Outcome:
    began_s: float  # since the run started
    start_ms: float = 0.0  # StartBrowserSession -> first CDP answer
    total_ms: float = 0.0  # the whole scenario, Stop included
    error: str = ""


async def scenario(sessions: Any, options: Options, url: str, began: float) -> Outcome:
    outcome = Outcome(began_s=time.monotonic() - began)
    t0 = time.perf_counter()
    request = pb.StartBrowserSessionRequest(browser_identifier=options.browser_id)
    try:
        started = await sessions.StartBrowserSession(request, timeout=CALL_TIMEOUT_S)
    except grpc.aio.AioRpcError as err:
        outcome.error = err.code().name
        return outcome
    stop = pb.StopBrowserSessionRequest(
        browser_identifier=started.browser_identifier, session_id=started.session_id
    )
    try:
        stream = started.streams.automation_stream
        async with AsyncCDP.connect(stream.stream_endpoint, stream.token, CALL_TIMEOUT_S) as cdp:
            await cdp.call("Browser.getVersion")
            outcome.start_ms = (time.perf_counter() - t0) * 1000
            target = (await cdp.call("Target.createTarget", url="about:blank"))["targetId"]
            page = (await cdp.call("Target.attachToTarget", targetId=target, flatten=True))[
                "sessionId"
            ]
            await cdp.call("Page.enable", page)
            await cdp.call("Page.navigate", page, url=url)
            await cdp.until("Page.loadEventFired")
            title = await cdp.call("Runtime.evaluate", page, expression="document.title")
            if title.get("result", {}).get("value") != "loadtest" and not options.url:
                raise RuntimeError("the page did not load")
    except (OSError, RuntimeError, TimeoutError, ValueError) as exc:
        outcome.error = type(exc).__name__
    finally:
        with contextlib.suppress(grpc.aio.AioRpcError):
            await sessions.StopBrowserSession(stop, timeout=CALL_TIMEOUT_S)
    outcome.total_ms = (time.perf_counter() - t0) * 1000
    return outcome


def worker_usage(metrics_url: str) -> dict[str, float]:
    """The daemon's CPU seconds and RSS, and its browsers' PSS, from /metrics."""
    if not metrics_url:
        return {}
    try:
        with urllib.request.urlopen(metrics_url, timeout=10) as answer:
            text = answer.read().decode()
    except OSError:
        return {}
    usage = {"browsers_pss_bytes": 0.0}
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == "process_cpu_seconds_total":
            usage["daemon_cpu_seconds"] = float(value)
        elif name == "process_resident_memory_bytes":
            usage["daemon_rss_bytes"] = float(value)
        elif name.startswith("sandbox_browser_memory_pss_bytes{"):
            usage["browsers_pss_bytes"] += float(value)
        elif name.startswith("sandbox_browser_cpu_seconds_total{"):
            usage["browsers_cpu_seconds"] = usage.get("browsers_cpu_seconds", 0.0) + float(value)
    return usage


class Progress:
    """A one-line bar on stderr, redrawn at most ten times a second."""

    def __init__(self, total: int, duration: float, enabled: bool) -> None:
        self.total, self.duration, self.enabled = total, duration, enabled
        self.began = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, failed: int, final: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not final and now - self._drawn < 0.1):
            return
        self._drawn = now
        elapsed = now - self.began
        share = max(
            done / self.total if self.total else 0.0,
            elapsed / self.duration if self.duration else 0.0,
        )
        filled = int(min(1.0, share) * 30)
        rate = done / elapsed if elapsed > 0 else 0.0
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (30 - filled)}] {done} sessions, {failed} failed, "
            f"{rate:.1f}/s, {elapsed:.0f}s"
        )
        if final:
            sys.stderr.write("\n")
        sys.stderr.flush()


RECORDED_BROWSER = "loadtest_recorded"


async def recording_browser(channel: Any, bucket: str) -> str:
    """The worker's browser that records to `bucket`, created on first use."""
    browsers = pb_grpc.BrowsersStub(channel)
    recording = pb.RecordingConfig(
        enabled=True, s3_location=pb.S3Location(bucket=bucket, prefix="loadtest")
    )
    try:
        created = await browsers.CreateBrowser(
            pb.CreateBrowserRequest(name=RECORDED_BROWSER, recording=recording)
        )
        return str(created.browser_id)
    except grpc.aio.AioRpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    token = ""
    for _ in range(100):  # at most 10,000 browsers
        page = await browsers.ListBrowsers(
            pb.ListBrowsersRequest(max_results=100, next_token=token)
        )
        for browser in page.browsers:
            if browser.name == RECORDED_BROWSER:
                if browser.recording.s3_location.bucket != bucket:
                    raise ValueError(f"record bucket: {RECORDED_BROWSER} records to another bucket")
                return str(browser.browser_id)
        token = page.next_token
        if not token:
            break
    raise ValueError(f"record bucket: no browser named {RECORDED_BROWSER}")


async def run(options: Options, on_done: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Run the load; returns the report."""
    with contextlib.ExitStack() as stack:
        url = options.url or stack.enter_context(loopback.serving_bytes(PAGE)) + "/"
        return await _run(options, url, on_done)


async def _run(options: Options, url: str, on_done: Callable[[int], None] | None) -> dict[str, Any]:
    outcomes: list[Outcome] = []
    began = time.monotonic()
    deadline = began + options.duration_s
    budget = options.sessions or math.inf
    claimed = 0
    progress = Progress(options.sessions, options.duration_s, options.progress)
    usage_before = worker_usage(options.metrics_url)

    async def client(sessions: Any) -> None:
        nonlocal claimed
        while claimed < budget and time.monotonic() < deadline:
            claimed += 1
            outcome = await scenario(sessions, options, url, began)
            outcomes.append(outcome)
            if outcome.error in REFUSALS:
                # The worker is full: wait a moment, as an orchestrator
                # would, rather than spin on refusals.
                await asyncio.sleep(REFUSAL_BACKOFF_S)
            progress.update(len(outcomes), sum(1 for o in outcomes if o.error))
            if on_done is not None:
                on_done(len(outcomes))

    async with grpc.aio.insecure_channel(options.target) as channel:
        sessions = pb_grpc.BrowserSessionsStub(channel)
        if options.record_bucket:
            browser_id = await recording_browser(channel, options.record_bucket)
            options = dataclasses.replace(options, browser_id=browser_id)
        await asyncio.gather(*(client(sessions) for _ in range(options.concurrency)))
    elapsed = time.monotonic() - began
    progress.update(len(outcomes), sum(1 for o in outcomes if o.error), final=True)
    return report(options, outcomes, elapsed, usage_before, worker_usage(options.metrics_url))


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)

    def at(q: float) -> float:
        return round(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))], 1)

    return {"p50": at(0.50), "p95": at(0.95), "p99": at(0.99), "max": round(ordered[-1], 1)}


def report(
    options: Options,
    outcomes: list[Outcome],
    elapsed: float,
    before: dict[str, float],
    after: dict[str, float],
) -> dict[str, Any]:
    ok = [o for o in outcomes if not o.error]
    failures: dict[str, int] = {}
    for o in outcomes:
        if o.error:
            failures[o.error] = failures.get(o.error, 0) + 1
    worker: dict[str, float] = {}
    if "daemon_cpu_seconds" in before and "daemon_cpu_seconds" in after:
        worker["daemon_cpu_seconds"] = round(
            after["daemon_cpu_seconds"] - before["daemon_cpu_seconds"], 2
        )
    if "daemon_rss_bytes" in after:
        worker["daemon_rss_mib"] = round(after["daemon_rss_bytes"] / 2**20, 1)
    return {
        "target": options.target,
        "concurrency": options.concurrency,
        "sessions": len(outcomes),
        "succeeded": len(ok),
        "failures": failures,
        "duration_s": round(elapsed, 2),
        "sessions_per_s": round(len(ok) / elapsed, 3) if elapsed > 0 else 0.0,
        "start_ms": _percentiles([o.start_ms for o in ok]),
        "scenario_ms": _percentiles([o.total_ms for o in ok]),
        "worker": worker,
        "timeline": [dataclasses.asdict(o) for o in outcomes],
    }


def chart(result: dict[str, Any], path: Path) -> None:
    """Latency of each session and sessions/s, over the run, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    timeline = [o for o in result["timeline"] if not o["error"]]
    figure, (latency, throughput) = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    latency.scatter([o["began_s"] for o in timeline], [o["start_ms"] for o in timeline], s=6)
    latency.set_ylabel("start -> first CDP answer (ms)")
    seconds = math.ceil(result["duration_s"]) or 1
    done = [0] * seconds
    for o in timeline:
        finished = int(o["began_s"] + o["total_ms"] / 1000)
        done[min(finished, seconds - 1)] += 1
    throughput.step(range(seconds), done, where="post")
    throughput.set_ylabel("sessions finished / s")
    throughput.set_xlabel("seconds into the run")
    figure.suptitle(
        f"{result['sessions']} sessions, concurrency {result['concurrency']}: "
        f"{result['sessions_per_s']}/s, start p50 {result['start_ms'].get('p50')} ms"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
