"""Batches on local disk: gzip NDJSON files written as events arrive.

A batch is written to the spool as a gzip stream, and every write ends with
a sync flush, so what is on disk decodes even if the daemon is killed
mid-batch (`salvage` reads such a file back). A closed batch has a sidecar
`batch-<n>.json` with its counts, range and SHA-256; only closed batches are
uploaded whole, while the open one may already be streaming in parts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import time
import zlib
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class BatchInfo:
    n: int
    event_count: int = 0
    bytes: int = 0  # compressed: the object's size
    uncompressed: int = 0
    first_timestamp: float = 0.0
    last_timestamp: float = 0.0
    first_seq: int = 0
    last_seq: int = 0
    sha256: str = ""

    @property
    def file(self) -> str:
        return batch_name(self.n)

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "eventCount": self.event_count,
            "bytes": self.bytes,
            "uncompressedBytes": self.uncompressed,
            "firstTimestamp": self.first_timestamp,
            "lastTimestamp": self.last_timestamp,
            "firstSeq": self.first_seq,
            "lastSeq": self.last_seq,
            "sha256": self.sha256,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchInfo:
        return cls(
            n=batch_number(str(data["file"])),
            event_count=int(data["eventCount"]),
            bytes=int(data["bytes"]),
            uncompressed=int(data.get("uncompressedBytes", 0)),
            first_timestamp=float(data["firstTimestamp"]),
            last_timestamp=float(data["lastTimestamp"]),
            first_seq=int(data["firstSeq"]),
            last_seq=int(data["lastSeq"]),
            sha256=str(data["sha256"]),
        )


def batch_name(n: int) -> str:
    return f"batch-{n}.ndjson.gz"


def batch_number(name: str) -> int:
    return int(name.removeprefix("batch-").split(".", 1)[0])


def sidecar(directory: Path, n: int) -> Path:
    return directory / f"batch-{n}.json"


def write_json(path: Path, data: Any) -> None:
    """Write atomically: a reader (or a restarted daemon) sees old or new."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class WriteFailed(Exception):
    """A write hit a disk error (ENOSPC, EIO). The open batch was cut back to
    its last sync flush, so the spool still holds only decodable batches;
    events after `kept_through` were not written."""

    def __init__(self, closed: list[BatchInfo], kept_through: int, cause: OSError) -> None:
        super().__init__(f"batch write failed: {cause.strerror or cause}")
        self.closed = closed  # batches this write did finish, sidecars and all
        self.kept_through = kept_through  # last seq on disk (0: none of this write's)


@dataclasses.dataclass
class _Flushed:
    """The open batch as of its last sync flush: a state it can go back to."""

    info: BatchInfo
    hash: Any
    crc: int  # of the uncompressed bytes, for the gzip trailer


