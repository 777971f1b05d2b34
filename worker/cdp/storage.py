"""A browser's cookies and local storage, read out and put back (browser
profiles).

Cookies come and go whole through the browser target (`Storage.getCookies`
/ `Storage.setCookies`): HttpOnly, Secure, SameSite, partitioned and
session cookies alike. Local storage belongs to an origin, and CDP reaches
it only from a frame of that origin: an origin that a tab shows is read in
that tab; any other is reached in a scratch tab whose navigation to the
origin the worker answers itself (Fetch interception serves an empty page,
so no request leaves the browser). Closing a browser's last tab ends its
browsing session, and Chromium then drops its session cookies: so a
restore (into a browser no client has reached yet) uses the browser's own
first tab, or a new one that stays, and leaves it blank; a save closes its
scratch tab only when another tab remains.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import AsyncIterator, Mapping
from typing import Any

from worker.cdp import CDPError, Connection, Message

SCRATCH_PAGE = base64.b64encode(b"<!doctype html><title>profile</title>").decode()
# What Storage.setCookies takes of what Storage.getCookies gives.
COOKIE_FIELDS = (
    "name",
    "value",
    "domain",
    "path",
    "secure",
    "httpOnly",
    "sameSite",
    "expires",
    "priority",
    "sourceScheme",
    "sourcePort",
    "partitionKey",
)
READ_STORAGE = "JSON.stringify(Object.entries(localStorage))"
WRITE_STORAGE = (
    "(items => { localStorage.clear();"
    " for (const [k, v] of items) localStorage.setItem(k, v); return items.length; })"
)


def _cookie(raw: Message) -> Message:
    cookie = {k: raw[k] for k in COOKIE_FIELDS if k in raw}
    if raw.get("session"):
        cookie.pop("expires", None)  # a session cookie has none
    return cookie


async def capture(
    conn: Connection, browser: str, shown: Mapping[str, str], visited: set[str], timeout: float
) -> dict[str, Any]:
    """Cookies, and local storage of every origin in `visited`; `shown`
    maps origins to a page session showing them."""
    cookies = (await conn.call("Storage.getCookies", {}, browser, timeout))["cookies"]
    storage: dict[str, dict[str, str]] = {}
    for origin, page in shown.items():
        storage[origin] = dict(json.loads(await _evaluate(conn, page, READ_STORAGE, timeout)))
    elsewhere = sorted(visited - set(shown))
    if elsewhere:
        async with _scratch(conn, browser, timeout) as page:
            for origin in elsewhere:
                await _visit(conn, page, origin, timeout)
                storage[origin] = dict(
                    json.loads(await _evaluate(conn, page, READ_STORAGE, timeout))
                )
    return {
        "cookies": [_cookie(c) for c in cookies],
        "localStorage": {origin: items for origin, items in storage.items() if items},
    }


async def apply(conn: Connection, browser: str, state: Mapping[str, Any], timeout: float) -> None:
    """Put `state` (from `capture`) into a browser no client uses yet."""
    storage: Mapping[str, Mapping[str, str]] = state.get("localStorage") or {}
    if storage:
        async with _scratch(conn, browser, timeout, keep=True) as page:
            for origin, items in storage.items():
                await _visit(conn, page, origin, timeout)
                script = f"{WRITE_STORAGE}({json.dumps(list(items.items()))})"
                await _evaluate(conn, page, script, timeout)
    cookies = state.get("cookies") or []
    if cookies:
        await conn.call("Storage.setCookies", {"cookies": cookies}, browser, timeout)


# -- the scratch tab


@contextlib.asynccontextmanager
async def _scratch(
    conn: Connection, browser: str, timeout: float, keep: bool = False
) -> AsyncIterator[str]:
    """A tab to reach origins from. With `keep`, the browser's own tab if it
    has one (or a new one), left on about:blank afterwards instead of
    closed: closing a browser's last tab ends its browsing session, and
    Chromium then drops its session cookies."""
    target = ""
    if keep:
        infos = (await conn.call("Target.getTargets", {}, browser, timeout))["targetInfos"]
        target = next((str(i["targetId"]) for i in infos if i.get("type") == "page"), "")
    if not target:
        created = await conn.call("Target.createTarget", {"url": "about:blank"}, browser, timeout)
        target = str(created["targetId"])
    attached = await conn.call(
        "Target.attachToTarget", {"targetId": target, "flatten": True}, browser, timeout
    )
    page = str(attached["sessionId"])
    try:
        conn.on_session_event(page, lambda event: _fulfil(conn, page, event))
        await conn.call(
            "Fetch.enable", {"patterns": [{"urlPattern": "*", "requestStage": "Request"}]}, page
        )
        yield page
    finally:
        with contextlib.suppress(CDPError, TimeoutError):
            if keep or await _pages(conn, browser, timeout) < 2:
                await conn.call("Fetch.disable", None, page, timeout)
                await conn.call("Page.navigate", {"url": "about:blank"}, page, timeout)
                await conn.call("Target.detachFromTarget", {"sessionId": page}, browser, timeout)
            else:
                await conn.call("Target.closeTarget", {"targetId": target}, browser, timeout)
        conn.on_session_event(page, None)


async def _pages(conn: Connection, browser: str, timeout: float) -> int:
    infos = (await conn.call("Target.getTargets", {}, browser, timeout))["targetInfos"]
    return sum(1 for info in infos if info.get("type") == "page")


def _fulfil(conn: Connection, page: str, event: Message) -> None:
    """Every request of the scratch tab is answered here: nothing leaves."""
    if event.get("method") != "Fetch.requestPaused":
        return
    params = event.get("params") or {}
    conn.send(
        "Fetch.fulfillRequest",
        {
            "requestId": params.get("requestId"),
            "responseCode": 200,
            "responseHeaders": [{"name": "Content-Type", "value": "text/html"}],
            "body": SCRATCH_PAGE,
        },
        page,
        lambda _reply: None,
    )


async def _visit(conn: Connection, page: str, origin: str, timeout: float) -> None:
    await conn.call("Page.navigate", {"url": origin + "/"}, page, timeout)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while await _evaluate(conn, page, "location.origin", timeout) != origin:
        if loop.time() > deadline:
            raise TimeoutError(f"the scratch tab did not reach {origin}")
        await asyncio.sleep(0.02)


async def _read(conn: Connection, page: str, timeout: float) -> dict[str, str]:
    return dict(json.loads(await _evaluate(conn, page, READ_STORAGE, timeout)))


async def _evaluate(conn: Connection, page: str, expression: str, timeout: float) -> Any:
    reply = await conn.call(
        "Runtime.evaluate", {"expression": expression, "returnByValue": True}, page, timeout
    )
    if "exceptionDetails" in reply:
        raise CDPError(str(reply["exceptionDetails"].get("text", "script failed")), -32000)
    return (reply.get("result") or {}).get("value")
