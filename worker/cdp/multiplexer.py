"""Many automation clients on one browser pipe.

Each client gets its own browser-target session S (`Target.attachToBrowserTarget`)
and sees it as its root connection: messages it sends without a sessionId go
to S, replies and events of S come back without one. Message ids are
rewritten into the connection's single id space and mapped back. Every child
session that attaches under a session the client owns becomes the client's;
a client may address only its own sessions. The daemon's own CDP use runs on
sessions no client owns, so both work side by side.

Targets of the browser's own UI (full Chromium's omnibox popup) are
filtered out of every target listing and auto-attach a client asks for.
Some methods are never forwarded: `Browser.close` (from any client it means
"I am done", not "kill everyone's browser"), `Browser.crash*`, `Tethering.*`
(opens ports on the host). Downloads always land in the session's own
directory: the path in `Browser/Page.setDownloadBehavior` is replaced, since
a client's path names its own machine, and the browser would write there on
the worker's. The worker's own files stay out of reach: commands that would
open a `file:` URL are refused (pages cannot navigate there themselves:
Chromium blocks that for web origins), and `DOM.setFileInputFiles` may only
hand a page files from the session's downloads directory.

Why one module of about 430 lines: a client's message path (parse, check,
rewrite, forward, route the answer and the events back) is one flow that
the checks above interleave with; the protocol itself is in `connection`.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from worker.cdp import Connection, Message

log = structlog.get_logger(__name__)

REFUSED_METHODS = ("Browser.crash", "Browser.crashGpuProcess")
REFUSED_DOMAINS = ("Tethering.",)
DOWNLOAD_METHODS = ("Browser.setDownloadBehavior", "Page.setDownloadBehavior")
# Full Chromium's own UI (the omnibox popup, WebUI pages of type
# "browser_ui") is never a client's to see: clients that attach to every
# target (browser-use) fail on them. The browser filters them out itself.
TARGET_FILTER_METHODS = (
    "Target.setDiscoverTargets",
    "Target.setAutoAttach",
    "Target.getTargets",
    "Target.autoAttachRelated",
)
HIDE_BROWSER_UI = {"type": "browser_ui", "exclude": True}
# What CDP assumes when a client gives no filter.
DEFAULT_TARGET_FILTER: tuple[dict[str, Any], ...] = (
    {"type": "browser", "exclude": True},
    {"type": "tab", "exclude": True},
    {},
)
URL_METHODS = ("Page.navigate", "Target.createTarget", "Network.loadNetworkResource")
LOCAL_SCHEMES = ("file:", "view-source:file:", "filesystem:")
SESSION_PARAM_METHODS = ("Target.detachFromTarget", "Target.sendMessageToTarget")
# Commands one client may have at the browser at once. Past this the
# endpoint stops reading that client (TCP pushes back on it), so a flood
# queues in the flooder's own socket, not in the browser or the daemon.
# Playwright and Puppeteer keep a few dozen in flight at most.
MAX_IN_FLIGHT = 512


# Told of every client command and its answer (the session recording):
# (client number, method, params, reply, milliseconds to the answer).
Observer = Callable[[int, str, dict[str, Any], Message, float], None]


def _unobserved(_c: int, _m: str, _p: dict[str, Any], _r: Message, _t: float) -> None:
    pass


# Told which page a client acts on (input, bring to front), as a target id,
# before the browser gets the command: the recording shows the tab in use.
FocusObserver = Callable[[str], None]
FOCUS_METHODS = (
    "Input.dispatchMouseEvent",
    "Input.dispatchKeyEvent",
    "Input.dispatchTouchEvent",
    "Input.insertText",
    "Page.bringToFront",
)


def _unfocused(_target_id: str) -> None:
    pass


# What Playwright and Puppeteer send to a page they attach to, to set it up:
# none of it changes the page. Any other command to a page uses it.
SETUP_METHODS = frozenset(
    {
        "Page.enable",
        "Page.getFrameTree",
        "Page.setLifecycleEventsEnabled",
        "Page.addScriptToEvaluateOnNewDocument",
        "Page.createIsolatedWorld",
        "Page.setInterceptFileChooserDialog",
        "Page.setFontFamilies",
        "Page.getNavigationHistory",
        "Log.enable",
        "Runtime.enable",
        "Runtime.addBinding",
        "Runtime.runIfWaitingForDebugger",
        "Network.enable",
        "Target.setAutoAttach",
        "Emulation.setFocusEmulationEnabled",
        "Emulation.setEmulatedMedia",
        "Performance.enable",
        "Inspector.enable",
        "ServiceWorker.enable",
        "Security.enable",
    }
)
# A new page these parameters ask for is what the first tab already is.
PLAIN_NEW_PAGE = frozenset({"url", "browserContextId"})


class FirstPage:
    """The about:blank tab a browser starts with, handed to the first client
    that asks for a plain new page while the tab is still untouched: its
    `new_page()` is answered at once, from a page and a renderer that are
    already there, instead of the browser making both. Once any page has
    been made, the first tab is an ordinary tab: later new pages are new."""

    def __init__(self) -> None:
        self.offer = True  # until the first new page is asked for
        self.used: set[str] = set()  # target ids clients have done something to

    def may_serve(self, params: dict[str, Any]) -> bool:
        return (
            self.offer
            and params.keys() <= PLAIN_NEW_PAGE
            and str(params.get("url", "about:blank")) in ("", "about:blank")
        )

    def pick(self, reply: Message, params: dict[str, Any]) -> str:
        """The first tab's target id, if `reply` (Target.getTargets) shows
        it alone, blank, untouched and in the context asked for; else ""."""
        infos = (reply.get("result") or {}).get("targetInfos") or []
        pages = [t for t in infos if isinstance(t, dict) and t.get("type") == "page"]
        if len(pages) != 1:
            return ""
        page = pages[0]
        context = params.get("browserContextId")
        if (
            page.get("url") not in ("", "about:blank")
            or page.get("targetId") in self.used
            or (context and context != page.get("browserContextId"))
        ):
            return ""
        return str(page.get("targetId", ""))


class ClientGone(Exception):
    """The client asked to close (Browser.close) or broke the protocol."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


