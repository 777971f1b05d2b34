"""The automation endpoint with real clients: Playwright, Puppeteer and a raw
websocket client, against real Chromium through the worker."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import websockets
from playwright.async_api import async_playwright
from websockets.asyncio.client import connect

from helpers.faults import report_fault
from helpers.recordings import local_metadata, recording_browser
from helpers.waits import eventually
from helpers.workers import ROOT, RunningWorker, browser_root, session_page, session_processes
from worker.cli.cdp_client import AsyncCDP, CommandFailed
from worker.pb import sandbox_pb2 as pb

NODE_CLIENT = ROOT / "tests" / "js" / "puppeteer_drive.mjs"


def endpoint(started: Any) -> tuple[str, str]:
    stream = started.streams.automation_stream
    return stream.stream_endpoint, stream.token


@pytest.mark.parametrize("flavour", [pb.CHROMIUM, pb.HEADLESS_SHELL])
async def test_playwright_drives_a_session(worker: RunningWorker, web: str, flavour: int) -> None:
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name="pw", flavour=flavour)
    )
    started = await worker.start(browser_identifier=created.browser_id)
    url, token = endpoint(started)
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=20000
        )
        context = browser.contexts[0]  # the hosted SDK's clients rely on it
        page = context.pages[0] if context.pages else await context.new_page()
        await page.goto(f"{web}/index.html")
        await page.click("#go")
        assert await page.text_content("#out") == "clicked 1"
        assert await page.evaluate("1 + 2") == 3
        shot = await page.screenshot()
        assert shot[:8] == b"\x89PNG\r\n\x1a\n"
        second = await context.new_page()
        await second.goto(f"{web}/second.html")
        assert await second.title() == "second tab"
        assert len(context.pages) >= 2
        await browser.close()
    got = await worker.get(started.session_id, created.browser_id)
    assert got.status == pb.READY  # a client leaving does not end the session


@pytest.mark.skipif(shutil.which("node") is None, reason="node is installed by deploy/run.sh")
async def test_puppeteer_drives_a_session_while_playwright_is_connected(
    worker: RunningWorker, web: str
) -> None:
    started = await worker.start()
    url, token = endpoint(started)
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=20000
        )
        page = await browser.contexts[0].new_page()
        await page.goto(f"{web}/second.html")
        proc = await asyncio.create_subprocess_exec(
            "node",
            str(NODE_CLIENT),
            url,
            token,
            web,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        try:
            out, err = await asyncio.wait_for(proc.communicate(), 60)
        finally:
            if proc.returncode is None:
                os.killpg(proc.pid, signal.SIGKILL)
                await proc.wait()
        assert proc.returncode == 0, err.decode()[-2000:]
        seen = json.loads(out.decode().strip().splitlines()[-1])
        assert seen["out"] == "clicked 1"
        assert seen["heading"] == "hello from the test origin"
        assert seen["shotBytes"] > 1000
        assert "second tab" in seen["titles"]
        # Puppeteer's browser.close() sent Browser.close: it ended only that
        # client, so the Playwright client and the session go on.
        assert await page.evaluate("document.title") == "second tab"
        await browser.close()
    got = await worker.get(started.session_id)
    assert got.status == pb.READY


async def test_wrong_missing_or_another_sessions_token_is_refused(worker: RunningWorker) -> None:
    first = await worker.start()
    second = await worker.start()
    url, token = endpoint(first)
    _, other_token = endpoint(second)
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {other_token}"},
    ):
        with pytest.raises(websockets.InvalidStatus) as info:
            async with connect(url, additional_headers=headers):
                pass
        assert info.value.response.status_code == 401
    async with connect(url + f"?token={token}") as ws:  # for clients without headers
        reply = await AsyncCDP(ws).call("Browser.getVersion")
        assert "Chrome" in reply["product"]
    unknown = url.replace(first.session_id, "01NOSUCHSESSION000000000000")
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(unknown, additional_headers={"Authorization": f"Bearer {token}"}):
            pass
    assert info.value.response.status_code == 404


async def test_disabling_the_stream_closes_clients_and_refuses_new_ones(
    worker: RunningWorker,
) -> None:
    started = await worker.start()
    url, token = endpoint(started)
    auth = {"Authorization": f"Bearer {token}"}

    async def update(status: int) -> Any:
        return await worker.sessions.UpdateBrowserStream(
            pb.UpdateBrowserStreamRequest(
                session_id=started.session_id,
                stream_update=pb.StreamUpdate(
                    automation_stream_update=pb.AutomationStreamUpdate(stream_status=status)
                ),
            )
        )

    async with AsyncCDP.connect(url, token, timeout=5) as cdp:
        await cdp.call("Browser.getVersion")
        updated = await update(pb.DISABLED)
        assert updated.streams.automation_stream.stream_status == pb.DISABLED
        with pytest.raises(websockets.ConnectionClosed):
            await cdp.call("Browser.getVersion")
    with pytest.raises(websockets.InvalidStatus) as info:
        async with connect(url, additional_headers=auth):
            pass
    assert info.value.response.status_code == 403
    await update(pb.ENABLED)
    async with AsyncCDP.connect(url, token) as cdp:
        assert "product" in await cdp.call("Browser.getVersion")


async def test_clients_see_only_their_own_sessions(worker: RunningWorker) -> None:
    started = await worker.start()
    url, token = endpoint(started)
    async with AsyncCDP.connect(url, token) as a, AsyncCDP.connect(url, token) as b:
        created = await a.call("Target.createTarget", url="about:blank")
        attached = await a.call("Target.attachToTarget", targetId=created["targetId"], flatten=True)
        child = attached["sessionId"]
        mine = await a.call("Runtime.evaluate", child, expression="6*7")
        assert mine["result"]["value"] == 42
        with pytest.raises(CommandFailed) as theirs:
            await b.call("Runtime.evaluate", child, expression="1")
        assert theirs.value.code == -32001


async def test_a_browser_crash_closes_connected_clients(worker: RunningWorker) -> None:
    recorded = await recording_browser(worker, "crashing")
    started = await worker.start(browser_identifier=recorded)
    bystander = await worker.start()
    url, token = endpoint(started)
    assert worker.server.manager is not None
    process = worker.server.manager.live[started.session_id].process
    assert process is not None
    async with connect(url, additional_headers={"Authorization": f"Bearer {token}"}) as ws:
        await AsyncCDP(ws).call("Browser.getVersion")  # answered: the browser has booted
        os.kill(process.pid, signal.SIGKILL)
        with pytest.raises(websockets.ConnectionClosed) as info:
            async with asyncio.timeout(10):
                while True:
                    await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011

    async def ended() -> Any:
        got = await worker.get(started.session_id, recorded)
        return got if got.status == pb.TERMINATED else None

    got = await eventually(ended)
    assert got.termination_reason == pb.BROWSER_EXITED
    assert (await worker.get(bystander.session_id)).status == pb.READY
    await eventually(lambda: not session_processes(worker.config.state_dir, started.session_id))
    assert worker.server.manager.in_use == 1
    meta = await local_metadata(worker, started.session_id)
    assert meta["complete"] is False and meta["terminationReason"] == "BROWSER_EXITED"
    assert any("browser exited" in r for r in meta["incompleteReasons"])
    report_fault(
        "browser of a recorded session SIGKILLed under a connected client",
        "client closed with 1011; session ends BROWSER_EXITED; processes gone; capacity back",
        "1 of 1 kept READY",
        "recording finalised, marked incomplete (the browser exited)",
    )


async def test_the_daemons_own_cdp_calls_work_beside_a_client(
    worker: RunningWorker, web: str
) -> None:
    started = await worker.start()
    url, token = endpoint(started)
    assert worker.server.manager is not None
    process = worker.server.manager.live[started.session_id].process
    assert process is not None
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(
            url, headers={"Authorization": f"Bearer {token}"}, timeout=20000
        )
        page = await browser.contexts[0].new_page()
        await page.goto(f"{web}/index.html")
        # The daemon's root connection is separate from every client's.
        targets = await process.connection.call("Target.getTargets", timeout=10)
        urls = [t["url"] for t in targets["targetInfos"] if t["type"] == "page"]
        assert f"{web}/index.html" in urls
        await page.click("#go")
        assert await page.text_content("#out") == "clicked 1"
        await browser.close()


async def test_downloads_land_in_the_sessions_directory_whatever_path_a_client_names(
    worker: RunningWorker, web: str, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "not-the-session"
    elsewhere.mkdir()
    async with session_page(worker) as (page, started):
        cdp = await page.context.browser.new_browser_cdp_session()
        await cdp.send(
            "Browser.setDownloadBehavior",
            {"behavior": "allow", "downloadPath": str(elsewhere), "eventsEnabled": True},
        )
        await page.goto(f"{web}/index.html")
        await page.evaluate(
            "() => { const a = document.createElement('a'); a.href = 'report.bin';"
            " a.download = 'report.bin'; document.body.appendChild(a); a.click(); }"
        )
        downloads = browser_root(worker.config.state_dir, started.session_id) / "downloads"
        saved = await eventually(lambda: list(downloads.glob("report*.bin")), timeout=10)
        assert saved[0].read_text() == "quarterly numbers\n"
        assert not list(elsewhere.iterdir())


async def test_clients_and_pages_cannot_reach_the_workers_files(
    worker: RunningWorker, web: str
) -> None:
    from playwright.async_api import Error as PlaywrightError

    async with session_page(worker) as (page, started):
        await page.goto(f"{web}/index.html")
        cdp = await page.context.new_cdp_session(page)
        with pytest.raises(PlaywrightError, match="file URLs are not allowed"):
            await cdp.send("Page.navigate", {"url": "file:///etc/hostname"})
        browser_cdp = await page.context.browser.new_browser_cdp_session()
        with pytest.raises(PlaywrightError, match="file URLs are not allowed"):
            await browser_cdp.send("Target.createTarget", {"url": "FILE:///etc/passwd"})
        # A page cannot go there by itself either (Chromium's own rule).
        await page.evaluate("location.href = 'file:///etc/hostname'")
        await page.wait_for_timeout(300)
        assert page.url.startswith(web)
        await page.set_content("<input type=file id=f>")
        node = await cdp.send("DOM.getDocument")
        found = await cdp.send(
            "DOM.querySelector", {"nodeId": node["root"]["nodeId"], "selector": "#f"}
        )
        state_db = str(worker.config.db_path)
        with pytest.raises(PlaywrightError, match="downloads directory"):
            await cdp.send(
                "DOM.setFileInputFiles", {"files": [state_db], "nodeId": found["nodeId"]}
            )
        escape = str(browser_root(worker.config.state_dir, started.session_id) / "downloads/../..")
        with pytest.raises(PlaywrightError, match="downloads directory"):
            await cdp.send("DOM.setFileInputFiles", {"files": [escape], "nodeId": found["nodeId"]})
        assert await page.evaluate("document.getElementById('f').files.length") == 0


async def test_clients_never_see_the_browsers_own_ui_targets(worker: RunningWorker) -> None:
    """Full Chromium makes WebUI targets for its omnibox popup (type
    browser_ui) with the first window; clients that attach to every target
    they are shown (browser-use) failed on them."""
    started = await worker.start()  # the built-in browser: full Chromium
    url, token = endpoint(started)
    async with AsyncCDP.connect(url, token) as cdp:
        await cdp.call("Target.setDiscoverTargets", discover=True)
        await cdp.call("Target.createTarget", url="about:blank")
        await asyncio.sleep(1.0)  # the browser's UI targets come with the window
        listed = await cdp.call("Target.getTargets")
        everything = await cdp.call("Target.getTargets", filter=[{}])
        auto = await cdp.call(
            "Target.setAutoAttach", autoAttach=True, waitForDebuggerOnStart=False, flatten=True
        )
    types = [t["type"] for t in listed["targetInfos"]]
    assert "page" in types and "browser_ui" not in types, types
    assert "browser_ui" not in [t["type"] for t in everything["targetInfos"]]
    assert auto == {}
