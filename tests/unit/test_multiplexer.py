"""Multiplexer routing with a recorded browser side (no Chromium)."""

from __future__ import annotations

import asyncio
import gc
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from worker import cdp
from worker.cdp.multiplexer import MAX_IN_FLIGHT, Client, ClientGone, Multiplexer


class Browser:
    """Records what the connection writes; answers by hand."""

    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []
        self.conn = cdp.Connection(lambda data: self.sent.append(json.loads(data)))

    def answer(self, message: dict[str, Any]) -> None:
        self.conn.dispatch(json.dumps(message).encode())


async def attached_client(browser: Browser) -> tuple[Client, list[dict[str, Any]]]:
    out: list[dict[str, Any]] = []

    async def send(text: str) -> None:
        out.append(json.loads(text))

    async def close(code: int, reason: str) -> None:
        out.append({"closed": code, "reason": reason})

    client = Client(browser.conn, send, close, queue_limit=100)
    attach = asyncio.ensure_future(client.attach())
    await asyncio.sleep(0)
    assert browser.sent[-1]["method"] == "Target.attachToBrowserTarget"
    browser.answer({"id": browser.sent[-1]["id"], "result": {"sessionId": "ROOT1"}})
    await attach
    writer = asyncio.ensure_future(client.write_loop())
    client.writer = writer  # type: ignore[attr-defined]  # keep a reference
    return client, out


def attach_child(browser: Browser) -> None:
    """The browser reports a target auto-attached under the client's root."""
    browser.answer(
        {
            "method": "Target.attachedToTarget",
            "params": {"sessionId": "CHILD", "targetInfo": {}},
            "sessionId": "ROOT1",
        }
    )


async def flush() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_messages_without_session_go_to_the_clients_browser_session() -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    client.handle('{"id": 7, "method": "Browser.getVersion"}')
    forwarded = browser.sent[-1]
    assert forwarded["sessionId"] == "ROOT1" and forwarded["id"] != 7
    browser.answer({"id": forwarded["id"], "result": {"product": "x"}, "sessionId": "ROOT1"})
    await flush()
    assert out == [{"id": 7, "result": {"product": "x"}}]


async def test_children_attached_under_the_client_become_its_own() -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    attach_child(browser)
    browser.answer({"method": "Page.loadEventFired", "params": {}, "sessionId": "CHILD"})
    client.handle('{"id": 1, "method": "Page.enable", "sessionId": "CHILD"}')
    await flush()
    assert out[0]["method"] == "Target.attachedToTarget" and "sessionId" not in out[0]
    assert out[1] == {"method": "Page.loadEventFired", "params": {}, "sessionId": "CHILD"}
    assert browser.sent[-1]["sessionId"] == "CHILD"


async def test_a_session_the_client_does_not_own_is_refused_not_forwarded() -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    before = len(browser.sent)
    client.handle('{"id": 3, "method": "Page.enable", "sessionId": "SOMEONE_ELSES"}')
    client.handle(
        '{"id": 4, "method": "Target.detachFromTarget", "params": {"sessionId": "DAEMON"}}'
    )
    await flush()
    assert len(browser.sent) == before
    assert [m["id"] for m in out] == [3, 4]
    assert all(m["error"]["code"] == -32001 for m in out)


async def test_browser_close_is_answered_here_and_ends_only_this_client() -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    before = len(browser.sent)
    with pytest.raises(ClientGone):
        client.handle('{"id": 9, "method": "Browser.close"}')
    await flush()
    assert len(browser.sent) == before
    assert out == [{"id": 9, "result": {}}]


@pytest.mark.parametrize("method", ["Browser.crash", "Tethering.bind"])
async def test_methods_that_reach_the_host_are_refused(method: str) -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    client.handle(json.dumps({"id": 5, "method": method, "params": {"port": 1}}))
    await flush()
    assert out[0]["error"]["message"].endswith("is not allowed on this endpoint")


