"""Live view: a person's browser shows the session's browser, switches
tabs, and drives it only after taking control (UpdateBrowserStream)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from helpers.waits import eventually
from helpers.workers import RunningWorker, connected_page
from worker.pb import sandbox_pb2 as pb

pytestmark = pytest.mark.integration

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"


async def set_stream(worker: RunningWorker, session_id: str, status: int) -> None:
    await worker.sessions.UpdateBrowserStream(
        pb.UpdateBrowserStreamRequest(
            browser_identifier="aws.browser.v1",
            session_id=session_id,
            stream_update=pb.StreamUpdate(
                automation_stream_update=pb.AutomationStreamUpdate(stream_status=status)
            ),
        )
    )


async def click_in_view(view: Any, css_x: float, css_y: float) -> None:
    """Click the viewer's canvas where the watched page has (css_x, css_y)."""
    box = await view.locator("#screen").bounding_box()
    size = await view.evaluate(
        "[Number(screen.dataset.cssWidth), Number(screen.dataset.cssHeight)]".replace(
            "screen", "document.getElementById('screen')"
        )
    )
    await view.mouse.click(
        box["x"] + css_x / size[0] * box["width"], box["y"] + css_y / size[1] * box["height"]
    )


async def pixel(view: Any, css_x: float, css_y: float) -> list[int]:
    return list(
        await view.evaluate(
            """([x, y]) => {
                const c = document.getElementById('screen');
                const px = c.getContext('2d').getImageData(
                    x / Number(c.dataset.cssWidth) * c.width,
                    y / Number(c.dataset.cssHeight) * c.height, 1, 1).data;
                return [px[0], px[1], px[2]];
            }""",
            [css_x, css_y],
        )
    )


async def test_the_live_view_shows_the_session_and_takes_control_only_when_given(
    worker: RunningWorker, web: str
) -> None:
    watched = await worker.start()
    viewer_host = await worker.start()  # the person's browser, for the test
    endpoint = watched.streams.live_view_stream.stream_endpoint
    token = watched.streams.automation_stream.token
    assert endpoint.startswith("http://") and endpoint.endswith("/live-view")
    async with connected_page(watched) as page, connected_page(viewer_host) as view:
        await page.goto(f"{web}/live.html")
        await view.goto(f"{endpoint}?token={token}")
        await view.wait_for_function("window.liveView.frames > 0", timeout=15000)
        assert await view.locator("#tabs option").all_text_contents() == ["Watched page"]
        background = await eventually(lambda: _near(pixel(view, 600, 500), (0, 128, 255)))
        assert background
        ARTIFACTS.mkdir(exist_ok=True)
        await view.screenshot(path=str(ARTIFACTS / "live-view.png"))

        # While the agent holds the automation stream, the view is read-only.
        await click_in_view(view, 200, 150)
        await view.wait_for_function(
            "document.getElementById('state').textContent.startsWith('view only')"
        )
        assert await page.evaluate("window.clicks") == 0

    await set_stream(worker, watched.session_id, pb.DISABLED)  # take control
    async with connected_page(viewer_host) as view:
        await view.goto(f"{endpoint}?token={token}")
        await view.wait_for_function("window.liveView.frames > 0", timeout=15000)
        await view.wait_for_function(
            "document.getElementById('state').textContent === 'you are in control'"
        )
        await click_in_view(view, 200, 150)
        await click_in_view(view, 200, 350)  # into the text field
        await view.keyboard.type("Hi there")
        await view.keyboard.press("Backspace")
        await view.wait_for_timeout(300)
    await set_stream(worker, watched.session_id, pb.ENABLED)  # give it back
    async with connected_page(watched) as page:
        pages = page.context.pages
        watched_page = next(p for p in pages if p.url.endswith("/live.html"))
        assert await watched_page.evaluate("window.clicks") == 1
        assert await watched_page.locator("#press").text_content() == "clicked 1"
        assert await watched_page.input_value("#typed") == "Hi ther"
    await worker.stop(watched.session_id)
    await worker.stop(viewer_host.session_id)


async def test_a_read_only_view_never_drives(worker: RunningWorker, web: str) -> None:
    watched = await worker.start()
    viewer_host = await worker.start()
    token = watched.streams.automation_stream.token
    endpoint = watched.streams.live_view_stream.stream_endpoint
    async with connected_page(watched) as page:
        await page.goto(f"{web}/live.html")
    await set_stream(worker, watched.session_id, pb.DISABLED)
    async with connected_page(viewer_host) as view:
        await view.goto(f"{endpoint}?token={token}&mode=view")
        await view.wait_for_function("window.liveView.frames > 0", timeout=15000)
        await click_in_view(view, 200, 150)
        await view.wait_for_timeout(300)
    await set_stream(worker, watched.session_id, pb.ENABLED)
    async with connected_page(watched) as page:
        watched_page = next(p for p in page.context.pages if p.url.endswith("/live.html"))
        assert await watched_page.evaluate("window.clicks") == 0
    await worker.stop(watched.session_id)
    await worker.stop(viewer_host.session_id)


async def test_the_live_view_refuses_a_wrong_token(worker: RunningWorker) -> None:
    import urllib.error
    import urllib.request

    watched = await worker.start()
    endpoint = watched.streams.live_view_stream.stream_endpoint
    with pytest.raises(urllib.error.HTTPError) as refused:
        # In a thread: the worker answers on this test's event loop.
        await asyncio.to_thread(urllib.request.urlopen, f"{endpoint}?token=wrong", timeout=5)
    refused.value.close()
    assert refused.value.code == 401
    await worker.stop(watched.session_id)


async def _near(value: Any, expected: tuple[int, int, int]) -> bool:
    got = await value
    return all(abs(a - b) <= 12 for a, b in zip(got, expected, strict=True))


async def test_the_viewer_lists_the_sessions_tabs_and_switches_between_them(
    worker: RunningWorker, web: str
) -> None:
    watched = await worker.start()
    viewer_host = await worker.start()
    token = watched.streams.automation_stream.token
    endpoint = watched.streams.live_view_stream.stream_endpoint
    async with connected_page(watched) as page, connected_page(viewer_host) as view:
        await page.goto(f"{web}/live.html")
        second = await page.context.new_page()
        await second.goto(f"{web}/index.html")
        await view.goto(f"{endpoint}?token={token}")
        await view.wait_for_function("window.liveView.frames > 0", timeout=15000)
        await eventually(lambda: _two_tabs(view))
        shown = await view.eval_on_selector("#tabs", "s => s.value")
        ids = await view.eval_on_selector_all("#tabs option", "os => os.map(o => o.value)")
        before = await pixel(view, 600, 500)
        await view.select_option("#tabs", value=next(i for i in ids if i != shown))
        await eventually(lambda: _changed(pixel(view, 600, 500), before))
    await worker.stop(watched.session_id)
    await worker.stop(viewer_host.session_id)


async def _two_tabs(view: Any) -> list[str] | None:
    titles = await view.locator("#tabs option").all_text_contents()
    return titles if len(titles) == 2 else None


async def _changed(value: Any, before: list[int]) -> bool:
    return await value != before
