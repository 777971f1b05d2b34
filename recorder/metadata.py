"""metadata.json: written last, when every batch of a session is uploaded.

Readers of the hosted service's recordings look for `startTime`,
`durationMs` (or `duration`), `eventCount` (or `totalEvents`) and
`batches[].file`; the rest says whether the recording can be trusted whole.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from recorder.batch import BatchInfo

FORMAT_VERSION = 1


def iso(ms: float) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def gaps(batches: list[BatchInfo]) -> list[tuple[int, int]]:
    """Sequence ranges missing between batches (first..last, inclusive), or
    inside one (fewer events than its range: the range is named whole)."""
    missing, expected = [], 1
    for info in batches:
        if info.first_seq > expected:
            missing.append((expected, info.first_seq - 1))
        if info.event_count and info.last_seq - info.first_seq + 1 != info.event_count:
            missing.append((info.first_seq, info.last_seq))
        expected = max(expected, info.last_seq + 1)
    return missing


def build(facts: dict[str, Any], end: dict[str, Any], batches: list[BatchInfo]) -> dict[str, Any]:
    start_ms, end_ms = float(facts["startTime"]), float(end["endTime"])
    missing = gaps(batches)
    reasons = list(end.get("incompleteReasons", []))
    if missing:
        reasons.append(f"sequence numbers missing: {missing[:10]}")
    event_count = sum(b.event_count for b in batches)
    trace = {key: facts[key] for key in ("traceId", "traceParent") if facts.get(key)}
    return {
        **trace,
        "formatVersion": FORMAT_VERSION,
        "sessionId": facts["sessionId"],
        "browserId": facts["browserId"],
        "startTime": iso(start_ms),
        "endTime": iso(end_ms),
        "durationMs": max(0, round(end_ms - start_ms)),
        "eventCount": event_count,
        "totalEvents": event_count,
        # The size the session asked for, and the one its first page had
        # (rrweb's meta event): they differ when the window is not the page.
        "viewport": facts.get("viewport", {}),
        "pageViewport": end.get("pageViewport") or {},
        "terminationReason": end.get("reason", ""),
        "complete": not reasons,
        "incompleteReasons": reasons,
        "droppedEvents": int(end.get("droppedEvents", 0)),
        "batches": [b.to_dict() for b in batches],
    }


def trace_fields(facts: dict[str, Any]) -> dict[str, str]:
    """The caller's trace context among a session's facts, as log fields."""
    pairs = (("trace_id", "traceId"), ("trace_parent", "traceParent"))
    return {field: str(facts[key]) for field, key in pairs if facts.get(key)}
