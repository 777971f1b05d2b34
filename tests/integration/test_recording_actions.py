"""What a person (or an agent) does reaches the recording, and promptly:
a click on a link that navigates away, text typed into a field that never
loses focus, and console messages with the page's own location."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from helpers.recordings import (
    events_of,
    local_batches,
    local_folder,
    local_metadata,
    recording_browser,
)
from helpers.workers import RunningWorker, connected_page, session_page
from recorder import replay
from worker.cli.loopback import serving_directory

CLICK, MOUSE, INPUT = 2, 2, 5  # rrweb: MouseInteractions.Click, sources


def incremental(events: list[dict[str, Any]], source: int) -> list[dict[str, Any]]:
    return [e for e in events if e["type"] == 3 and e["data"].get("source") == source]


async def recorded(worker: RunningWorker, session_id: str) -> list[dict[str, Any]]:
    await local_metadata(worker, session_id)
    return events_of(local_batches(local_folder(worker, session_id)))


async def until_recording(page: Any) -> None:
    """rrweb starts once the page goes idle after load (within 1 s)."""
    await page.wait_for_load_state("load")
    await page.wait_for_timeout(1200)


async def test_every_click_on_a_link_that_navigates_away_is_recorded(
    worker: RunningWorker, web: str
) -> None:
    browser_id = await recording_browser(worker, "clicks")
    async with session_page(worker, browser_identifier=browser_id) as (page, started):
        for _ in range(4):
            await page.goto(f"{web}/actions.html")
            await until_recording(page)
            async with page.expect_navigation():
                await page.click("#away")
    events = await recorded(worker, started.session_id)
    clicks = [e for e in incremental(events, MOUSE) if e["data"].get("type") == CLICK]
    assert len(clicks) == 4, clicks


async def test_typed_text_is_recorded_as_typed_without_a_blur(
    worker: RunningWorker, web: str
) -> None:
    browser_id = await recording_browser(worker, "typing")
    async with session_page(worker, browser_identifier=browser_id) as (page, started):
        await page.goto(f"{web}/actions.html")
        await until_recording(page)
        await page.type("#name", "alice smith", delay=20)
        typed_at = time.time() * 1000
        await page.type("#q", "bob", delay=20)
        async with page.expect_navigation():
            await page.press("#q", "Enter")  # the form navigates: no blur first
    events = await recorded(worker, started.session_id)
    texts = [(e["data"].get("text"), e["timestamp"]) for e in incremental(events, INPUT)]
    full = [stamp for text, stamp in texts if text == "alice smith"]
    assert full and full[0] <= typed_at + 1000, texts  # at the last key, not later
    assert "bob" in [text for text, _ in texts]  # left in a field the Enter submitted


async def test_console_messages_keep_the_pages_own_location(
    worker: RunningWorker, web: str
) -> None:
    browser_id = await recording_browser(worker, "console")
    async with session_page(worker, browser_identifier=browser_id) as (page, started):
        await page.goto(f"{web}/actions.html")
        await until_recording(page)
        await page.click("#log")
        await page.wait_for_timeout(300)
    events = await recorded(worker, started.session_id)
    logged = [
        e["data"]["payload"]
        for e in events
        if e["type"] == 5
        and e["data"]["tag"] == "console"
        and e["data"]["payload"]["text"] == "logged by the page"
    ]
    assert logged and logged[0]["url"] == f"{web}/actions.html"
    assert logged[0]["line"] == 9  # 0-based: the console.log line of actions.html


async def test_the_viewers_end_shows_the_last_event_and_starts_at_the_first_page(
    worker: RunningWorker, web: str, tmp_path: Path
) -> None:
    browser_id = await recording_browser(worker, "viewer")
    async with session_page(worker, browser_identifier=browser_id) as (page, started):
        await page.goto(f"{web}/actions.html")
        await until_recording(page)
        await page.type("#name", "alice smith", delay=20)
    folder = local_folder(worker, started.session_id)
    await local_metadata(worker, started.session_id)
    meta, events = replay.load(str(folder))
    typed = [e for e in incremental(events, INPUT) if e["data"].get("text") == "alice smith"]
    # The recording as it would be had the last keystroke been its last event.
    kept = [e for e in events if e["type"] == 5 or e["timestamp"] <= typed[0]["timestamp"]]
    out = tmp_path / "viewer.html"
    out.write_text(replay.render(meta, kept), encoding="utf-8")
    viewer = await worker.start()
    try:
        with serving_directory(tmp_path) as files:
            async with connected_page(viewer) as view:
                await view.goto(f"{files}/viewer.html#end", wait_until="domcontentloaded")
                frame = view.frame_locator(".replayer-wrapper iframe")
                await frame.locator("#name").wait_for(timeout=15000)
                shown = await frame.locator("#name").input_value()
                first = await view.evaluate(
                    "sandboxReplay.player.getReplayer().getMetaData().startTime"
                )
    finally:
        await worker.stop(viewer.session_id)
    assert shown == "alice smith"  # not one keystroke short
    assert first == min(e["timestamp"] for e in kept if e["type"] == 4)  # the first page
