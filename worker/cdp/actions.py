"""What a person does at the screen (InvokeBrowser): mouse clicks, moves,
drags and scrolls, typing, key presses and shortcuts, and screenshots, on
the tab the session shows, with JavaScript dialogs answered the way a
person answers them.

A dialog (alert, confirm, prompt, beforeunload) blocks its page's
renderer, and with it every CDP client's calls into that page. CDP lets a
session answer a dialog only if it had the Page domain enabled before the
dialog opened (enabling it afterwards waits on the blocked renderer). So an
`Actor` runs from the session's start: its own browser-target session
auto-attaches to every page and enables Page there, and keeps which pages
have a dialog open. An action on such a page answers it as a person would:
Enter accepts (a prompt gets the text typed since it opened), Escape
dismisses; anything else fails, saying what is open. An action that opens
a dialog (a click on a button that calls alert()) succeeds once the dialog
is up, instead of waiting on the renderer the dialog blocks.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
from collections.abc import Awaitable, Mapping
from typing import Any

from worker.cdp import CDPError, Connection, Message, keys

BUTTON_BITS = {"left": 1, "right": 2, "middle": 4}
DRAG_STEPS = 10  # intermediate moves: pages that follow the pointer see a path


@dataclasses.dataclass(frozen=True)
class Action:
    """One action as the hosted API names it (mouseClick, keyType, ...) and
    its arguments, already checked against the viewport and the limits."""

    kind: str
    args: Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Result:
    ok: bool
    error: str = ""
    data: bytes = b""  # a screenshot's PNG


@dataclasses.dataclass
class Dialog:
    type: str  # alert, confirm, prompt, beforeunload
    message: str
    typed: str = ""  # what was typed into a prompt since it opened


def _ignore(_reply: Message) -> None:
    pass


class Actor:
    """One session's hands: the pages it can act on and their dialogs."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._browser = ""
        self._pages: dict[str, str] = {}  # target id -> our session on it, in attach order
        self.dialogs: dict[str, Dialog] = {}
        self._origins: dict[str, str] = {}  # target id -> the origin its top frame shows
        self.visited: set[str] = set()  # every http(s) origin a tab has shown
        self._opened: dict[str, asyncio.Future[None]] = {}  # a dialog opened mid-action

    async def open(self) -> None:
        attached = await self._conn.call("Target.attachToBrowserTarget")
        self._browser = str(attached["sessionId"])
        self._conn.on_session_event(self._browser, self._on_browser_event)
        await self._conn.call(
            "Target.setAutoAttach",
            {
                "autoAttach": True,
                "waitForDebuggerOnStart": False,
                "flatten": True,
                "filter": [{"type": "page"}],
            },
            self._browser,
        )

    def close(self) -> None:
        for session in self._pages.values():
            self._conn.on_session_event(session, None)
        if self._browser:
            self._conn.on_session_event(self._browser, None)
            self._conn.send("Target.detachFromTarget", {"sessionId": self._browser}, None, _ignore)
        self._pages.clear()
        self._browser = ""

    def newest_page(self) -> str:
        """The tab opened last: the one in front, as a person would see it."""
        return next(reversed(self._pages), "")

    def has_page(self, target_id: str) -> bool:
        return target_id in self._pages

    @property
    def browser_session(self) -> str:
        return self._browser

    def shown(self) -> dict[str, str]:
        """Each origin a tab shows now, with our session on that tab."""
        return {
            origin: self._pages[target]
            for target, origin in self._origins.items()
            if target in self._pages and target not in self.dialogs
        }

    # -- events

    def _on_browser_event(self, event: Message) -> None:
        params = event.get("params") or {}
        if event.get("method") == "Target.attachedToTarget":
            info, session = params.get("targetInfo") or {}, str(params.get("sessionId", ""))
            if info.get("type") != "page" or not session:
                return
            target = str(info.get("targetId", ""))
            self._pages[target] = session
            self._conn.on_session_event(session, lambda e: self._on_page_event(target, e))
            self._conn.send("Page.enable", None, session, _ignore)
        elif event.get("method") == "Target.detachedFromTarget":
            session = str(params.get("sessionId", ""))
            for target, ours in list(self._pages.items()):
                if ours == session:
                    del self._pages[target]
                    self.dialogs.pop(target, None)
                    self._origins.pop(target, None)
                    self._conn.on_session_event(session, None)

    def _on_page_event(self, target: str, event: Message) -> None:
        method, params = event.get("method"), event.get("params") or {}
        if method == "Page.javascriptDialogOpening":
            self.dialogs[target] = Dialog(str(params.get("type")), str(params.get("message")))
            waiting = self._opened.get(target)
            if waiting is not None and not waiting.done():
                waiting.set_result(None)
        elif method == "Page.javascriptDialogClosed":
            self.dialogs.pop(target, None)
        elif method == "Page.frameNavigated":
            frame = params.get("frame") or {}
            origin = str(frame.get("securityOrigin", ""))
            if frame.get("parentId"):
                return
            if origin.startswith(("http://", "https://")):
                self._origins[target] = origin
                self.visited.add(origin)
            else:
                self._origins.pop(target, None)

    # -- actions

    async def perform(self, target: str, action: Action, timeout: float) -> Result:
        """Do `action` on the page `target`; never raises for the page's sake."""
        session = self._pages.get(target)
        if session is None:
            return Result(False, "the session has no open tab to act on")
        dialog = self.dialogs.get(target)
        if dialog is not None:
            return await self._answer(target, session, dialog, action)
        opened = asyncio.get_running_loop().create_future()
        self._opened[target] = opened
        work = asyncio.ensure_future(self._do(session, action))
        try:
            done, _ = await asyncio.wait(
                {work, opened}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            self._opened.pop(target, None)
        if work in done:
            return work.result()
        work.cancel()
        if opened in done:
            # The action opened a dialog, which blocks the rest of its answer.
            return Result(True)
        return Result(False, f"the page did not respond within {timeout:g} s")

    async def _do(self, session: str, action: Action) -> Result:
        try:
            data = await getattr(self, "_" + action.kind)(session, action.args)
        except CDPError as exc:
            return Result(False, f"the browser refused it: {exc}")
        return Result(True, data=data or b"")

    async def _answer(self, target: str, session: str, dialog: Dialog, action: Action) -> Result:
        """An action on a page whose dialog is open: what a person's would do."""
        key = keys.lookup(str(action.args.get("key", ""))) if action.kind == "keyPress" else None
        if key is not None and key.key in ("Enter", "Escape"):
            accept = key.key == "Enter"
            params: Message = {"accept": accept}
            if accept and dialog.type == "prompt":
                params["promptText"] = dialog.typed
            try:
                await self._conn.call("Page.handleJavaScriptDialog", params, session, timeout=10)
            except (CDPError, TimeoutError) as exc:
                return Result(False, f"the dialog could not be answered: {exc}")
            self.dialogs.pop(target, None)
            return Result(True)
        if action.kind == "keyType" and dialog.type == "prompt":
            dialog.typed += str(action.args["text"])
            return Result(True)
        what = f"a JavaScript {dialog.type} is open ({dialog.message[:200]!r})"
        return Result(False, f"{what}: press Enter to accept it or Escape to dismiss it")

    # Each returns the data of its result (a screenshot's), or None.

    async def _mouseClick(self, session: str, args: Mapping[str, Any]) -> None:
        x, y, button = args["x"], args["y"], str(args.get("button", "LEFT")).lower()
        await self._mouse(session, "mouseMoved", x, y)
        for count in range(1, int(args.get("clickCount", 1)) + 1):
            await self._mouse(session, "mousePressed", x, y, button, count)
            await self._mouse(session, "mouseReleased", x, y, button, count)

    async def _mouseMove(self, session: str, args: Mapping[str, Any]) -> None:
        await self._mouse(session, "mouseMoved", args["x"], args["y"])

    async def _mouseDrag(self, session: str, args: Mapping[str, Any]) -> None:
        button = str(args.get("button", "LEFT")).lower()
        (x0, y0), (x1, y1) = (args["startX"], args["startY"]), (args["endX"], args["endY"])
        await self._mouse(session, "mouseMoved", x0, y0)
        await self._mouse(session, "mousePressed", x0, y0, button, 1)
        for step in range(1, DRAG_STEPS + 1):
            x = x0 + (x1 - x0) * step / DRAG_STEPS
            y = y0 + (y1 - y0) * step / DRAG_STEPS
            await self._mouse(session, "mouseMoved", x, y, button, 0, pressed=True)
        await self._mouse(session, "mouseReleased", x1, y1, button, 1)

    async def _mouseScroll(self, session: str, args: Mapping[str, Any]) -> None:
        await self._mouse(session, "mouseMoved", args["x"], args["y"])
        await self._conn.call(
            "Input.dispatchMouseEvent",
            {
                "type": "mouseWheel",
                "x": args["x"],
                "y": args["y"],
                "deltaX": args.get("deltaX", 0),
                "deltaY": args.get("deltaY", 0),
            },
            session,
        )

    async def _keyType(self, session: str, args: Mapping[str, Any]) -> None:
        # Every key's events are sent at once and answered in order: typing
        # 10,000 characters takes one round trip's wait, not 10,000.
        sent: list[Awaitable[Message]] = []
        for char in str(args["text"]):
            sent += self._key_events(session, keys.for_char(char), 0)
        await asyncio.gather(*sent)

    async def _keyPress(self, session: str, args: Mapping[str, Any]) -> None:
        key = keys.lookup(str(args["key"]))
        assert key is not None  # checked at the edge
        sent: list[Awaitable[Message]] = []
        for _ in range(int(args.get("presses", 1))):
            sent += self._key_events(session, key, 0)
        await asyncio.gather(*sent)

    async def _keyShortcut(self, session: str, args: Mapping[str, Any]) -> None:
        held = [keys.lookup(str(name)) for name in args["keys"]]
        modifiers, sent = 0, []
        for key in held:
            assert key is not None  # checked at the edge
            modifiers |= key.modifier
            # Text only without Control, Alt or Meta: ctrl+a selects, it types nothing.
            typing = key.text if not modifiers & (keys.CTRL | keys.ALT | keys.META) else ""
            sent.append(self._key_event(session, "keyDown", key, modifiers, typing))
        for key in reversed(held):
            assert key is not None
            sent.append(self._key_event(session, "keyUp", key, modifiers))
            modifiers &= ~key.modifier
        await asyncio.gather(*sent)

    async def _screenshot(self, session: str, args: Mapping[str, Any]) -> bytes:
        shot = await self._conn.call("Page.captureScreenshot", {"format": "png"}, session)
        return base64.b64decode(shot["data"])

    # -- input events

    async def _mouse(
        self,
        session: str,
        kind: str,
        x: float,
        y: float,
        button: str = "none",
        clicks: int = 0,
        pressed: bool = False,
    ) -> None:
        held = BUTTON_BITS.get(button, 0) if pressed or kind == "mousePressed" else 0
        await self._conn.call(
            "Input.dispatchMouseEvent",
            {"type": kind, "x": x, "y": y, "button": button, "buttons": held, "clickCount": clicks},
            session,
        )

    def _key_events(self, session: str, key: keys.Key, modifiers: int) -> list[Awaitable[Message]]:
        return [
            self._key_event(session, "keyDown", key, modifiers, key.text),
            self._key_event(session, "keyUp", key, modifiers),
        ]

    def _key_event(
        self, session: str, kind: str, key: keys.Key, modifiers: int, text: str = ""
    ) -> Awaitable[Message]:
        params: Message = {
            "type": kind if text or kind == "keyUp" else "rawKeyDown",
            "key": key.key,
            "code": key.code,
            "windowsVirtualKeyCode": key.key_code,
            "modifiers": modifiers,
        }
        if text:
            params["text"] = params["unmodifiedText"] = text
        return self._conn.call("Input.dispatchKeyEvent", params, session)