class BatchWriter:
    """Writes one session's batches; not thread-safe, one caller at a time."""

    def __init__(self, directory: Path, max_bytes: int, max_age_s: float, first: int = 1):
        self._dir = directory
        self._max_bytes = max_bytes
        self._max_age_s = max_age_s
        self._next = first
        self._file: Any = None
        self._zip: Any = None
        self._hash: Any = None
        self._opened_at = 0.0
        self._crc = 0
        self._good: _Flushed | None = None
        self.info: BatchInfo | None = None  # the open batch

    def write(self, events: list[tuple[float, str]], first_seq: int) -> list[BatchInfo]:
        """Append events (timestamp, line) numbered from `first_seq`;
        returns the batches this closed (on size)."""
        closed: list[BatchInfo] = []
        seq = first_seq
        try:
            for timestamp, line in events:
                info = self.info or self._open()
                data = line.encode() + b"\n"
                self._out(self._zip.compress(data))
                self._crc = zlib.crc32(data, self._crc)
                if info.event_count == 0:
                    info.first_timestamp, info.first_seq = timestamp, seq
                info.event_count += 1
                info.uncompressed += len(data)
                info.last_timestamp, info.last_seq = timestamp, seq
                seq += 1
                if info.uncompressed >= self._max_bytes:
                    closed.append(self._close())
            if self.info is not None:
                self._out(self._zip.flush(zlib.Z_SYNC_FLUSH))
                self._file.flush()
                self._good = _Flushed(dataclasses.replace(self.info), self._hash.copy(), self._crc)
        except OSError as exc:
            kept = self._roll_back()
            if kept is not None:
                closed.append(kept)
            raise WriteFailed(closed, max([0, *(c.last_seq for c in closed)]), exc) from exc
        return closed

    def _roll_back(self) -> BatchInfo | None:
        """Cut the open batch back to its last sync flush and finish it
        there (sidecar and all); returns it, or None if nothing was kept."""
        info, good = self.info, self._good
        self.info = self._zip = self._hash = None
        self._good = None
        if self._file is not None:
            with contextlib.suppress(OSError):
                self._file.close()  # may try to write its buffer once more
            self._file = None
        if info is None:
            return None
        path = self._dir / batch_name(info.n)
        if good is None or good.info.n != info.n or good.info.event_count == 0:
            # Nothing of this batch was flushed: as if it never opened.
            with contextlib.suppress(OSError):
                path.unlink()
            self._next = info.n
            return None
        kept = good.info
        try:
            os.truncate(path, kept.bytes)
            # An empty final deflate block and the gzip trailer: what is on
            # disk becomes a whole gzip file of the flushed lines.
            tail = b"\x03\x00" + (good.crc & 0xFFFFFFFF).to_bytes(4, "little")
            tail += (kept.uncompressed & 0xFFFFFFFF).to_bytes(4, "little")
            with open(path, "ab") as f:
                f.write(tail)
                f.flush()
                os.fsync(f.fileno())
            good.hash.update(tail)
            kept.bytes += len(tail)
            kept.sha256 = good.hash.hexdigest()
            write_json(sidecar(self._dir, kept.n), kept.to_dict())
        except OSError:
            return None  # left torn: salvage at the next start keeps what decodes
        return kept

    def close_if_old(self) -> BatchInfo | None:
        if self.info is not None and time.monotonic() - self._opened_at >= self._max_age_s:
            return self._close()
        return None

    def close(self) -> BatchInfo | None:
        return self._close() if self.info is not None else None

    @property
    def open_size(self) -> int:
        """Compressed bytes of the open batch on disk so far."""
        return self.info.bytes if self.info is not None else 0

    def _open(self) -> BatchInfo:
        self.info = BatchInfo(self._next)
        self._next += 1
        self._file = open(self._dir / batch_name(self.info.n), "wb")  # noqa: SIM115 (closed in _close)
        self._zip = zlib.compressobj(6, zlib.DEFLATED, 31)  # 31: gzip framing
        self._hash = hashlib.sha256()
        self._crc = 0
        self._opened_at = time.monotonic()
        return self.info

    def _out(self, data: bytes) -> None:
        if data:
            assert self.info is not None
            self._file.write(data)
            self._hash.update(data)
            self.info.bytes += len(data)

    def _close(self) -> BatchInfo:
        info = self.info
        assert info is not None
        self._out(self._zip.flush(zlib.Z_FINISH))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        info.sha256 = self._hash.hexdigest()
        write_json(sidecar(self._dir, info.n), info.to_dict())
        self.info = self._file = self._zip = self._hash = None
        return info


def salvage(directory: Path, n: int) -> BatchInfo | None:
    """Close a batch a killed daemon left open: keep every complete line
    that decodes, rewrite it as a finished gzip file with its sidecar.
    Returns None (and removes the file) when nothing could be kept."""
    path = directory / batch_name(n)
    raw = path.read_bytes()
    decoder = zlib.decompressobj(31)
    try:
        text = decoder.decompress(raw)
    except zlib.error:
        text = b""
    lines = [line for line in text.split(b"\n")[:-1] if line.startswith(b"{")]
    events: list[tuple[float, str]] = []
    first_seq = 0
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            break
        if not first_seq:
            first_seq = int(event.get("seq", 0))
        events.append((float(event.get("timestamp", 0)), line.decode()))
    path.unlink()
    if not events:
        return None
    writer = BatchWriter(directory, max_bytes=1 << 62, max_age_s=1e9, first=n)
    writer.write(events, first_seq)
    return writer.close()
