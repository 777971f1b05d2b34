"""The spool: every batch on local disk until its destination confirms it.

    <spool>/<sessionId>/session.json        where it goes, what it is
    <spool>/<sessionId>/batch-<n>.ndjson.gz  a batch (the last may be open)
    <spool>/<sessionId>/batch-<n>.json       sidecar: the batch is closed
    <spool>/<sessionId>/batch-<n>.upload     a multipart upload to abort
    <spool>/<sessionId>/uploaded.jsonl       batches the destination has
    <spool>/<sessionId>/end.json             the session ended (how)

A session folder is removed once its metadata.json is at the destination.
`Meter` keeps the spool's size so a full spool is noticed without a walk.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path
from typing import Any

from recorder.batch import BatchInfo, batch_number, write_json

SESSION, END, UPLOADED = "session.json", "end.json", "uploaded.jsonl"


@dataclasses.dataclass(frozen=True)
class Destination:
    """Where one session's recording goes and who it is written as."""

    storage: str  # "s3" | "local"
    bucket: str
    prefix: str
    role_arn: str = ""

    def key(self, session_id: str, name: str) -> str:
        return "/".join(p for p in (self.prefix, session_id, name) if p)


class Meter:
    """Bytes in the spool, shared by every session; thread-safe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._used = 0
        self._lock = threading.Lock()

    def add(self, delta: int) -> None:
        with self._lock:
            self._used = max(0, self._used + delta)

    @property
    def used(self) -> int:
        return self._used

    @property
    def full(self) -> bool:
        return self._used >= self.limit


def write_session(directory: Path, facts: dict[str, Any]) -> None:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(directory / SESSION, facts)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def destination(facts: dict[str, Any]) -> Destination:
    d = facts["destination"]
    return Destination(d["storage"], d["bucket"], d["prefix"], d.get("roleArn", ""))


def note_uploaded(directory: Path, info: BatchInfo) -> None:
    with open(directory / UPLOADED, "a", encoding="utf-8") as f:
        f.write(json.dumps(info.to_dict(), separators=(",", ":")) + "\n")


def uploaded(directory: Path) -> list[BatchInfo]:
    path = directory / UPLOADED
    if not path.exists():
        return []
    infos = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            info = BatchInfo.from_dict(json.loads(line))
            infos[info.n] = info  # a retried upload may be noted twice
    return [infos[n] for n in sorted(infos)]


def batches_on_disk(directory: Path) -> list[int]:
    return sorted(batch_number(p.name) for p in directory.glob("batch-*.ndjson.gz"))


def size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
