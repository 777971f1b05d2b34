"""One session's event stream: time order, sequence numbers, and bounds.

Pages send their rrweb events ~100 ms late (batched), CDP events arrive as
they happen, so events wait in a small reorder window and leave it sorted by
timestamp; each leaving event gets the next sequence number, which makes the
stream contiguous by construction and a gap in a file visible.

Events are kept as JSON text: a page's lines are `<timestamp> <event JSON>`
and are never parsed here, only prefixed with `"seq"` (and `"tab"`).

One timeline for all tabs: readers of the hosted layout feed every event to
one rrweb player, which applies each incremental event to the page of the
latest full snapshot. So the stream tracks the tab "on show" (that of the
latest full snapshot, in stream order), and writes the rrweb DOM events of
any other tab wrapped in a custom event (`other-tab`, the original as its
payload): such a player skips them, and a per-tab reader unwraps them. When
a tab comes into use again the capture asks it for a fresh full snapshot,
which puts it on show. Memory is bounded:
past `max_pending_bytes` new events are dropped and counted, and one
`recording-gap` custom event records how many, so a reader sees the hole.
"""

from __future__ import annotations

import heapq
import json
import re
import time
from typing import Any

CUSTOM = 5  # rrweb's EventType.Custom
FULL_SNAPSHOT, INCREMENTAL, META = 2, 3, 4
OTHER_TAB = "other-tab"
# A page event's text starts `{"tab":N,"type":T,`: rrweb's JSON.stringify
# puts `type` first, and add_page_batch puts `tab` before it.
_PAGE_EVENT = re.compile(r'\{"tab":(\d+),"type":(\d+),')


def now_ms() -> float:
    return time.time() * 1000


def custom(tag: str, payload: Any, timestamp: float | None = None) -> tuple[float, str]:
    """An rrweb custom event (type 5) as (timestamp, JSON text); integer
    milliseconds, like rrweb's own events."""
    # Now, rounded down: an event made now is never in the future of a take.
    ts = int(now_ms()) if timestamp is None else round(timestamp)
    body = json.dumps(
        {"type": CUSTOM, "data": {"tag": tag, "payload": payload}, "timestamp": ts},
        separators=(",", ":"),
        default=str,
    )
    return ts, body


META_PREFIX = '{"type":4,'  # rrweb's meta event, as its JSON.stringify starts


def _viewport(meta: str) -> dict[str, int] | None:
    """The page size an rrweb meta event reports."""
    try:
        data = json.loads(meta).get("data") or {}
        return {"width": int(data["width"]), "height": int(data["height"])}
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Stream:
    def __init__(self, window_ms: float = 300.0, max_pending_bytes: int = 32 * 1024 * 1024):
        self._window_ms = window_ms
        self._max_pending = max_pending_bytes
        self._heap: list[tuple[float, int, str]] = []
        self._arrival = 0  # ties keep arrival order
        self.pending_bytes = 0
        self.seq = 0  # last sequence number handed out
        self.dropped = 0  # events refused for lack of room, in total
        self._gap = 0  # dropped since the last gap marker
        self.malformed = 0
        self.page_viewport: dict[str, int] | None = None  # the first page's, from rrweb
        self.shown_tab = 0  # the tab of the latest full snapshot taken out
        self.latest_snapshot_tab = 0  # the tab of the latest meta event put in

    def add(self, timestamp: float, body: str) -> bool:
        """Queue one event; False when it was dropped (memory bound)."""
        if self.pending_bytes + len(body) > self._max_pending:
            self.dropped += 1
            self._gap += 1
            return False
        self._arrival += 1
        heapq.heappush(self._heap, (timestamp, self._arrival, body))
        self.pending_bytes += len(body)
        return True

    def add_custom(self, tag: str, payload: Any, timestamp: float | None = None) -> None:
        self.add(*custom(tag, payload, timestamp))

    def add_page_batch(self, payload: str, tab: int = 0) -> int:
        """Queue a page's binding payload; returns the events accepted. Each
        event gets the page's tab number (`"tab"`), so a reader can replay
        one tab of a session that had several."""
        prefix = f'{{"tab":{tab},' if tab else "{"
        accepted = 0
        for line in payload.split("\n"):
            stamp, _, body = line.partition(" ")
            try:
                timestamp = float(stamp)
            except ValueError:
                self.malformed += 1
                continue
            if len(body) < 3 or body[0] != "{" or body[-1] != "}":
                self.malformed += 1
                continue
            if body.startswith(META_PREFIX):
                self.latest_snapshot_tab = tab
                if self.page_viewport is None:
                    self.page_viewport = _viewport(body)
            accepted += self.add(timestamp, prefix + body[1:])
        return accepted

    def take(self, final: bool = False) -> list[tuple[float, str]]:
        """Events whose window has passed (all of them when `final`), in
        order, as (timestamp, NDJSON line carrying its sequence number)."""
        lines: list[tuple[float, str]] = []
        if self._gap:
            ts, body = custom("recording-gap", {"droppedEvents": self._gap})
            self._gap = 0
            self._arrival += 1
            heapq.heappush(self._heap, (ts, self._arrival, body))
            self.pending_bytes += len(body)
        horizon = float("inf") if final else now_ms() - self._window_ms
        heap = self._heap
        while heap and heap[0][0] <= horizon:
            ts, _, body = heapq.heappop(heap)
            self.pending_bytes -= len(body)
            self.seq += 1
            lines.append((ts, f'{{"seq":{self.seq},{self._on_one_timeline(ts, body)[1:]}'))
        return lines

    def _on_one_timeline(self, timestamp: float, body: str) -> str:
        """`body` as it goes out: a full snapshot (or the meta event before
        it) puts its tab on show; an incremental event of another tab is
        wrapped so a player of all tabs at once does not apply it here."""
        page = _PAGE_EVENT.match(body)
        if page is None:
            return body
        tab, kind = int(page[1]), int(page[2])
        if kind in (META, FULL_SNAPSHOT):
            self.shown_tab = tab
        elif kind == INCREMENTAL and self.shown_tab and tab != self.shown_tab:
            return (
                f'{{"tab":{tab},"type":{CUSTOM},"timestamp":{round(timestamp)},'
                f'"data":{{"tag":"{OTHER_TAB}","payload":{body}}}}}'
            )
        return body
