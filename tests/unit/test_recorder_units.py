"""The recorder's pure parts: ordering, bounds, batch files, redaction."""

from __future__ import annotations

import errno
import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from recorder import metadata, redact, stream
from recorder.batch import BatchInfo, BatchWriter, WriteFailed, salvage, sidecar
from recorder.stream import Stream, now_ms


def test_late_page_events_leave_in_timestamp_order_with_contiguous_sequence_numbers() -> None:
    stream = Stream(window_ms=0)
    t = now_ms() - 1000
    stream.add_custom("console", {"text": "cdp"}, t + 50)
    stream.add_page_batch(f'{t + 10} {{"type":3,"timestamp":{t + 10}}}\n{t + 90} {{"type":3}}', 2)
    events = [json.loads(line) for _, line in stream.take()]
    assert [e["seq"] for e in events] == [1, 2, 3]
    assert [e.get("tab") for e in events] == [2, None, 2]
    assert events[1]["data"]["payload"]["text"] == "cdp"


def test_events_inside_the_reorder_window_wait() -> None:
    stream = Stream(window_ms=10_000)
    stream.add_custom("console", {"text": "now"})
    assert stream.take() == []
    assert len(stream.take(final=True)) == 1


def test_a_full_memory_bound_drops_events_and_leaves_a_gap_marker() -> None:
    stream = Stream(window_ms=0, max_pending_bytes=300)
    for i in range(10):
        stream.add_custom("console", {"text": f"line {i}"}, now_ms() - 100)
    events = [json.loads(line) for _, line in stream.take()]
    gap = [e for e in events if e["type"] == 5 and e["data"]["tag"] == "recording-gap"]
    assert stream.dropped > 0
    assert gap and gap[0]["data"]["payload"]["droppedEvents"] == stream.dropped


def test_malformed_page_lines_are_counted_not_recorded() -> None:
    stream = Stream(window_ms=0)
    assert stream.add_page_batch("x {}\n12 not-json\n13 {}") == 0
    assert stream.malformed == 3


def write(directory: Path, count: int, max_bytes: int = 1 << 30) -> tuple[BatchWriter, list]:
    writer = BatchWriter(directory, max_bytes=max_bytes, max_age_s=60)
    events = [(1000.0 + i, f'{{"seq":{i + 1},"timestamp":{1000 + i}}}') for i in range(count)]
    closed = writer.write(events, 1)
    return writer, closed


def test_batches_close_on_size_with_their_range_and_checksum(tmp_path: Path) -> None:
    writer, closed = write(tmp_path, 100, max_bytes=1000)
    last = writer.close()
    assert last is not None
    infos = [*closed, last]
    assert [i.n for i in infos] == list(range(1, len(infos) + 1)) and len(infos) > 2
    assert sum(i.event_count for i in infos) == 100
    assert infos[1].first_seq == infos[0].last_seq + 1
    on_disk = json.loads(sidecar(tmp_path, 1).read_text())
    assert BatchInfo.from_dict(on_disk) == infos[0]
    lines = gzip.decompress((tmp_path / "batch-1.ndjson.gz").read_bytes()).splitlines()
    assert len(lines) == infos[0].event_count


def test_salvage_keeps_the_complete_lines_of_a_batch_left_open(tmp_path: Path) -> None:
    writer, _ = write(tmp_path, 50)
    writer.write([(2000.0, '{"seq":51,"timestamp":2000}')], 51)
    writer._file.close()  # the daemon was killed: no gzip trailer
    path = tmp_path / "batch-1.ndjson.gz"
    path.write_bytes(path.read_bytes()[:-3])  # and the last write was torn
    info = salvage(tmp_path, 1)
    assert info is not None and info.first_seq == 1
    assert 45 <= info.event_count <= 51 and info.last_seq == info.event_count
    assert len(gzip.decompress(path.read_bytes()).splitlines()) == info.event_count


