"""InvokeBrowser: what a person does at the screen, through stock boto3
(`invoke_browser`) and gRPC, on real Chromium: clicks, typing, a drag, a
scroll, ctrl+a, a screenshot that decodes to the page, and JavaScript
dialogs that block CDP clients answered the way a person answers them."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from botocore.exceptions import ClientError
from PIL import Image
from playwright.async_api import async_playwright

from helpers.hosted import client, keys_file
from helpers.recordings import (
    events_of,
    local_batches,
    local_folder,
    local_metadata,
    recording_browser,
)
from helpers.waits import eventually
from helpers.workers import RunningWorker, connected_page, make_config, running_worker
from worker.pb import sandbox_pb2 as pb

pytestmark = pytest.mark.integration

BUILT_IN = "aws.browser.v1"
WIDTH, HEIGHT = 1280, 720


@pytest_asyncio.fixture
async def api(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    config = make_config(tmp_path, http_api_keys_file=keys_file(tmp_path), first_tab=True)
    async with running_worker(config) as running:
        yield running


@pytest_asyncio.fixture
async def page(api: RunningWorker, web: str) -> AsyncIterator[tuple[Any, Any, str]]:
    """A session started with boto3, its page on invoke.html through
    Playwright; yields (data-plane client, page, session id)."""
    data = client(api, "bedrock-agentcore")
    started = await data.start_browser_session(
        browserIdentifier=BUILT_IN, viewPort={"width": WIDTH, "height": HEIGHT}
    )
    endpoint = started["streams"]["automationStream"]["streamEndpoint"]
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(endpoint)
        tab = browser.contexts[0].pages[0] if browser.contexts[0].pages else None
        tab = tab or await browser.contexts[0].new_page()
        await tab.goto(f"{web}/invoke.html")
        yield data, tab, started["sessionId"]
        await browser.close()
    await data.stop_browser_session(browserIdentifier=BUILT_IN, sessionId=started["sessionId"])


async def act(data: Any, session_id: str, **action: Any) -> dict[str, Any]:
    """One action; returns its result member (status, error, data)."""
    answer = await data.invoke_browser(
        browserIdentifier=BUILT_IN, sessionId=session_id, action=action
    )
    assert answer["sessionId"] == session_id
    [(kind, result)] = answer["result"].items()
    assert kind == next(iter(action))
    return dict(result)


async def ok(data: Any, session_id: str, **action: Any) -> dict[str, Any]:
    result = await act(data, session_id, **action)
    assert result["status"] == "SUCCESS", result
    return result


async def test_clicks_typing_shortcuts_a_drag_and_a_scroll_act_on_the_page(
    page: tuple[Any, Any, str],
) -> None:
    data, tab, session = page
    await ok(data, session, mouseClick={"x": 80, "y": 40})
    assert await tab.inner_text("#button") == "Pressed"
    await ok(data, session, mouseClick={"x": 80, "y": 40, "clickCount": 2})
    clicks = await tab.evaluate("window.clicks")
    assert [c["detail"] for c in clicks] == [1, 1, 2]  # a double click's second click
    await ok(data, session, mouseClick={"x": 80, "y": 40, "button": "RIGHT"})
    assert len(await tab.evaluate("window.clicks")) == 3  # no click event for the right button

    await ok(data, session, mouseClick={"x": 170, "y": 95})  # into the field
    await ok(data, session, keyType={"text": "hello world"})
    assert await tab.input_value("#field") == "hello world"
    await ok(data, session, keyShortcut={"keys": ["ctrl", "a"]})
    await ok(data, session, keyType={"text": "X"})  # replaces the selection
    assert await tab.input_value("#field") == "X"
    await ok(data, session, keyPress={"key": "Backspace"})
    await ok(data, session, keyPress={"key": "a", "presses": 3})
    assert await tab.input_value("#field") == "aaa"

    await ok(data, session, mouseMove={"x": 600, "y": 300})
    assert await tab.evaluate("window.lastMove") == [600, 300]
    before = await tab.evaluate("[box.offsetLeft, box.offsetTop]")
    await ok(data, session, mouseDrag={"startX": 50, "startY": 170, "endX": 450, "endY": 330})
    after = await tab.evaluate("[box.offsetLeft, box.offsetTop]")
    assert (after[0] - before[0], after[1] - before[1]) == (400, 160)

    await ok(data, session, mouseScroll={"x": 600, "y": 300, "deltaY": 700})
    await eventually(lambda: tab.evaluate("window.scrollY > 0"), timeout=5)


async def test_a_screenshot_is_a_png_of_the_page(page: tuple[Any, Any, str]) -> None:
    data, tab, session = page
    shot = await ok(data, session, screenshot={"format": "PNG"})
    image = Image.open(io.BytesIO(shot["data"]))
    # The page's viewport: the session's window less the browser's own bars.
    inner = tuple(await tab.evaluate("[innerWidth, innerHeight]"))
    assert image.format == "PNG" and image.size == inner and inner[0] == WIDTH
    # The red box at (20..80, 140..200), on a white page.
    red, green, blue = image.convert("RGB").getpixel((50, 170))
    assert red > 180 and green < 80 and blue < 80
    assert image.convert("RGB").getpixel((inner[0] - 50, inner[1] - 50)) == (255, 255, 255)


async def test_a_blocking_alert_is_answered_and_the_client_carries_on(
    page: tuple[Any, Any, str],
) -> None:
    data, tab, session = page
    tab.on("dialog", lambda dialog: None)  # Playwright leaves it open, as Puppeteer does
    blocked = asyncio.ensure_future(tab.evaluate("document.getElementById('alert').click()"))
    await eventually(lambda: act_fails(data, session), timeout=10)
    failed = await act(data, session, mouseClick={"x": 80, "y": 40})
    assert failed["status"] == "FAILED"
    assert "alert is open ('Stop right there')" in failed["error"]
    assert "Escape" in failed["error"]
    assert not blocked.done()  # the client is still stuck behind the alert
    await ok(data, session, keyPress={"key": "Escape"})
    await asyncio.wait_for(blocked, 10)
    assert await tab.evaluate("window.afterAlert") is True
    assert await tab.title() == "Invoke"

    # A click that opens an alert answers once the alert is up; Enter closes it.
    await ok(data, session, mouseClick={"x": 260, "y": 40})
    await ok(data, session, keyPress={"key": "Enter"})
    assert await tab.evaluate("window.afterAlert") is True

    # A prompt gets what is typed while it is open.
    asked = asyncio.ensure_future(tab.evaluate("prompt('Your name?')"))
    await eventually(lambda: act_fails(data, session), timeout=10)
    await ok(data, session, keyType={"text": "Ada"})
    await ok(data, session, keyPress={"key": "Enter"})
    assert await asyncio.wait_for(asked, 10) == "Ada"


async def act_fails(data: Any, session: str) -> bool:
    """A screenshot cannot be taken while a dialog blocks the page."""
    result = await act(data, session, screenshot={})
    return result["status"] == "FAILED" and "is open" in result.get("error", "")


async def test_bad_actions_are_refused_naming_the_field(page: tuple[Any, Any, str]) -> None:
    data, _, session = page
    refusals = {
        "action.mouseClick.x": {"mouseClick": {"x": 0, "y": 40}},
        "action.mouseMove.y": {"mouseMove": {"x": 40, "y": HEIGHT - 2}},
        "action.mouseDrag.endX": {
            "mouseDrag": {"startX": 50, "startY": 50, "endX": WIDTH, "endY": 50}
        },
        "action.mouseScroll.deltaY": {"mouseScroll": {"x": 50, "y": 50, "deltaY": 1001}},
        "action.keyPress.key": {"keyPress": {"key": "Hyper"}},
        "action.keyPress.presses": {"keyPress": {"key": "a", "presses": 101}},
        "action.keyShortcut.keys[1]": {"keyShortcut": {"keys": ["ctrl", "nokey"]}},
        "action.keyType.text": {"keyType": {"text": "x" * 10_001}},
        "action.mouseClick.clickCount": {"mouseClick": {"x": 50, "y": 50, "clickCount": 11}},
    }
    for field, action in refusals.items():
        with pytest.raises(ClientError) as refused:
            await data.invoke_browser(browserIdentifier=BUILT_IN, sessionId=session, action=action)
        error = refused.value.response
        assert error["Error"]["Code"] == "ValidationException", (field, error)
        assert error["fieldList"][0]["name"] == field, error
    with pytest.raises(ClientError) as missing:
        await data.invoke_browser(
            browserIdentifier=BUILT_IN, sessionId="0" * 26, action={"mouseMove": {"x": 5, "y": 5}}
        )
    assert missing.value.response["Error"]["Code"] == "ResourceNotFoundException"


async def test_actions_work_without_a_client_and_show_in_the_recording(
    api: RunningWorker, web: str
) -> None:
    # No automation client at all: gRPC only, the session's own first tab.
    browser = await recording_browser(api, "invoked")
    started = await api.start(browser_identifier=browser)

    def invoke(**action: Any) -> Any:
        return api.sessions.InvokeBrowser(
            pb.InvokeBrowserRequest(
                browser_identifier=browser,
                session_id=started.session_id,
                action=pb.BrowserAction(**action),
            )
        )

    done = await invoke(key_press=pb.KeyPressArguments(key="Tab"))
    assert done.status == pb.SUCCESS and done.action == "keyPress"
    shot = await invoke(screenshot=pb.ScreenshotArguments())
    assert shot.status == pb.SUCCESS and Image.open(io.BytesIO(shot.data)).format == "PNG"
    # A client loads the page and leaves; the actions come with nobody connected.
    async with connected_page(started) as tab:
        await tab.goto(f"{web}/invoke.html")
        await tab.wait_for_timeout(1200)  # rrweb is recording
    clicked = await invoke(mouse_click=pb.MouseClickArguments(x=80, y=40))
    assert clicked.status == pb.SUCCESS, clicked.error
    typed = await invoke(mouse_click=pb.MouseClickArguments(x=170, y=95))
    assert typed.status == pb.SUCCESS
    await invoke(key_type=pb.KeyTypeArguments(text="typed by a person"))
    await api.stop(started.session_id, browser)
    await local_metadata(api, started.session_id)
    events = events_of(local_batches(local_folder(api, started.session_id)))
    interactions = [e for e in events if e["type"] == 3 and e["data"].get("source") == 2]
    assert any(e["data"].get("type") == 2 for e in interactions), "no click recorded"
    inputs = [e for e in events if e["type"] == 3 and e["data"].get("source") == 5]
    assert inputs and "typed by a person" in str(inputs[-1]["data"])
