"""InvokeBrowser latency per action type, from the client's side.

One worker (`sandbox-worker serve`, a first tab in every session), one
session holding a small page with a button and a field, served on
loopback. Each round does every action once, in turn (move, click, scroll,
drag, type 20 characters, a key press, ctrl+a, a screenshot), timed from
the gRPC call to its answer; then typing 10,000 characters a few times.
Beside them, the same click through Playwright's own `page.mouse` on the
automation endpoint, so the ratio says what the action path adds.

Browser profiles, in the same run: SaveBrowserSessionProfile of a session
holding 50 cookies and 200 local storage items, and a cold start to a
usable first page with that profile against the same start without one,
interleaved.

Prints one JSON object on its last line (p50/p95 ms per action) and writes
bench/results/invoke.json.

    python bench/invoke.py [--rounds 40]
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
from playwright.sync_api import sync_playwright

from common import daemon, percentile, write_results
from worker.cli.loopback import serving_bytes
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

PAGE = b"""<!doctype html><title>invoke</title>
<button id=b style="position:absolute;left:20px;top:20px;width:120px;height:40px">b</button>
<input id=f style="position:absolute;left:20px;top:80px;width:300px">
<div style="height:4000px"></div>
<script>document.getElementById('b').onclick = () => window.clicks = (window.clicks||0) + 1</script>
"""
ACTIONS: dict[str, dict[str, Any]] = {
    "mouseMove": {"mouse_move": pb.MouseMoveArguments(x=300, y=300)},
    "mouseClick": {"mouse_click": pb.MouseClickArguments(x=80, y=40)},
    "mouseScroll": {"mouse_scroll": pb.MouseScrollArguments(x=300, y=300, delta_y=50)},
    "mouseDrag": {
        "mouse_drag": pb.MouseDragArguments(start_x=400, start_y=200, end_x=500, end_y=300)
    },
    "keyType": {"key_type": pb.KeyTypeArguments(text="twenty characters ok")},
    "keyPress": {"key_press": pb.KeyPressArguments(key="Backspace")},
    "keyShortcut": {"key_shortcut": pb.KeyShortcutArguments(keys=["ctrl", "a"])},
    "screenshot": {"screenshot": pb.ScreenshotArguments()},
}


def stats(values: list[float]) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(values), 2),
        "p95_ms": round(percentile(values, 95), 2),
    }


def timed(stub: Any, session_id: str, action: dict[str, Any]) -> float:
    began = time.perf_counter()
    done = stub.InvokeBrowser(
        pb.InvokeBrowserRequest(session_id=session_id, action=pb.BrowserAction(**action))
    )
    took = (time.perf_counter() - began) * 1000
    assert done.status == pb.SUCCESS, done.error
    return took


FILL = """() => {
  for (let i = 0; i < 50; i++) document.cookie = `c${i}=${'v'.repeat(40)}; path=/; max-age=3600`;
  for (let i = 0; i < 200; i++) localStorage.setItem(`k${i}`, 'x'.repeat(200));
}"""


def first_page(stub: Any, playwright: Any, profile: str) -> float:
    """Start (with `profile`, if any) to a page that answers, in ms."""
    request = pb.StartBrowserSessionRequest()
    if profile:
        request.profile_configuration.profile_identifier = profile
    began = time.perf_counter()
    session = stub.StartBrowserSession(request)
    stream = session.streams.automation_stream
    browser = playwright.chromium.connect_over_cdp(
        stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
    )
    page = browser.contexts[0].new_page()
    assert page.evaluate("1 + 1") == 2
    took = (time.perf_counter() - began) * 1000
    browser.close()
    stub.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=session.session_id))
    return took


def profiles(
    stub: Any, playwright: Any, channel: grpc.Channel, url: str, runs: int
) -> dict[str, Any]:
    control = pb_grpc.BrowserProfilesStub(channel)
    profile = control.CreateBrowserProfile(pb.CreateBrowserProfileRequest(name="bench")).profile_id
    session = stub.StartBrowserSession(pb.StartBrowserSessionRequest())
    stream = session.streams.automation_stream
    browser = playwright.chromium.connect_over_cdp(
        stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
    )
    page = browser.contexts[0].new_page()
    page.goto(url)
    page.evaluate(FILL)
    saves = []
    for _ in range(runs):
        began = time.perf_counter()
        stub.SaveBrowserSessionProfile(
            pb.SaveBrowserSessionProfileRequest(
                profile_identifier=profile, session_id=session.session_id
            )
        )
        saves.append((time.perf_counter() - began) * 1000)
    browser.close()
    stub.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=session.session_id))
    plain, restored = [], []
    for run in range(runs):
        for with_profile in (False, True) if run % 2 == 0 else (True, False):
            took = first_page(stub, playwright, profile if with_profile else "")
            (restored if with_profile else plain).append(took)
    saved = control.GetBrowserProfile(pb.GetBrowserProfileRequest(profile_id=profile))
    return {
        "state": "50 cookies, 200 local storage items of 200 characters",
        "save": stats(saves),
        "first_page_cold_with_profile": stats(restored),
        "first_page_cold_without": stats(plain),
        "restore_adds_ms_p50": round(statistics.median(restored) - statistics.median(plain), 1),
        "saved_profile": saved.profile_id,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=40)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "invoke",
        "rounds": args.rounds,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    times: dict[str, list[float]] = {name: [] for name in ACTIONS}
    playwright_click, long_typing = [], []
    with (
        tempfile.TemporaryDirectory(prefix="sbxi-") as tmp,
        serving_bytes(PAGE) as url,
        daemon(Path(tmp), env={"SANDBOX_FIRST_TAB": "true"}) as info,
        grpc.insecure_channel(info["grpc"]) as channel,
        sync_playwright() as playwright,
    ):
        stub = pb_grpc.BrowserSessionsStub(channel)
        session = stub.StartBrowserSession(pb.StartBrowserSessionRequest())
        stream = session.streams.automation_stream
        browser = playwright.chromium.connect_over_cdp(
            stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
        )
        page = browser.contexts[0].pages[0]
        page.goto(url)
        timed(stub, session.session_id, ACTIONS["mouseClick"])  # warm up both paths
        page.mouse.click(80, 40)
        for _ in range(args.rounds):
            for name, action in ACTIONS.items():
                times[name].append(timed(stub, session.session_id, action))
            began = time.perf_counter()
            page.mouse.click(80, 40)
            playwright_click.append((time.perf_counter() - began) * 1000)
        for _ in range(3):
            page.fill("#f", "")
            typing = {"key_type": pb.KeyTypeArguments(text="x" * 10_000)}
            long_typing.append(timed(stub, session.session_id, typing))
        assert len(page.input_value("#f")) == 10_000
        browser.close()
        stub.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=session.session_id))
        results["profiles"] = profiles(stub, playwright, channel, url, args.rounds // 3 or 1)
    results["actions"] = {name: stats(values) for name, values in times.items()}
    results["keyType_10000_chars"] = stats(long_typing)
    results["playwright_mouse_click"] = stats(playwright_click)
    results["ratios"] = {
        "mouseClick_vs_playwright_click_p50": round(
            statistics.median(times["mouseClick"]) / statistics.median(playwright_click), 3
        )
    }
    write_results("invoke", results)


if __name__ == "__main__":
    main()
