"""All tabs of a recording as one timeline, the way readers of the hosted
layout play it: every event, in order, in one rrweb player. The player must
end on the tab in use, with that tab's own scroll and changes, never with
one tab's events applied to another tab's page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers.recordings import events_of, local_batches, local_folder, recording_browser
from helpers.waits import eventually
from helpers.workers import connected_page, make_config, running_worker, session_page
from recorder import assets
from worker.cli.loopback import serving_directory

pytestmark = pytest.mark.integration

ONE_TIMELINE = """<!doctype html>
<html><head><meta charset="utf-8"><style>{css}</style></head><body>
<div id="player"></div>
<script>{player}</script>
<script>
  const events = {events};
  const Player = rrwebPlayer.default || rrwebPlayer.Player;
  const player = new Player({{target: document.getElementById("player"),
    props: {{events, autoPlay: false, showWarning: false, mouseTail: false}}}});
  player.goto(events[events.length - 1].timestamp - events[0].timestamp + 1, false);
  window.played = true;
</script></body></html>
"""


async def one_timeline_end(worker: Any, folder: Path, tmp_path: Path) -> dict[str, Any]:
    """Play every event of the recording in one player, as a hosted-layout
    reader does, and read the page it ends on."""
    events = sorted(events_of(local_batches(folder)), key=lambda e: e["seq"])
    html = ONE_TIMELINE.format(
        css=assets.read(assets.PLAYER_CSS),
        player=assets.read(assets.PLAYER),
        events=json.dumps(events).replace("</", "<\\/"),
    )
    out = tmp_path / "timeline"
    out.mkdir()
    (out / "one.html").write_text(html)
    viewer = await worker.start()
    try:
        with serving_directory(out) as files:
            async with connected_page(viewer) as view:
                await view.goto(f"{files}/one.html", wait_until="domcontentloaded")
                await view.wait_for_function("window.played === true", timeout=15000)
                frame = view.frame_locator(".replayer-wrapper iframe")
                await frame.locator("body").wait_for(timeout=15000)
                seen: dict[str, Any] = await view.evaluate(
                    """() => {
                        const w = document.querySelector('.replayer-wrapper iframe').contentWindow;
                        return {text: w.document.body.innerText, scrollY: w.scrollY};
                    }"""
                )
                return seen
    finally:
        await worker.stop(viewer.session_id)


async def test_one_timeline_shows_the_tab_in_use_with_its_own_scroll(
    tmp_path: Path, web: str
) -> None:
    async with running_worker(make_config(tmp_path)) as worker:
        browser_id = await recording_browser(worker, "tabs")
        async with session_page(worker, browser_identifier=browser_id) as (first, started):
            await first.goto(f"{web}/tall.html")
            await first.wait_for_timeout(400)  # the recorder starts after load
            second = await first.context.new_page()
            await second.goto(f"{web}/ticking.html")
            await second.wait_for_timeout(600)  # ticking, and on show
            # The agent goes back to the first tab: clicks and scrolls there
            # while the second keeps changing.
            await first.click("#note")
            await first.mouse.wheel(0, 900)
            await first.wait_for_function("scrollY >= 900")
            await first.wait_for_timeout(800)
        folder = local_folder(worker, started.session_id)
        await eventually(lambda: (folder / "metadata.json").exists(), timeout=20)
        events = events_of(local_batches(folder))
        end = await one_timeline_end(worker, folder, tmp_path)
    # The player ends on the first tab, as the agent left it.
    assert "first tab: clicked" in end["text"], end
    assert "second tab" not in end["text"], end
    assert end["scrollY"] > 300, end
    # Because the first tab, back in use, sent a fresh full snapshot after
    # the second tab's, and the second tab's ticks after that were wrapped.
    snapshots = [e["tab"] for e in events if e["type"] == 2]
    assert snapshots[:2] == [1, 2] and snapshots[-1] == 1, snapshots
    assert any(e["type"] == 5 and e["data"]["tag"] == "other-tab" for e in events)