def test_secret_headers_are_redacted_in_any_case() -> None:
    headers = {"authorization": "Bearer x", "Cookie": "a=b", "Accept": "text/html"}
    assert redact.headers(headers) == {
        "authorization": "[redacted]",
        "Cookie": "[redacted]",
        "Accept": "text/html",
    }


def test_command_parameters_lose_secret_keys_typed_characters_and_bulk() -> None:
    params = {
        "headers": {"Proxy-Authorization": "Basic abc"},
        "cookies": [{"name": "sid", "value": "v"}],
        "password": "p",
        "expression": "x" * 5000,
    }
    out = redact.command("Network.setExtraHTTPHeaders", params)
    assert out["headers"] == {"Proxy-Authorization": "[redacted]"}
    assert out["cookies"] == out["password"] == "[redacted]"
    assert len(out["expression"]) < 1100
    assert redact.command("Input.insertText", {"text": "hunter2"})["text"] == (
        "[typed: 7 characters]"
    )
    key = redact.command("Input.dispatchKeyEvent", {"type": "keyDown", "key": "h", "code": "KeyH"})
    assert key["key"] == key["code"] == "[redacted]"
    enter = redact.command("Input.dispatchKeyEvent", {"type": "keyDown", "key": "Enter"})
    assert enter["key"] == "Enter"


def test_metadata_says_incomplete_when_sequence_numbers_are_missing() -> None:
    facts = {"sessionId": "s", "browserId": "b", "startTime": 1000.0}
    end = {"endTime": 5000.0, "reason": "STOPPED", "incompleteReasons": []}
    whole = [BatchInfo(1, 2, first_seq=1, last_seq=2), BatchInfo(2, 3, first_seq=3, last_seq=5)]
    holed = [whole[0], BatchInfo(3, 2, first_seq=7, last_seq=8)]
    inside = [whole[0], BatchInfo(2, 2, first_seq=3, last_seq=9)]
    assert metadata.build(facts, end, whole)["complete"] is True
    meta = metadata.build(facts, end, holed)
    assert meta["complete"] is False and "(3, 6)" in meta["incompleteReasons"][0]
    assert meta["durationMs"] == 4000 and meta["eventCount"] == 4
    assert "(3, 9)" in metadata.build(facts, end, inside)["incompleteReasons"][0]