class Client:
    """One automation client: its sessions, contexts and outbound queue."""

    def __init__(
        self,
        conn: Connection,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[int, str], Awaitable[None]],
        queue_limit: int,
        new_target_defaults: Callable[[], dict[str, Any]] = dict,
        observe: Observer = _unobserved,
        number: int = 0,
        downloads: str = "",
        focus: FocusObserver = _unfocused,
        first_page: FirstPage | None = None,
    ) -> None:
        self._conn = conn
        self._downloads = downloads  # the session's download directory
        self._focus = focus
        self._first_page = first_page if first_page is not None else FirstPage()
        self._targets: dict[str, str] = {}  # this client's session id -> target id
        self._new_target_defaults = new_target_defaults
        self._observe = observe
        self.number = number
        self._send = send
        self._close_ws = close
        self.root = ""
        self.version: Message | None = None  # the browser's Browser.getVersion
        self.sessions: set[str] = set()
        self.contexts: set[str] = set()
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(queue_limit)
        # Answers to the commands in flight must fit in the queue with room
        # for events: the browser may answer a whole burst in one read.
        self._max_in_flight = max(1, min(MAX_IN_FLIGHT, queue_limit // 2))
        self.closed = False
        self.in_flight = 0
        self._room = asyncio.Event()  # set while in_flight < _max_in_flight
        self._room.set()
        self.close_code = 1000
        self.close_reason = ""

    # -- outbound

    def push(self, message: Message) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(json.dumps(message, separators=(",", ":")))
        except asyncio.QueueFull:
            # A client that stops reading must not make the daemon buffer
            # without bound: drop it, others keep going.
            self.shut(1013, "client too slow: outbound queue full")

    def shut(self, code: int, reason: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_code, self.close_reason = code, reason
        self._room.set()  # a read loop waiting for room must see the close
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)
        if self._queue.full():
            # No room for the end marker: clear the backlog, the client is
            # being dropped anyway.
            while not self._queue.empty():
                self._queue.get_nowait()
            self._queue.put_nowait(None)

    async def write_loop(self) -> None:
        while (item := await self._queue.get()) is not None:
            await self._send(item)
        await self._close_ws(self.close_code, self.close_reason)

    # -- events from the browser

    def on_event(self, event: Message) -> None:
        method = event.get("method")
        params = event.get("params") or {}
        if method == "Target.attachedToTarget":
            self._own(str(params.get("sessionId", "")))
            target = (params.get("targetInfo") or {}).get("targetId")
            if target:
                self._targets[str(params.get("sessionId", ""))] = str(target)
        elif method == "Target.detachedFromTarget":
            self._disown(str(params.get("sessionId", "")))
        if event.get("sessionId") == self.root:
            event = {k: v for k, v in event.items() if k != "sessionId"}
        self.push(event)

    def _own(self, session_id: str) -> None:
        if session_id and session_id not in self.sessions:
            self.sessions.add(session_id)
            self._conn.on_session_event(session_id, self.on_event)

    def _disown(self, session_id: str) -> None:
        self._targets.pop(session_id, None)
        if session_id in self.sessions and session_id != self.root:
            self.sessions.discard(session_id)
            self._conn.on_session_event(session_id, None)

    # -- messages from the client

    def handle(self, raw: str | bytes) -> None:
        """Forward one client message, or answer it here. Raises ClientGone."""
        message = _parse(raw)
        msg_id, method = message["id"], message["method"]
        explicit = message.get("sessionId")
        target = explicit or self.root
        params = message.get("params") or {}
        if not isinstance(params, dict):
            self._error(msg_id, explicit, -32602, "params must be an object")
            return
        if target not in self.sessions:
            self._error(msg_id, explicit, -32001, "Session with given id not found.")
            return
        if method == "Browser.close":
            self._reply(msg_id, explicit, {"result": {}})
            raise ClientGone(1000, "client closed the browser connection")
        refusal = self._host_access(method, params)
        if refusal:
            self._error(msg_id, explicit, -32000, refusal)
            return
        if method in DOWNLOAD_METHODS and self._downloads and _saves_files(params):
            params = {**params, "downloadPath": self._downloads}
        if method == "Target.createTarget" and not {"width", "height"} & params.keys():
            params = {**self._new_target_defaults(), **params}
        if method in TARGET_FILTER_METHODS and target == self.root:
            # Only at the browser level: a tab's or a page's own targets
            # are never the browser's UI, and their default filters differ.
            params = {**params, "filter": _without_browser_ui(params.get("filter"))}
        if method == "Browser.getVersion" and self.version is not None:
            # Every Playwright and Puppeteer connection starts with this, right
            # after the browser booted and while it is still busy: the answer
            # never changes, and the readiness probe already has it.
            self._reply(msg_id, explicit, {"result": self.version})
            return
        if method in REFUSED_METHODS or method.startswith(REFUSED_DOMAINS):
            self._error(msg_id, explicit, -32000, f"{method} is not allowed on this endpoint")
            return
        if method in SESSION_PARAM_METHODS and params.get("sessionId") not in (
            None,
            *self.sessions,
        ):
            self._error(msg_id, explicit, -32001, "Session with given id not found.")
            return

        if method in FOCUS_METHODS and target in self._targets:
            self._focus(self._targets[target])
        elif method == "Target.activateTarget":
            self._focus(str(params.get("targetId", "")))
        if method not in SETUP_METHODS and target in self._targets:
            self._first_page.used.add(self._targets[target])

        sent = time.perf_counter()
        self.in_flight += 1
        if self.in_flight >= self._max_in_flight:
            self._room.clear()

        def on_reply(reply: Message) -> None:
            self.in_flight -= 1
            self._room.set()
            self._note_reply(method, params, reply)
            self._reply(msg_id, explicit, reply)
            took_ms = (time.perf_counter() - sent) * 1000
            self._observe(self.number, method, params, reply, took_ms)

        first = self._first_page
        if method == "Target.createTarget" and first.may_serve(params):
            first.offer = False  # one chance: after this, pages are made

            def on_targets(listed: Message) -> None:
                page = first.pick(listed, params)
                if page:
                    on_reply({"result": {"targetId": page}})
                else:
                    self._conn.send(method, params, target, on_reply)

            self._conn.send("Target.getTargets", None, target, on_targets)
            return
        if method == "Target.createTarget":
            first.offer = False
        self._conn.send(method, params, target, on_reply)

    async def room(self) -> None:
        """Wait until the client may send the browser another command."""
        await self._room.wait()

    def _host_access(self, method: str, params: dict[str, Any]) -> str:
        """Why a command would reach the worker's files, or ""."""
        if method in URL_METHODS:
            url = str(params.get("url", "")).strip().lower()
            if url.startswith(LOCAL_SCHEMES):
                return f"{method}: file URLs are not allowed on this endpoint"
        elif method == "DOM.setFileInputFiles":
            files = params.get("files") or []
            if not isinstance(files, list) or not all(
                isinstance(f, str) and _inside(f, self._downloads) for f in files
            ):
                return f"{method}: files must come from the session's downloads directory"
        return ""

    def _note_reply(self, method: str, params: dict[str, Any], reply: Message) -> None:
        result = reply.get("result")
        if not isinstance(result, dict):
            return
        if method == "Target.createBrowserContext" and "browserContextId" in result:
            self.contexts.add(str(result["browserContextId"]))
        elif method == "Target.disposeBrowserContext":
            self.contexts.discard(str(params.get("browserContextId", "")))
        elif method in ("Target.attachToTarget", "Target.attachToBrowserTarget"):
            self._own(str(result.get("sessionId", "")))
            if method == "Target.attachToTarget":
                self._targets[str(result.get("sessionId", ""))] = str(params.get("targetId", ""))

    def _reply(self, msg_id: Any, session_id: str | None, reply: Message) -> None:
        out: Message = {"id": msg_id}
        if "error" in reply:
            out["error"] = reply["error"]
        else:
            out["result"] = reply.get("result", {})
        if session_id:
            out["sessionId"] = session_id
        self.push(out)

    def _error(self, msg_id: Any, session_id: str | None, code: int, text: str) -> None:
        self._reply(msg_id, session_id, {"error": {"code": code, "message": text}})

    # -- lifecycle

    async def attach(self, spare: asyncio.Future[str] | None = None) -> None:
        """Take a browser-target session: the one attached while the browser
        booted (waiting for the boot if need be), or a new one."""
        if spare is not None:
            self.root = await asyncio.shield(spare)
            self.version = self._conn.version
        else:
            result = await self._conn.call("Target.attachToBrowserTarget")
            self.root = str(result["sessionId"])
            self.version = self._conn.version
        self._own(self.root)

    def release(self) -> None:
        """Give back what the client held, without waiting for answers."""
        children = [s for s in self.sessions if s != self.root]
        # Resume first: a target a client left paused (waitForDebuggerOnStart)
        # stays paused even after its session is detached.
        for session_id in children:
            self._conn.send("Runtime.runIfWaitingForDebugger", None, session_id, ignore)
        for session_id in list(self.sessions):
            self._conn.on_session_event(session_id, None)
        if self.root:
            self._conn.send("Target.detachFromTarget", {"sessionId": self.root}, None, ignore)
        # Contexts a client created would otherwise outlive it (Puppeteer).
        for context_id in self.contexts:
            self._conn.send(
                "Target.disposeBrowserContext", {"browserContextId": context_id}, None, ignore
            )
        self.sessions.clear()
        self.contexts.clear()


def _without_browser_ui(given: Any) -> Any:
    """A target filter that also excludes the browser's own UI. Entries
    apply in order, so the exclusion goes first; a filter that is not a list
    goes to the browser as given, which says what is wrong with it."""
    if given is None:
        return [HIDE_BROWSER_UI, *DEFAULT_TARGET_FILTER]
    if isinstance(given, list):
        return [HIDE_BROWSER_UI, *given]
    return given


def _inside(path: str, directory: str) -> bool:
    if not directory:
        return False
    real, root = os.path.realpath(path), os.path.realpath(directory)  # no .. or symlink out
    return os.path.commonpath([real, root]) == root


def _saves_files(params: dict[str, Any]) -> bool:
    return "downloadPath" in params or params.get("behavior") in ("allow", "allowAndName")


def ignore(_reply: Message) -> None:
    """Reply callback for clean-up calls whose answers nobody needs."""


def _parse(raw: str | bytes) -> Message:
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ClientGone(1007, "invalid CDP message: not JSON") from None
    if not isinstance(message, dict):
        raise ClientGone(1007, "invalid CDP message: not an object")
    if not isinstance(message.get("id"), int) or isinstance(message.get("id"), bool):
        raise ClientGone(1007, "invalid CDP message: 'id' must be an integer")
    if not isinstance(message.get("method"), str):
        raise ClientGone(1007, "invalid CDP message: 'method' must be a string")
    session_id = message.get("sessionId")
    if session_id is not None and not isinstance(session_id, str):
        raise ClientGone(1007, "invalid CDP message: 'sessionId' must be a string")
    return message


class Multiplexer:
    """All automation clients of one browser."""

    def __init__(
        self,
        conn: Connection,
        queue_limit: int,
        spare: asyncio.Future[str] | None = None,
        count_in: Callable[[], None] = lambda: None,
        count_out: Callable[[], None] = lambda: None,
        new_target_defaults: Callable[[], dict[str, Any]] = dict,
        observe: Observer = _unobserved,
        downloads: str = "",
        focus: FocusObserver = _unfocused,
    ) -> None:
        self._conn = conn
        self._queue_limit = queue_limit
        self._downloads = downloads
        self._observe = observe
        self._focus = focus
        self._first_page = FirstPage()  # shared by every client of the browser
        self._numbers = itertools.count(1)
        self._count_in = count_in  # one call per client message (metrics)
        self._count_out = count_out  # one call per message sent to a client
        self._new_target_defaults = new_target_defaults
        # A browser-target session attached while the browser booted: the
        # first client gets it without a round trip to a still-busy browser.
        self._spare = spare
        self.clients: set[Client] = set()

    async def serve(self, ws: Any) -> None:
        """Run one websocket client until it or the browser goes away."""

        async def send(message: str) -> None:
            self._count_out()
            await ws.send(message)

        # The client is told through this multiplexer, not given the owner's
        # callbacks: `end` then lets go of them for every client at once.
        client = Client(
            self._conn,
            send,
            ws.close,
            self._queue_limit,
            self._defaults_for_new_target,
            self._observe_command,
            next(self._numbers),
            self._downloads,
            self._focus_on,
            self._first_page,
        )
        if self._conn.closed:
            await ws.close(1011, "browser is gone")
            return
        self.clients.add(client)
        writer = asyncio.ensure_future(client.write_loop())
        try:
            spare, self._spare = self._spare, None
            await client.attach(spare)
            async for raw in ws:
                if client.closed:
                    break
                self._count_in()
                client.handle(raw)
                await client.room()
        except ClientGone as gone:
            client.shut(gone.code, gone.reason)
        except Exception as exc:  # the browser died under an attach, etc.
            client.shut(1011, "browser connection closed")
            log.debug("automation.client_error", error=type(exc).__name__)
        finally:
            self.clients.discard(client)
            client.shut(client.close_code, client.close_reason)
            if not self._conn.closed:
                client.release()
            # Waited for, not awaited: a writer's error raised here would take
            # this frame into its traceback, and the task holding the error is
            # one of this frame's locals. That cycle (with the client and the
            # owner's callbacks in it) is freed only by a full collection.
            await asyncio.wait({writer}, timeout=5)
            if not writer.done():
                writer.cancel()
                # It reads nothing, so not our close frame either: cut it
                # now rather than hold it through websockets' close timeout.
                transport = getattr(ws, "transport", None)
                if transport is not None:
                    transport.abort()
            elif not writer.cancelled() and (error := writer.exception()) is not None:
                log.debug("automation.writer_error", error=type(error).__name__)

    def close_all(self, code: int, reason: str) -> None:
        for client in list(self.clients):
            client.shut(code, reason)

    def end(self, code: int, reason: str) -> None:
        """The browser's session is over: every client is shut, and the
        owner's callbacks are dropped, so that what outlives the session (a
        client's frame in a traceback) does not keep its owner."""
        self.close_all(code, reason)
        self._new_target_defaults = dict
        self._observe = _unobserved
        self._focus = _unfocused

    def _defaults_for_new_target(self) -> dict[str, Any]:
        return self._new_target_defaults()

    def _observe_command(
        self, client: int, method: str, params: dict[str, Any], reply: Message, took: float
    ) -> None:
        self._observe(client, method, params, reply, took)

    def _focus_on(self, target_id: str) -> None:
        self._focus(target_id)
