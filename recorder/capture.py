"""What the daemon records over CDP, beside rrweb.

The capture uses the browser connection's root session, which no automation
client owns: `Target.setAutoAttach` (paused on start) attaches every page the
session opens, whoever opens it, and each page session auto-attaches its
out-of-process iframes. Each attached target gets, back to back and before
it is resumed: Page.enable, the binding, the rrweb script, Runtime.enable
(without it no `bindingCalled` arrives), Network.enable, nested
auto-attach, then `runIfWaitingForDebugger`. Awaiting any of these before
the resume deadlocks the headless shell, so none is awaited.

From the events it records console calls and uncaught exceptions, one
`network` event per request when it finishes or fails (headers redacted),
navigations and load events, and targets appearing and going. The
automation clients' own commands are reported by the worker through
`client_command`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Protocol

from recorder import redact, script
from recorder.stream import Stream

Message = dict[str, Any]
RECORDED_TYPES = ("page", "iframe")
MAX_TRACKED_REQUESTS = 5000


class CDP(Protocol):
    """The part of the worker's CDP connection the capture uses."""

    closed: bool

    def send(
        self,
        method: str,
        params: Message | None,
        session_id: str | None,
        on_reply: Callable[[Message], None],
    ) -> int: ...

    def on_session_event(
        self, session_id: str, handler: Callable[[Message], None] | None
    ) -> None: ...

    def on_root_event(self, handler: Callable[[Message], None]) -> None: ...


def _ignore(_reply: Message) -> None:
    pass


def _resolve(future: asyncio.Future[Message]) -> Callable[[Message], None]:
    def on_reply(reply: Message) -> None:
        if not future.done():
            future.set_result(reply)

    return on_reply