class _FullDisk:
    """A file whose writes fail with ENOSPC, as on a full spool disk."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def write(self, _data: bytes) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def flush(self) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        self._real.close()

    def fileno(self) -> int:
        return int(self._real.fileno())


def test_a_failed_write_leaves_the_open_batch_whole_at_its_last_flush(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, max_bytes=1 << 20, max_age_s=60)
    first = [(float(i), json.dumps({"seq": i + 1, "n": i})) for i in range(5)]
    assert writer.write(first, 1) == []
    writer._file = _FullDisk(writer._file)  # the disk fills now
    more = [(float(i), json.dumps({"seq": i + 1, "n": i})) for i in range(5, 9)]
    with pytest.raises(WriteFailed) as failed:
        writer.write(more, 6)
    assert failed.value.kept_through == 5
    [kept] = failed.value.closed
    data = (tmp_path / kept.file).read_bytes()
    lines = gzip.decompress(data).decode().splitlines()  # a whole gzip file
    assert [json.loads(line)["n"] for line in lines] == [0, 1, 2, 3, 4]
    side = json.loads(sidecar(tmp_path, kept.n).read_text())
    assert side["sha256"] == hashlib.sha256(data).hexdigest() and side["lastSeq"] == 5
    # The writer carries on with a new batch once the disk has room.
    assert writer.write(more, 6) == [] and writer.info is not None and writer.info.n == 2
    assert writer.close() is not None


def test_a_failed_first_write_of_a_batch_leaves_no_file(tmp_path: Path) -> None:
    writer = BatchWriter(tmp_path, max_bytes=1 << 20, max_age_s=60)
    real_open = writer._open

    def open_on_full_disk() -> BatchInfo:
        info = real_open()
        writer._file = _FullDisk(writer._file)
        return info

    writer._open = open_on_full_disk  # type: ignore[method-assign]
    with pytest.raises(WriteFailed) as failed:
        writer.write([(1.0, '{"seq": 1}')], 1)
    assert failed.value.closed == [] and failed.value.kept_through == 0
    assert list(tmp_path.iterdir()) == []


def test_custom_events_carry_integer_milliseconds_like_rrwebs() -> None:
    _, text = stream.custom("console", {"text": "x"}, 1700000000123.456)
    assert json.loads(text)["timestamp"] == 1700000000123
    assert isinstance(json.loads(text)["timestamp"], int)


def test_the_first_pages_viewport_comes_from_rrwebs_meta_event() -> None:
    events = stream.Stream()
    meta = '{"type":4,"data":{"href":"http://a/","width":1264,"height":681},"timestamp":5}'
    later = '{"type":4,"data":{"href":"http://b/","width":800,"height":600},"timestamp":9}'
    events.add_page_batch(f'5 {{"type":3,"data":{{}},"timestamp":5}}\n5 {meta}\n9 {later}', 1)
    assert events.page_viewport == {"width": 1264, "height": 681}
    broken = stream.Stream()
    broken.add_page_batch('5 {"type":4,"data":{"href":"x"},"timestamp":5}')
    assert broken.page_viewport is None


def _page(kind: int, ts: int, data: str = "{}") -> str:
    return f'{ts} {{"type":{kind},"data":{data},"timestamp":{ts}}}'


def test_one_timeline_wraps_dom_events_of_a_tab_not_on_show() -> None:
    events = stream.Stream()
    events.add_page_batch("\n".join([_page(4, 1), _page(2, 2), _page(3, 3, '{"n":1}')]), 1)
    events.add_page_batch("\n".join([_page(4, 4), _page(2, 5), _page(3, 6, '{"n":2}')]), 2)
    # Tab 1 scrolls while tab 2 is on show; then tab 1 sends a fresh
    # snapshot (it came into use) and its scroll after it is played as is.
    events.add_page_batch("\n".join([_page(3, 7, '{"n":3}'), _page(6, 8)]), 1)
    events.add_page_batch("\n".join([_page(4, 9), _page(2, 10), _page(3, 11, '{"n":4}')]), 1)
    events.add_page_batch(_page(3, 12, '{"n":5}'), 2)
    out = [json.loads(line) for _, line in events.take(final=True)]
    assert [e["seq"] for e in out] == list(range(1, 13))
    wrapped = [e for e in out if e["type"] == 5]
    assert [(e["tab"], e["data"]["tag"], e["data"]["payload"]["data"]) for e in wrapped] == [
        (1, "other-tab", {"n": 3}),
        (2, "other-tab", {"n": 5}),
    ]
    assert wrapped[0]["data"]["payload"] == {"tab": 1, "type": 3, "data": {"n": 3}, "timestamp": 7}
    assert wrapped[0]["timestamp"] == 7
    # What a player of every event at once applies: each incremental event
    # to the page of the tab whose full snapshot came last.
    shown, applied = 0, []
    for e in out:
        if e["type"] == 2:
            shown = e["tab"]
        elif e["type"] == 3:
            applied.append((e["tab"], shown))
    assert applied == [(1, 1), (2, 2), (1, 1)]
    assert events.shown_tab == 1
    # rrweb's plugin events (console) are not DOM events: never wrapped.
    assert [e["type"] for e in out if e["timestamp"] == 8] == [6]


def test_events_without_a_tab_are_never_wrapped() -> None:
    events = stream.Stream()
    events.add_page_batch("\n".join([_page(4, 1), _page(2, 2)]), 1)
    events.add_page_batch(_page(3, 3))
    events.add_custom("console", {"text": "x"}, 4)
    assert [json.loads(line)["type"] for _, line in events.take(final=True)] == [4, 2, 3, 5]
