"""The live view's pacing, against a fake CDP connection (pure logic)."""

from __future__ import annotations

import base64
import time
from typing import Any

from worker.cdp.screencast import QUALITIES, Viewer


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def send(self, method: str, params: Any, session_id: Any, on_reply: Any) -> int:
        self.sent.append((method, params))
        return len(self.sent)

    def on_session_event(self, session_id: str, handler: Any) -> None:
        pass


def frame(number: int) -> dict[str, Any]:
    data = base64.b64encode(b"\xff\xd8jpeg").decode()
    meta = {"deviceWidth": 800, "deviceHeight": 600}
    return {
        "method": "Page.screencastFrame",
        "params": {"sessionId": number, "data": data, "metadata": meta},
    }


def viewer() -> tuple[Viewer, FakeConnection]:
    conn = FakeConnection()
    v = Viewer(conn, send=None, interactive=lambda: False, size=(800, 600))  # type: ignore[arg-type]
    v._page = "page-session"
    return v, conn


def test_a_frame_is_acknowledged_only_once_the_viewer_drew_it() -> None:
    v, conn = viewer()
    v._on_page_event(frame(7))
    assert not [m for m, _ in conn.sent if m == "Page.screencastFrameAck"]
    v._drawn()
    assert ("Page.screencastFrameAck", {"sessionId": 7}) in conn.sent


def test_quality_steps_down_when_the_viewer_lags_and_back_up_when_it_keeps_up() -> None:
    v, conn = viewer()
    v._on_page_event(frame(1))
    v._sent_at = time.monotonic() - 1.0  # drawn a second later
    v._drawn()
    restarts = [p for m, p in conn.sent if m == "Page.startScreencast"]
    assert restarts[-1]["quality"] == QUALITIES[1]
    v._on_page_event(frame(2))
    v._drawn()  # at once
    restarts = [p for m, p in conn.sent if m == "Page.startScreencast"]
    assert restarts[-1]["quality"] == QUALITIES[0]


def test_input_is_refused_while_the_viewer_may_not_drive() -> None:
    v, conn = viewer()
    v._input("mouse", {"event": "mousePressed", "x": 1, "y": 1, "button": "left"})
    assert not [m for m, _ in conn.sent if m.startswith("Input.")]