class Capture:
    def __init__(self, conn: CDP, stream: Stream, binding: str, script: str) -> None:
        self._conn = conn
        self._stream = stream
        self._binding = binding
        self._script = script
        self.targets: dict[str, Message] = {}  # CDP session id -> target info
        self.tabs: dict[str, int] = {}  # page target id -> tab number, from 1
        self._requests: dict[str, Message] = {}
        self.stopped = False
        self.page_events = 0  # rrweb events received from pages
        self._in_use = 0  # the tab in use (see focus)
        self._seen_snapshot_tab = 0

    def start(self) -> None:
        self._conn.on_root_event(self._on_root)
        pages = [{"type": "page"}]
        send = self._conn.send
        send("Target.setDiscoverTargets", {"discover": True, "filter": pages}, None, _ignore)
        send(
            "Target.setAutoAttach",
            {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True, "filter": pages},
            None,
            _ignore,
        )

    def stop(self) -> None:
        self.stopped = True
        for session_id in list(self.targets):
            self._conn.on_session_event(session_id, None)
        self.targets.clear()
        for request in list(self._requests.values()):
            self._network(request, state="unfinished", error="the session ended")
        self._requests.clear()

    async def flush_pages(self, timeout: float) -> None:
        """Ask every page for the events it still holds, and wait for them
        (their binding calls arrive before the evaluate's answers)."""
        if self._conn.closed:
            return
        loop = asyncio.get_running_loop()
        waits: list[asyncio.Future[Message]] = []
        expression = script.flush_expression(self._binding)
        for session_id, info in self.targets.items():
            if info.get("type") != "page":
                continue
            future: asyncio.Future[Message] = loop.create_future()
            waits.append(future)
            self._conn.send(
                "Runtime.evaluate",
                {"expression": expression, "returnByValue": True},
                session_id,
                _resolve(future),
            )
        if waits:
            await asyncio.wait(waits, timeout=timeout)

    # -- targets

    def _on_root(self, message: Message) -> None:
        if self.stopped:
            return
        method, params = message.get("method"), message.get("params") or {}
        if method == "Target.attachedToTarget":
            self._attach(params, None)
        elif method == "Target.detachedFromTarget":
            self._detach(str(params.get("sessionId", "")))
        elif method in ("Target.targetCreated", "Target.targetDestroyed"):
            info = params.get("targetInfo") or {"targetId": params.get("targetId")}
            event = "created" if method == "Target.targetCreated" else "destroyed"
            self._stream.add_custom("target", {"event": event, **_target_summary(info)})

    def _attach(self, params: Message, parent: str | None) -> None:
        session_id = str(params.get("sessionId", ""))
        info = params.get("targetInfo") or {}
        send = self._conn.send
        if info.get("type") not in RECORDED_TYPES:
            # Not ours to record (a client's browser-target session shows up
            # here too): only release it if it waits for us.
            if params.get("waitingForDebugger"):
                send("Runtime.runIfWaitingForDebugger", None, session_id, _ignore)
            return
        self.targets[session_id] = info
        if info.get("type") == "page":
            self.tabs.setdefault(str(info.get("targetId", "")), len(self.tabs) + 1)
        self._conn.on_session_event(session_id, lambda m: self._on_event(session_id, m))
        frames: Message = {"autoAttach": True, "waitForDebuggerOnStart": True, "flatten": True}
        frames["filter"] = [{"type": "iframe"}]
        for method, args in (
            ("Page.enable", None),
            ("Runtime.addBinding", {"name": self._binding}),
            ("Page.addScriptToEvaluateOnNewDocument", {"source": self._script}),
            ("Runtime.enable", None),
            ("Network.enable", None),
            ("Target.setAutoAttach", frames),
            ("Runtime.runIfWaitingForDebugger", None),
        ):
            send(method, args, session_id, _ignore)
        self._stream.add_custom(
            "target",
            {
                "event": "attached",
                "tab": self.tabs.get(str(info.get("targetId", "")), 0),
                "parentSession": bool(parent),
                **_target_summary(info),
            },
        )

    def _detach(self, session_id: str) -> None:
        info = self.targets.pop(session_id, None)
        if info is None:
            return
        self._conn.on_session_event(session_id, None)
        if info.get("type") == "page" and self.tabs.get(str(info.get("targetId"))) == self._in_use:
            # The tab in use closed: the newest page left comes into use.
            pages = [i for i in self.targets.values() if i.get("type") == "page"]
            if pages:
                self.focus(str(pages[-1].get("targetId", "")))

    # -- the tab in use

    def focus(self, target_id: str) -> None:
        """A page came into use (a client's input or navigation went to it,
        or the tab in use closed): unless it is already the tab in use, ask
        it for a fresh full snapshot, which puts it on show (see stream.py)."""
        tab = self.tabs.get(target_id, 0)
        if self.stopped or not tab or tab == self._current_tab():
            return
        self._in_use = tab
        for session_id, info in self.targets.items():
            if info.get("type") == "page" and info.get("targetId") == target_id:
                expression = script.snapshot_expression(self._binding)
                self._conn.send("Runtime.evaluate", {"expression": expression}, session_id, _ignore)
                return

    def _current_tab(self) -> int:
        """The tab in use: the one last asked for a snapshot, unless a page
        sent a first snapshot of its own since (a new tab comes into use)."""
        latest = self._stream.latest_snapshot_tab
        if latest != self._seen_snapshot_tab:
            self._seen_snapshot_tab = self._in_use = latest
        return self._in_use

    # -- events of one target

    def _on_event(self, session_id: str, message: Message) -> None:
        if self.stopped:
            return
        method = message.get("method", "")
        params = message.get("params") or {}
        handler = _HANDLERS.get(method)
        if handler is not None:
            handler(self, session_id, params)

    def _binding_called(self, session_id: str, params: Message) -> None:
        if params.get("name") == self._binding:
            tab = self.tabs.get(self._target_id(session_id), 0)
            payload = str(params.get("payload", ""))
            self.page_events += self._stream.add_page_batch(payload, tab)

    def _console(self, session_id: str, params: Message) -> None:
        args = [_remote_value(a) for a in (params.get("args") or [])[:20]]
        frame = _top_frame(params.get("stackTrace"))
        self._stream.add_custom(
            "console",
            {
                "level": params.get("type", "log"),
                "text": redact.params(" ".join(args)),
                "tab": self._tab(session_id),
                **frame,
            },
            _wall(params.get("timestamp")),
        )

    def _exception(self, session_id: str, params: Message) -> None:
        details = params.get("exceptionDetails") or {}
        exception = details.get("exception") or {}
        text = exception.get("description") or details.get("text") or "exception"
        self._stream.add_custom(
            "console",
            {
                "level": "exception",
                "text": redact.params(str(text)),
                "url": details.get("url", ""),
                "line": details.get("lineNumber"),
                "tab": self._tab(session_id),
            },
            _wall(params.get("timestamp")),
        )

    def _request(self, session_id: str, params: Message) -> None:
        request_id = str(params.get("requestId", ""))
        redirect = params.get("redirectResponse")
        earlier = self._requests.pop(request_id, None)
        if earlier is not None and redirect:
            _add_response(earlier, redirect)
            self._network(earlier, state="redirected", end=params.get("timestamp"))
        request = params.get("request") or {}
        if len(self._requests) >= MAX_TRACKED_REQUESTS:
            self._requests.pop(next(iter(self._requests)))  # the oldest
        self._requests[request_id] = {
            "requestId": request_id,
            "tab": self._tab(session_id),
            "method": request.get("method", ""),
            "url": redact.params(str(request.get("url", ""))),
            "resourceType": params.get("type", ""),
            "requestHeaders": redact.headers(request.get("headers")),
            "_start": float(params.get("timestamp") or 0),
            "_wall": float(params.get("wallTime") or time.time()) * 1000,
        }

    def _response(self, _session: str, params: Message) -> None:
        request = self._requests.get(str(params.get("requestId", "")))
        if request is not None:
            _add_response(request, params.get("response") or {})

    def _finished(self, _session: str, params: Message) -> None:
        request = self._requests.pop(str(params.get("requestId", "")), None)
        if request is not None:
            request["encodedBytes"] = params.get("encodedDataLength", 0)
            self._network(request, state="finished", end=params.get("timestamp"))

    def _failed(self, _session: str, params: Message) -> None:
        request = self._requests.pop(str(params.get("requestId", "")), None)
        if request is not None:
            request["canceled"] = bool(params.get("canceled"))
            if params.get("blockedReason"):
                request["blockedReason"] = params["blockedReason"]
            self._network(
                request,
                state="failed",
                end=params.get("timestamp"),
                error=str(params.get("errorText", "")),
            )

    def _network(self, request: Message, state: str, end: Any = None, error: str = "") -> None:
        start, wall = request.pop("_start"), request.pop("_wall")
        payload = {**request, "state": state}
        if end is not None and start:
            payload["durationMs"] = round((float(end) - start) * 1000, 3)
        if error:
            payload["error"] = error
        self._stream.add_custom("network", payload, wall)

    def _navigated(self, session_id: str, params: Message) -> None:
        frame = params.get("frame") or {}
        if frame.get("parentId"):
            return  # subframes are in the DOM recording and in network events
        self._stream.add_custom(
            "navigation",
            {
                "url": redact.params(str(frame.get("url", ""))),
                "tab": self._tab(session_id),
            },
        )

    def _lifecycle(self, session_id: str, event: str) -> None:
        self._stream.add_custom("lifecycle", {"event": event, "tab": self._tab(session_id)})

    def _dom_ready(self, session_id: str, _params: Message) -> None:
        self._lifecycle(session_id, "DOMContentLoaded")

    def _loaded(self, session_id: str, _params: Message) -> None:
        self._lifecycle(session_id, "load")

    def _crashed(self, session_id: str, _params: Message) -> None:
        self._lifecycle(session_id, "crashed")

    def _nested_attach(self, session_id: str, params: Message) -> None:
        self._attach(params, session_id)

    def _nested_detach(self, _session: str, params: Message) -> None:
        self._detach(str(params.get("sessionId", "")))

    def _target_id(self, session_id: str) -> str:
        return str(self.targets.get(session_id, {}).get("targetId", ""))

    def _tab(self, session_id: str) -> int:
        return self.tabs.get(self._target_id(session_id), 0)

    # -- automation clients

    def client_command(
        self, client: int, method: str, params: Message, reply: Message, took_ms: float
    ) -> None:
        """One command an automation client sent, and how it was answered."""
        if self.stopped:
            return
        payload: Message = {
            "client": client,
            "method": method,
            "params": redact.command(method, params),
            "durationMs": round(took_ms, 3),
        }
        if "error" in reply:
            payload["error"] = redact.params(str((reply["error"] or {}).get("message", "")))
        else:
            payload["result"] = _summary(reply.get("result"))
        self._stream.add_custom("cdp", payload, (time.time() * 1000) - took_ms)