@pytest.mark.parametrize(
    "raw", ["not json", b"\xff\xfe", "[1, 2]", '{"id": "x", "method": "A.b"}', '{"id": 1}']
)
async def test_malformed_messages_close_the_client(raw: str | bytes) -> None:
    browser = Browser()
    client, _ = await attached_client(browser)
    with pytest.raises(ClientGone) as info:
        client.handle(raw)
    assert info.value.code == 1007


async def test_release_resumes_children_then_detaches_and_disposes_contexts() -> None:
    browser = Browser()
    client, _ = await attached_client(browser)
    attach_child(browser)
    client.handle('{"id": 1, "method": "Target.createBrowserContext"}')
    browser.answer({"id": browser.sent[-1]["id"], "result": {"browserContextId": "CTX"}})
    client.release()
    methods = [(m["method"], m.get("sessionId")) for m in browser.sent[-3:]]
    assert methods == [
        ("Runtime.runIfWaitingForDebugger", "CHILD"),
        ("Target.detachFromTarget", None),
        ("Target.disposeBrowserContext", None),
    ]


async def test_a_client_that_stops_reading_is_dropped() -> None:
    browser = Browser()
    client = Client(browser.conn, _never_sends, _ignore_close, queue_limit=3)
    for n in range(5):
        client.push({"method": "X.y", "params": {"n": n}})
    assert client.closed and client.close_code == 1013


async def _never_sends(text: str) -> None:
    await asyncio.sleep(3600)


async def _ignore_close(code: int, reason: str) -> None:
    return None


async def test_browser_get_version_is_answered_from_the_readiness_probe() -> None:
    browser = Browser()
    browser.conn.version = {"product": "Chrome/156", "protocolVersion": "1.3"}
    client, out = await attached_client(browser)
    sent_before = len(browser.sent)
    client.handle(json.dumps({"id": 7, "method": "Browser.getVersion"}))
    await flush()
    assert len(browser.sent) == sent_before  # the browser was not asked
    assert out[-1] == {"id": 7, "result": {"product": "Chrome/156", "protocolVersion": "1.3"}}


async def test_browser_get_version_goes_to_the_browser_until_it_is_known() -> None:
    browser = Browser()
    client, _ = await attached_client(browser)
    client.handle(json.dumps({"id": 8, "method": "Browser.getVersion"}))
    assert browser.sent[-1]["method"] == "Browser.getVersion"


async def test_a_client_with_too_many_commands_in_flight_waits_for_room() -> None:
    browser = Browser()
    client, _ = await attached_client(browser)
    first = len(browser.sent)
    for i in range(MAX_IN_FLIGHT):
        client.handle(json.dumps({"id": i, "method": "Target.getTargets"}))
    room = asyncio.ensure_future(client.room())
    await flush()
    assert not room.done()  # the read loop would stop reading this client here
    browser.answer({"id": browser.sent[first]["id"], "result": {"targetInfos": []}})
    await flush()
    assert room.done() and client.in_flight == MAX_IN_FLIGHT - 1
    # Full again, and the browser never answers: only a close frees it.
    client.handle(json.dumps({"id": 9999, "method": "Target.getTargets"}))
    blocked = asyncio.ensure_future(client.room())
    await flush()
    assert not blocked.done()
    client.shut(1001, "session ended")
    await flush()
    assert blocked.done()  # a close never leaves the read loop waiting


def targets(*pages: tuple[str, str]) -> dict[str, Any]:
    infos = [{"targetId": "UI", "type": "browser_ui", "url": "chrome://omnibox-popup/"}]
    infos += [{"targetId": t, "type": "page", "url": u, "browserContextId": "C0"} for t, u in pages]
    return {"result": {"targetInfos": infos}}


async def new_page(browser: Browser, client: Client, out: list[dict[str, Any]], n: int) -> str:
    """A plain Target.createTarget; the first tab answers it if it may."""
    client.handle(json.dumps({"id": n, "method": "Target.createTarget", "params": {"url": ""}}))
    await flush()
    return str(browser.sent[-1]["method"])


async def test_the_first_plain_new_page_is_the_untouched_first_tab() -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    assert await new_page(browser, client, out, 1) == "Target.getTargets"
    browser.answer({"id": browser.sent[-1]["id"], **targets(("TAB1", "about:blank"))})
    await flush()
    assert out[-1] == {"id": 1, "result": {"targetId": "TAB1"}}
    # Only once: the next new page is made by the browser.
    assert await new_page(browser, client, out, 2) == "Target.createTarget"


