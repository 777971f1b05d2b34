"""Live view: a person watches a session's browser, and may take control.

Each viewer is a websocket on the automation port
(`.../sessions/{id}/live-view/ws`); the page that speaks to it is served at
`.../live-view`. Both take the session's token (`?token=`). For each viewer
the daemon opens its own browser-target session, lists the session's tabs,
attaches to one and runs `Page.startScreencast` on it. Frames go to the
viewer as binary JPEG messages; a frame is acknowledged to Chromium only
when the viewer says it has drawn it, so frames come as fast as the viewer
takes them, and quality drops when acknowledgements lag. With no viewer
nothing runs.

Input (mouse, wheel, keys, text) is applied only while the session's
automation stream is DISABLED: UpdateBrowserStream DISABLED is "take
control", ENABLED gives it back to the agent, so the two never drive at
once. `mode=view` makes a viewer read-only whatever the stream says.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog

from worker.cdp import CDPError, Connection, Message

log = structlog.get_logger(__name__)

QUALITIES = (80, 60, 40, 25)  # JPEG quality steps, best first
SLOW_ACK_S, FAST_ACK_S = 0.25, 0.08  # when to step down / up
MOUSE_EVENTS = ("mousePressed", "mouseReleased", "mouseMoved", "mouseWheel")
KEY_EVENTS = ("keyDown", "keyUp", "rawKeyDown", "char")


def _ignore(_reply: Message) -> None:
    pass


class Viewer:
    """One live-view websocket and the CDP sessions behind it."""

    def __init__(
        self,
        conn: Connection,
        send: Callable[[str | bytes], Any],
        interactive: Callable[[], bool],
        size: tuple[int, int],
        in_use: Callable[[str], None] = lambda _target: None,
    ) -> None:
        self._conn = conn
        self._in_use = in_use  # told of the tab this viewer's input goes to
        self._send = send  # coroutine function: the websocket's send
        self._interactive = interactive  # may this viewer drive now?
        self._size = size
        self._browser = ""  # our browser-target session
        self._page = ""  # our session on the watched tab
        self.target = ""
        self._tabs: dict[str, Message] = {}
        self._quality = 0  # index into QUALITIES
        self._sent_at = 0.0
        self._pending_ack: int | None = None  # the frame the viewer still draws
        self._outbox: asyncio.Queue[str | bytes] = asyncio.Queue(maxsize=4)
        self.frames = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._switching = asyncio.Lock()

    # -- lifecycle

    async def open(self) -> None:
        result = await self._conn.call("Target.attachToBrowserTarget")
        self._browser = str(result["sessionId"])
        self._conn.on_session_event(self._browser, self._on_browser_event)
        targets = await self._conn.call(
            "Target.getTargets", {"filter": [{"type": "page"}]}, self._browser
        )
        for info in targets.get("targetInfos", []):
            self._tabs[info["targetId"]] = info
        await self._conn.call(
            "Target.setDiscoverTargets",
            {"discover": True, "filter": [{"type": "page"}]},
            self._browser,
        )
        if self._tabs:
            await self.watch(next(iter(self._tabs)))
        else:
            self._post_tabs()

    def close(self) -> None:
        """Stop everything for this viewer, without waiting for answers."""
        for task in list(self._tasks):
            task.cancel()
        if self._page:
            self._conn.send("Page.stopScreencast", None, self._page, _ignore)
            self._conn.on_session_event(self._page, None)
        if self._browser:
            self._conn.on_session_event(self._browser, None)
            self._conn.send("Target.detachFromTarget", {"sessionId": self._browser}, None, _ignore)
        self._page = self._browser = ""

    async def watch(self, target_id: str, front: bool = False, if_idle: bool = False) -> None:
        """Show another tab (or the first one); `front` brings it to the
        front first, like clicking a tab (a page in the background paints no
        frames). One switch at a time: target events arrive while a switch
        awaits the browser, and two interleaved would leave two screencasts."""
        async with self._switching:
            if if_idle and self.target:
                return
            await self._switch(target_id, front)

    async def _switch(self, target_id: str, front: bool) -> None:
        if target_id not in self._tabs or target_id == self.target:
            return
        if self._page:
            self._conn.send("Page.stopScreencast", None, self._page, _ignore)
            self._conn.on_session_event(self._page, None)
            self._conn.send(
                "Target.detachFromTarget", {"sessionId": self._page}, self._browser, _ignore
            )
        attached = await self._conn.call(
            "Target.attachToTarget", {"targetId": target_id, "flatten": True}, self._browser
        )
        self._page, self.target = str(attached["sessionId"]), target_id
        self._conn.on_session_event(self._page, self._on_page_event)
        self._pending_ack = None
        if front:
            self._conn.send("Page.bringToFront", None, self._page, _ignore)
        self._start_screencast()
        self._post_tabs()
        self._later(self._first_frame(self._page))

    async def _first_frame(self, page: str) -> None:
        """Show a tab at once: a screencast sends frames when the page paints,
        and a still page that was in the background may not paint again."""
        with contextlib.suppress(CDPError, TimeoutError):
            shot = await self._conn.call(
                "Page.captureScreenshot",
                {"format": "jpeg", "quality": QUALITIES[self._quality]},
                page,
                timeout=5,
            )
            if page == self._page and self._pending_ack is None:
                header = {"type": "frame", "width": None, "height": None, "tab": self.target}
                if self._offer(json.dumps(header)):
                    self._offer(base64.b64decode(shot["data"]))

    def _start_screencast(self) -> None:
        width, height = self._size
        params = {
            "format": "jpeg",
            "quality": QUALITIES[self._quality],
            "maxWidth": width,
            "maxHeight": height,
        }
        self._conn.send("Page.startScreencast", params, self._page, _ignore)

    # -- from the browser

    def _on_browser_event(self, event: Message) -> None:
        method, params = event.get("method"), event.get("params") or {}
        info = params.get("targetInfo") or {}
        if method in ("Target.targetCreated", "Target.targetInfoChanged"):
            if info.get("type") == "page":
                self._tabs[info["targetId"]] = info
                if not self.target:
                    self._later(self._watch_quietly(info["targetId"]))
                self._post_tabs()
        elif method == "Target.targetDestroyed":
            gone = str(params.get("targetId", ""))
            self._tabs.pop(gone, None)
            if gone == self.target:
                self.target, self._page = "", ""
                if self._tabs:
                    self._later(self._watch_quietly(next(iter(self._tabs))))
            self._post_tabs()

    def _later(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _watch_quietly(self, target_id: str) -> None:
        with contextlib.suppress(CDPError, KeyError):
            await self.watch(target_id, if_idle=True)

    def _on_page_event(self, event: Message) -> None:
        if event.get("method") != "Page.screencastFrame":
            return
        params = event["params"]
        meta = params.get("metadata") or {}
        header = {
            "type": "frame",
            "width": meta.get("deviceWidth"),
            "height": meta.get("deviceHeight"),
            "tab": self.target,
        }
        if not self._offer(json.dumps(header)) or not self._offer(base64.b64decode(params["data"])):
            # The viewer is behind: drop this frame, and let Chromium send
            # the next one (screencasts pause until a frame is acknowledged).
            self._ack(int(params["sessionId"]))
            return
        self.frames += 1
        self._pending_ack = int(params["sessionId"])
        self._sent_at = time.monotonic()

    def _offer(self, message: str | bytes) -> bool:
        try:
            self._outbox.put_nowait(message)
            return True
        except asyncio.QueueFull:
            return False

    def _ack(self, frame: int) -> None:
        if self._page:
            self._conn.send("Page.screencastFrameAck", {"sessionId": frame}, self._page, _ignore)

    def _post_tabs(self) -> None:
        tabs = [
            {"id": t, "title": i.get("title", ""), "url": i.get("url", "")}
            for t, i in self._tabs.items()
        ]
        message = {
            "type": "tabs",
            "tabs": tabs,
            "active": self.target,
            "interactive": self._interactive(),
        }
        self._offer(json.dumps(message))

    # -- from the viewer

    async def pump(self) -> None:
        """Send queued messages to the viewer until cancelled."""
        while True:
            await self._send(await self._outbox.get())

    async def follow_control(self, every_s: float = 0.5) -> None:
        """Tell the viewer when control passes (UpdateBrowserStream)."""
        shown = self._interactive()
        while True:
            await asyncio.sleep(every_s)
            if (now := self._interactive()) != shown:
                shown = now
                self._offer(json.dumps({"type": "control", "interactive": now}))

    async def handle(self, raw: str | bytes) -> None:
        try:
            message = json.loads(raw)
        except ValueError:
            return
        if not isinstance(message, dict):
            return
        kind = message.get("type")
        if kind == "ack":
            self._drawn()
        elif kind == "tab":
            await self.watch(str(message.get("id", "")), front=True)
        elif kind in ("mouse", "key", "text"):
            self._input(kind, message)

    def _drawn(self) -> None:
        if self._pending_ack is None:
            return
        lag = time.monotonic() - self._sent_at
        frame, self._pending_ack = self._pending_ack, None
        self._ack(frame)
        step = self._quality
        if lag > SLOW_ACK_S and step < len(QUALITIES) - 1:
            step += 1
        elif lag < FAST_ACK_S and step > 0:
            step -= 1
        if step != self._quality and self._page:
            self._quality = step
            self._start_screencast()  # restarting is how quality changes

    def _input(self, kind: str, message: Message) -> None:
        if not self._page:
            return
        if not self._interactive():
            self._offer(json.dumps({"type": "control", "interactive": False}))
            return
        self._in_use(self.target)
        if kind == "mouse" and message.get("event") in MOUSE_EVENTS:
            params: Message = {
                "type": message["event"],
                "x": float(message.get("x", 0)),
                "y": float(message.get("y", 0)),
                "button": str(message.get("button", "none")),
                "clickCount": int(message.get("clickCount", 0)),
                "modifiers": int(message.get("modifiers", 0)),
            }
            if message["event"] == "mouseWheel":
                params["deltaX"] = float(message.get("deltaX", 0))
                params["deltaY"] = float(message.get("deltaY", 0))
            self._conn.send("Input.dispatchMouseEvent", params, self._page, _ignore)
        elif kind == "key" and message.get("event") in KEY_EVENTS:
            params = {"type": message["event"], "modifiers": int(message.get("modifiers", 0))}
            for field in ("key", "code", "text"):
                if isinstance(message.get(field), str):
                    params[field] = message[field]
            if isinstance(message.get("keyCode"), int):
                params["windowsVirtualKeyCode"] = message["keyCode"]
            self._conn.send("Input.dispatchKeyEvent", params, self._page, _ignore)
        elif kind == "text" and isinstance(message.get("text"), str):
            self._conn.send("Input.insertText", {"text": message["text"]}, self._page, _ignore)
