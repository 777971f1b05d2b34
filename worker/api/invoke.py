"""InvokeBrowser at the edge: the request's one action, checked against the
hosted API's limits and the session's viewport, as a domain `Action` (the
hosted names: mouseClick with x, y, button, clickCount, ...), and the
result back as the answer. Each refusal names its field."""

from __future__ import annotations

from typing import Any

from google.protobuf.json_format import MessageToDict

from worker.cdp import keys
from worker.cdp.actions import Action, Result
from worker.errors import InvalidArgument
from worker.pb import sandbox_pb2 as pb
from worker.sessions.model import Viewport

MAX_TEXT = 10_000
BUTTONS = ("LEFT", "RIGHT", "MIDDLE")
POINTS = {
    "mouse_click": (("x", "y"),),
    "mouse_move": (("x", "y"),),
    "mouse_scroll": (("x", "y"),),
    "mouse_drag": (("start_x", "start_y"), ("end_x", "end_y")),
}


def action(request: Any, viewport: Viewport) -> Action:
    which = request.action.WhichOneof("action") if request.HasField("action") else None
    if which is None:
        raise InvalidArgument(
            "action", "must hold exactly one of " + ", ".join(_camel(n) for n in ACTIONS)
        )
    args: dict[str, Any] = MessageToDict(
        getattr(request.action, which), preserving_proto_field_name=True
    )
    field = f"action.{which}"
    for x_name, y_name in POINTS.get(which, ()):
        _inside(field, x_name, int(args.get(x_name, 0)), viewport.width)
        _inside(field, y_name, int(args.get(y_name, 0)), viewport.height)
    ACTIONS[which](field, args)
    return Action(_camel(which), {_camel(k): v for k, v in args.items()})


def answer(session_id: str, kind: str, result: Result) -> pb.InvokeBrowserResponse:
    return pb.InvokeBrowserResponse(
        session_id=session_id,
        action=kind,
        status=pb.SUCCESS if result.ok else pb.FAILED,
        error=result.error,
        data=result.data,
    )


# -- each action's own limits


def _click(field: str, args: dict[str, Any]) -> None:
    _button(field, args)
    _range(field, "click_count", int(args.get("click_count", 1)), 1, 10)


def _drag(field: str, args: dict[str, Any]) -> None:
    _button(field, args)


def _scroll(field: str, args: dict[str, Any]) -> None:
    for name in ("delta_x", "delta_y"):
        _range(field, name, int(args.get(name, 0)), -1000, 1000)


def _type(field: str, args: dict[str, Any]) -> None:
    text = str(args.get("text", ""))
    if len(text) > MAX_TEXT:
        raise InvalidArgument(f"{field}.text", f"must be at most {MAX_TEXT} characters")
    args["text"] = text


def _press(field: str, args: dict[str, Any]) -> None:
    _known_key(f"{field}.key", str(args.get("key", "")))
    _range(field, "presses", int(args.get("presses", 1)), 1, 100)


def _shortcut(field: str, args: dict[str, Any]) -> None:
    names = list(args.get("keys", []))
    if not 1 <= len(names) <= 5:
        raise InvalidArgument(f"{field}.keys", "must name 1 to 5 keys")
    for index, name in enumerate(names):
        _known_key(f"{field}.keys[{index}]", str(name))


def _screenshot(field: str, args: dict[str, Any]) -> None:
    if str(args.get("format", "PNG")) != "PNG":
        raise InvalidArgument(f"{field}.format", "must be PNG")


def _nothing(field: str, args: dict[str, Any]) -> None:
    pass


ACTIONS = {
    "mouse_click": _click,
    "mouse_move": _nothing,
    "mouse_drag": _drag,
    "mouse_scroll": _scroll,
    "key_type": _type,
    "key_press": _press,
    "key_shortcut": _shortcut,
    "screenshot": _screenshot,
}


# -- helpers


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _inside(field: str, name: str, value: int, size: int) -> None:
    # The hosted API's bounds: 1 < x < width - 2 (and the same for y).
    if not 1 < value < size - 2:
        raise InvalidArgument(
            f"{field}.{name}",
            f"must be from 2 to {size - 3}: inside the session's {size}-pixel viewport",
        )


def _range(field: str, name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise InvalidArgument(f"{field}.{name}", f"must be from {low} to {high}")


def _button(field: str, args: dict[str, Any]) -> None:
    button = str(args.get("button", "LEFT"))
    if button == "MOUSE_BUTTON_UNSPECIFIED":
        button = "LEFT"
    if button not in BUTTONS:
        raise InvalidArgument(f"{field}.button", "must be LEFT, RIGHT or MIDDLE")
    args["button"] = button


def _known_key(field: str, name: str) -> None:
    if keys.lookup(name) is None:
        raise InvalidArgument(
            field, f"{name[:40]!r} is not a key name (e.g. Enter, Escape, Tab, ArrowDown, F5, a)"
        )
