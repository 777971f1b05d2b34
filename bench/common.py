"""What the benchmarks share: a worker daemon to measure, and statistics.

Benchmarks run as `python bench/NAME.py`, so this directory is on sys.path
and the repository root is added here for `worker`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


from worker.browser import launcher, reaper, users  # noqa: E402
from worker.cli.cdp_client import SyncCDP  # noqa: E402
from worker.cli.groups import stop_group  # noqa: E402
from worker.config import Config  # noqa: E402
from worker.pb import sandbox_pb2 as pb  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def summary(values: list[float], unit: str = "ms") -> dict[str, float]:
    return {
        f"median_{unit}": round(statistics.median(values), 1),
        f"p95_{unit}": round(percentile(values, 95), 1),
        f"min_{unit}": round(min(values), 1),
    }


@contextlib.contextmanager
def daemon(
    scratch: Path, *flags: str, env: dict[str, str] | None = None
) -> Iterator[dict[str, Any]]:
    """A `sandbox-worker serve` on kernel-picked ports; yields its ready file."""
    ready = scratch / f"ready-{time.monotonic_ns()}.json"
    state = scratch / f"state-{time.monotonic_ns()}"
    argv = [
        sys.executable, "-m", "worker.cli", "serve",
        "--state-dir", str(state),
        "--grpc-listen", "127.0.0.1:0",
        "--automation-listen", "127.0.0.1:0",
        "--metrics-listen", "127.0.0.1:0",
        "--http-api-listen", "127.0.0.1:0",
        "--ready-file", str(ready),
        "--log-level", "warning",
        "--max-sessions", "2",
        *flags,
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, **(env or {})},
    )
    try:
        yield {**_ready(proc, ready, "the worker"), "state_dir": str(state)}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        reaper.kill_referencing(state.resolve())
        reaper.kill_referencing(Config.from_env({}, state_dir=state.resolve()).session_tmp_root)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_moto(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A moto_server (S3, STS, Secrets Manager) on loopback, in its own group."""
    port = free_port()
    log = open(scratch / "moto.log", "wb")  # noqa: SIM115 - lives as long as moto
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=log,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)


def start_to_first_answer(stub: Any, request: Any) -> tuple[float, str]:
    """StartBrowserSession, connect, first CDP answer; returns (ms, id)."""
    started = time.perf_counter()
    session = stub.StartBrowserSession(request)
    stream = session.streams.automation_stream
    with SyncCDP.connect(stream.stream_endpoint, stream.token, timeout=30) as cdp:
        reply = cdp.call("Browser.getVersion")
        elapsed = (time.perf_counter() - started) * 1000
    assert "product" in reply
    return elapsed, str(session.session_id)


def time_to_first_page(stub: Any, playwright: Any, browser_id: str) -> dict[str, float]:
    """What a client waits for, in ms: StartBrowserSession, Playwright's
    connect_over_cdp, its first new_page(), set_content and an evaluate that
    reads the page back (`total`: all of it). The session is stopped."""
    began = time.perf_counter()
    session = stub.StartBrowserSession(pb.StartBrowserSessionRequest(browser_identifier=browser_id))
    started = time.perf_counter()
    stream = session.streams.automation_stream
    browser = playwright.chromium.connect_over_cdp(
        stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}, timeout=30000
    )
    connected = time.perf_counter()
    page = browser.contexts[0].new_page()
    paged = time.perf_counter()
    page.set_content("<p id=probe>ready</p>")
    assert page.evaluate("document.getElementById('probe').textContent") == "ready"
    done = time.perf_counter()
    browser.close()
    stub.StopBrowserSession(
        pb.StopBrowserSessionRequest(browser_identifier=browser_id, session_id=session.session_id)
    )
    return {
        "start": (started - began) * 1000,
        "connect": (connected - started) * 1000,
        "new_page": (paged - connected) * 1000,
        "content": (done - paged) * 1000,
        "total": (done - began) * 1000,
    }


@functools.cache
def _sandbox() -> users.Plan:
    # The worker's own decision with its defaults (browser_sandbox=auto), so
    # the baseline pays for Chromium's sandbox exactly when the worker does.
    config = Config()
    return users.plan(config.browser_sandbox, config.browser_uid_base - 1, 1)


@functools.cache
def _settings() -> Config:
    """The worker's settings from SANDBOX_* variables, read once: parsing
    them would otherwise count in every raw launch's time."""
    return Config.from_env(os.environ)


def raw_spec(binary: Path, flavour: str, root: Path) -> launcher.LaunchSpec:
    """A browser launched the worker's way but without it: the baseline."""
    sandbox = _sandbox()
    uid = None
    if sandbox.uids is not None:
        # One uid below the worker's range: its own user, like a session's.
        uid = Config().browser_uid_base - 1
        # Let its uid through the benchmark's own temporary directories.
        temp = Path(tempfile.gettempdir()).resolve()
        for parent in root.resolve().parents:
            if parent == temp or temp not in parent.parents:
                break
            parent.chmod(parent.stat().st_mode | 0o011)
        users.hand_over(root, uid)
    return launcher.LaunchSpec(
        uid=uid,
        no_sandbox=not sandbox.chromium_sandbox,
        binary=binary,
        flavour=flavour,
        profile_dir=root / "profile",
        home_dir=root,
        tmp_dir=root,
        log_path=root / "log",
        window_width=1280,
        window_height=720,
        nice=_settings().browser_nice,  # a session's priority
    )


async def load_over_pipe(conn: Any, url: str) -> str:
    """Open a page, load `url`, wait for its load event; returns its session."""
    target = (await conn.call("Target.createTarget", {"url": "about:blank"}))["targetId"]
    attached = await conn.call("Target.attachToTarget", {"targetId": target, "flatten": True})
    page = str(attached["sessionId"])
    loaded = asyncio.get_running_loop().create_future()

    def on_event(event: dict[str, Any]) -> None:
        if event.get("method") == "Page.loadEventFired" and not loaded.done():
            loaded.set_result(None)

    conn.on_session_event(page, on_event)
    await conn.call("Page.enable", None, page)
    await conn.call("Page.navigate", {"url": url}, page)
    await asyncio.wait_for(loaded, 60)
    return page


def write_results(name: str, results: dict[str, Any]) -> None:
    """Save for the docs, and print as the last line (the benchmark contract)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results))


@contextlib.contextmanager
def gateway(scratch: Path, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """A `sandbox-worker gateway` on kernel-picked ports; yields its ready file."""
    ready = scratch / f"gateway-{time.monotonic_ns()}.json"
    argv = [
        sys.executable, "-m", "worker.cli", "gateway",
        "--grpc-listen", "127.0.0.1:0",
        "--automation-listen", "127.0.0.1:0",
        "--http-api-listen", "127.0.0.1:0",
        "--metrics-listen", "",
        "--log-level", "warning",
        "--ready-file", str(ready),
    ]  # fmt: skip
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True, env={**os.environ, **env},
    )  # fmt: skip
    try:
        yield _ready(proc, ready, "the gateway")
    finally:
        stop_group(proc, 30)


def _ready(proc: subprocess.Popen[bytes], ready: Path, what: str) -> dict[str, Any]:
    """The ready file a starting process writes, once it is there."""
    deadline = time.monotonic() + 30
    while not ready.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    return dict(json.loads(ready.read_text()))