async def test_a_used_first_tab_or_a_second_page_means_a_page_is_made() -> None:
    browser = Browser()
    client, out = await attached_client(browser)
    browser.answer(
        {
            "method": "Target.attachedToTarget",
            "params": {"sessionId": "P1", "targetInfo": {"targetId": "TAB1", "type": "page"}},
            "sessionId": "ROOT1",
        }
    )
    await flush()
    # Setting a page up leaves it untouched; running script in it does not.
    for n, method in enumerate(("Page.enable", "Runtime.evaluate"), 10):
        client.handle(json.dumps({"id": n, "method": method, "sessionId": "P1"}))
    assert await new_page(browser, client, out, 1) == "Target.getTargets"
    browser.answer({"id": browser.sent[-1]["id"], **targets(("TAB1", "about:blank"))})
    await flush()
    assert browser.sent[-1]["method"] == "Target.createTarget"
    # A browser that already shows two pages: no guessing which is the first.
    other = Browser()
    client, out = await attached_client(other)
    await new_page(other, client, out, 1)
    other.answer({"id": other.sent[-1]["id"], **targets(("A", "about:blank"), ("B", ""))})
    await flush()
    assert other.sent[-1]["method"] == "Target.createTarget"


async def test_new_pages_with_a_size_or_a_window_are_always_made() -> None:
    browser = Browser()
    client, _ = await attached_client(browser)
    params = {"url": "about:blank", "newWindow": True}
    client.handle(json.dumps({"id": 1, "method": "Target.createTarget", "params": params}))
    await flush()
    assert browser.sent[-1]["method"] == "Target.createTarget"


class Owner:
    """Stands for the session: what it hands the multiplexer are its methods."""

    def observe(self, *_args: Any) -> None:
        pass

    def focus(self, _target_id: str) -> None:
        pass


class GoneSocket:
    """A client that sends one command and is gone before its answer is
    written: the write fails, as websockets' does on a closed connection."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser

    def __aiter__(self) -> AsyncIterator[str]:
        return self._messages()

    async def _messages(self) -> AsyncIterator[str]:
        yield json.dumps({"id": 1, "method": "Page.enable"})
        asked = self.browser.sent[-1]
        self.browser.answer({"id": asked["id"], "result": {}, "sessionId": "ROOT1"})
        await flush()

    async def send(self, _text: str) -> None:
        raise ConnectionError("the client went away")

    async def close(self, _code: int, _reason: str) -> None:
        pass


@contextmanager
def no_cycle_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def booted_multiplexer(browser: Browser, owner: Owner) -> Multiplexer:
    spare: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    spare.set_result("ROOT1")
    return Multiplexer(browser.conn, 100, spare, observe=owner.observe, focus=owner.focus)


async def test_a_client_whose_socket_broke_under_its_writer_leaves_no_cycle() -> None:
    # A writer's error raised into serve() made a cycle through serve's frame
    # (client, multiplexer and the session's methods in it): sessions ended
    # with such a client waited for a full collection.
    browser, owner = Browser(), Owner()
    with no_cycle_collector():
        mux = booted_multiplexer(browser, owner)
        await mux.serve(GoneSocket(browser))
        assert not mux.clients
        freed_owner, freed_mux = weakref.ref(owner), weakref.ref(mux)
        del owner, mux
        assert freed_mux() is None and freed_owner() is None


async def test_an_ended_multiplexer_lets_go_of_its_owner_closing_clients_does_not() -> None:
    browser, owner = Browser(), Owner()
    with no_cycle_collector():
        mux = booted_multiplexer(browser, owner)  # kept, as a lingering frame would
        freed_owner = weakref.ref(owner)
        del owner
        # Disabling the automation stream shuts the clients; the session goes on.
        mux.close_all(1008, "automation stream disabled")
        assert freed_owner() is not None
        mux.end(1001, "session ended: STOPPED")
        assert freed_owner() is None
