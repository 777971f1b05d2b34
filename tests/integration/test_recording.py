"""Session recording end to end: rrweb in every page, CDP capture, batches
and metadata.json in the S3 layout, with real Chromium and Playwright."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from helpers.recordings import (
    custom,
    drive,
    events_of,
    local_batches,
    local_folder,
    recording_browser,
)
from helpers.waits import eventually
from helpers.workers import connected_page, make_config, running_worker, session_page
from worker.cli import main
from worker.cli.loopback import serving_directory
from worker.pb import sandbox_pb2 as pb

pytestmark = pytest.mark.integration


async def recorded_drive(worker: Any, name: str, web: str) -> tuple[Any, Path, dict[str, Any]]:
    """A recorded session driven by `drive` and stopped: (Start's answer, the
    recording's folder, its metadata once written)."""
    browser_id = await recording_browser(worker, name)
    async with session_page(worker, browser_identifier=browser_id) as (page, started):
        await drive(page, web)
    folder = local_folder(worker, started.session_id)
    return started, folder, await eventually(lambda: _metadata(folder), timeout=20)


async def test_local_recording_holds_dom_input_console_network_and_both_tabs(
    tmp_path: Path, web: str
) -> None:
    async with running_worker(make_config(tmp_path)) as worker:
        started, folder, meta = await recorded_drive(worker, "rec", web)
        got = await worker.get(started.session_id, started.browser_identifier)
    assert got.session_replay_artifact == folder.resolve().as_uri() + "/"
    events = events_of(local_batches(folder))
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert meta["eventCount"] == len(events) and meta["complete"] is True
    assert meta["terminationReason"] == "STOPPED"
    types = {e["type"] for e in events}
    assert {2, 3, 4} <= types  # full snapshot, incremental, meta
    text = json.dumps(events)
    assert "Order form" in text and "second tab content" in text
    assert "hunter2-password" not in text and "fetch-secret-value" not in text
    consoles = custom(events, "console")
    assert any("order sent by Ada" in c["text"] for c in consoles)
    fetches = [n for n in custom(events, "network") if "data.json" in n["url"]]
    assert fetches and fetches[0]["status"] == 200
    assert fetches[0]["requestHeaders"]["Authorization"] == "[redacted]"
    methods = {c["method"] for c in custom(events, "cdp")}
    assert "Target.createTarget" in methods or "Page.navigate" in methods


def _metadata(folder: Path) -> dict[str, Any] | None:
    path = folder / "metadata.json"
    return json.loads(path.read_text()) if path.exists() else None


ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def test_the_replay_viewer_rebuilds_the_recorded_pages_final_dom(
    tmp_path: Path, web: str
) -> None:
    async with running_worker(make_config(tmp_path)) as worker:
        started, _, _ = await recorded_drive(worker, "replayed", web)
        out = tmp_path / "viewer" / "viewer.html"
        out.parent.mkdir()
        argv = ["replay", started.session_id, "--state-dir", str(worker.config.state_dir)]
        assert await asyncio.to_thread(main.main, [*argv, "--out", str(out)]) == 0
        viewer = await worker.start()  # the viewer runs in a session of its own
        # Sessions may not open file: URLs, so the file is served on loopback.
        try:
            with serving_directory(out.parent) as files:
                async with connected_page(viewer) as view:
                    # rrweb's replay frame never finishes loading: no load event.
                    await view.goto(f"{files}/viewer.html#end", wait_until="domcontentloaded")
                    frame = view.frame_locator(".replayer-wrapper iframe")
                    await frame.locator("#status").wait_for(timeout=15000)
                    status = await frame.locator("#status").text_content()
                    title = await frame.locator("#title").text_content()
                    entries = await view.locator("#entries li").all_text_contents()
                    ARTIFACTS.mkdir(exist_ok=True)
                    await view.screenshot(path=str(ARTIFACTS / "replay-viewer.png"))
        finally:
            await worker.stop(viewer.session_id)
    assert title == "Order form"
    assert status == "saved: order 42 accepted"  # the DOM after the click and the fetch
    assert any("order sent by Ada" in e for e in entries)
    assert any("data.json" in e for e in entries)


@pytest.mark.parametrize(
    ("flavour", "warm"),
    [("headless-shell", False), ("chromium", True), ("headless-shell", True)],
)
async def test_both_flavours_record_cold_and_warm_browsers(
    tmp_path: Path, web: str, flavour: str, warm: bool
) -> None:
    fields: dict[str, Any] = {"warm_pool": (f"{flavour}=1",)} if warm else {}
    async with running_worker(make_config(tmp_path, **fields)) as worker:
        manager = worker.server.manager
        assert manager is not None
        warm_ids = []
        if warm:
            idle = await eventually(lambda: manager.pool.idle[flavour], timeout=30)
            warm_ids = [idle[0].session_id]
        pb_flavour = pb.HEADLESS_SHELL if flavour == "headless-shell" else pb.CHROMIUM
        browser_id = await recording_browser(worker, "flavoured", flavour=pb_flavour)
        async with session_page(worker, browser_identifier=browser_id) as (page, started):
            await page.goto(f"{web}/record.html")
            await page.fill("#name", "Grace")
            await page.click("#go")
            await page.wait_for_function("document.querySelector('#status').textContent != 'idle'")
            await page.wait_for_timeout(400)
        folder = local_folder(worker, started.session_id)
        meta = await eventually(lambda: _metadata(folder), timeout=20)
    assert warm_ids == ([started.session_id] if warm else [])  # the pooled browser served it
    events = events_of(local_batches(folder))
    assert meta["complete"] and [e["seq"] for e in events] == list(range(1, len(events) + 1))
    snapshots = [e for e in events if e["type"] == 2]
    assert snapshots and "Order form" in json.dumps(snapshots)
    assert any("order sent by Grace" in c["text"] for c in custom(events, "console"))


async def test_an_out_of_process_iframe_is_recorded_through_its_parent(
    tmp_path: Path, web: str
) -> None:
    async with running_worker(make_config(tmp_path)) as worker:
        browser_id = await recording_browser(worker, "framed")
        async with session_page(worker, browser_identifier=browser_id) as (page, started):
            await page.goto(f"{web}/framed.html")
            frame = page.frame_locator("#child")
            await frame.locator("#inner").wait_for()
            await page.wait_for_timeout(1200)  # both recorders started
            await frame.locator("#more").click()
            await page.wait_for_timeout(400)
        folder = local_folder(worker, started.session_id)
        await eventually(lambda: _metadata(folder), timeout=20)
    events = events_of(local_batches(folder))
    attached = [t for t in custom(events, "target") if t.get("type") == "iframe"]
    assert attached, "the cross-site frame was attached as its own target"
    text = json.dumps([e for e in events if e["type"] != 5])
    assert "cross-site frame content" in text
    assert "frame clicked" in text