_HANDLERS: dict[str, Callable[[Capture, str, Message], None]] = {
    "Runtime.bindingCalled": Capture._binding_called,
    "Runtime.consoleAPICalled": Capture._console,
    "Runtime.exceptionThrown": Capture._exception,
    "Network.requestWillBeSent": Capture._request,
    "Network.responseReceived": Capture._response,
    "Network.loadingFinished": Capture._finished,
    "Network.loadingFailed": Capture._failed,
    "Page.frameNavigated": Capture._navigated,
    "Page.domContentEventFired": Capture._dom_ready,
    "Page.loadEventFired": Capture._loaded,
    "Inspector.targetCrashed": Capture._crashed,
    "Target.attachedToTarget": Capture._nested_attach,
    "Target.detachedFromTarget": Capture._nested_detach,
}


def _add_response(request: Message, response: Message) -> None:
    request["status"] = response.get("status")
    request["statusText"] = response.get("statusText", "")
    request["mimeType"] = response.get("mimeType", "")
    request["protocol"] = response.get("protocol", "")
    request["fromCache"] = bool(response.get("fromDiskCache") or response.get("fromServiceWorker"))
    request["responseHeaders"] = redact.headers(response.get("headers"))


def _target_summary(info: Message) -> Message:
    return {
        "targetId": info.get("targetId", ""),
        "type": info.get("type", ""),
        "url": redact.params(str(info.get("url", ""))),
        "openerId": info.get("openerId", ""),
    }


def _remote_value(arg: Message) -> str:
    if "value" in arg:
        value = arg["value"]
        return value if isinstance(value, str) else repr(value)
    return str(arg.get("description") or arg.get("unserializableValue") or arg.get("type", ""))


def _top_frame(stack: Any) -> Message:
    """Where the page logged: the first frame that is not the recorder's own
    (rrweb's console plugin wraps console methods, so once it runs the call
    passes through the injected script first)."""
    frames = (stack or {}).get("callFrames") or []
    own = [f for f in frames if f.get("url") != script.SOURCE_URL]
    if not own:
        return {}
    top = own[0]
    return {"url": top.get("url", ""), "line": top.get("lineNumber")}


def _wall(timestamp: Any) -> float | None:
    # Runtime events carry wall-clock milliseconds.
    return float(timestamp) if isinstance(timestamp, (int, float)) else None


def _summary(result: Any) -> Any:
    """A command's result without its bulk: scalar fields, other keys named."""
    if not isinstance(result, dict):
        return None
    out: Message = {}
    for key, value in list(result.items())[:10]:
        if isinstance(value, (int, float, bool)) or value is None:
            out[key] = value
        elif isinstance(value, str):
            out[key] = value if len(value) <= 200 else f"({len(value)} characters)"
        else:
            out[key] = f"({type(value).__name__})"
    return out
