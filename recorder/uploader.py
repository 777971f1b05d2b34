"""Moves spooled batches to their destination, and finishes sessions.

One uploader per worker. A closed batch is uploaded from the spool and
deleted only after the destination confirmed it; an open batch larger than
a part streams to S3 as a multipart upload while it fills, one part at a
time read back from disk, so memory holds at most one part per batch. If
streaming fails, its upload is aborted and the closed file is uploaded
again whole. Every call retries with exponential backoff and jitter until
it succeeds or the worker stops; what is left stays in the spool and the
next start (`recover`) carries on, aborting multipart uploads a killed
daemon left behind, so none are left to accrue cost.

Once a session ended and all its batches are up, its metadata.json is
written and its spool folder removed. boto3 runs in threads, never on the
event loop, with a cap on concurrent calls.

Why one module of about 430 lines: single uploads, multipart streaming,
retries and recovery share one piece of state (what is in flight for each
batch, written down before each S3 call so a restart can finish or abort
it); spread over files, that invariant would be too.
"""

from __future__ import annotations

import asyncio
import contextvars
import dataclasses
import json
import random
import shutil
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import structlog

from recorder import metadata
from recorder.batch import BatchInfo, batch_name, salvage, sidecar, write_json
from recorder.sink import Sink
from recorder.spool import (
    END,
    SESSION,
    Destination,
    Meter,
    batches_on_disk,
    destination,
    note_uploaded,
    read_json,
    size,
    uploaded,
)

log = structlog.get_logger(__name__)
T = TypeVar("T")


def _nothing(*_args: Any) -> None:
    pass


@dataclasses.dataclass
class Hooks:
    """What the worker counts (its metrics); the recorder knows no registry."""

    uploaded: Callable[[int], None] = _nothing  # bytes a destination confirmed
    retried: Callable[[str], None] = _nothing  # operation name
    finished: Callable[[bool], None] = _nothing  # metadata written; complete?


@dataclasses.dataclass
class _Stream:
    """An open batch streaming to S3 in parts."""

    key: str
    sink: Sink
    upload_id: str = ""
    parts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    offset: int = 0
    failed: bool = False
    lock: asyncio.Lock = dataclasses.field(default_factory=asyncio.Lock)


class Uploader:
    def __init__(
        self,
        root: Path,
        sinks: Callable[[Destination], Sink],
        meter: Meter,
        part_bytes: int = 8 * 1024 * 1024,
        concurrency: int = 4,
        retry_max_s: float = 30.0,
        hooks: Hooks | None = None,
    ) -> None:
        self.root = root
        self._sinks = sinks
        self.meter = meter
        self.part_bytes = part_bytes
        self._sem = asyncio.Semaphore(concurrency)
        self._retry_max_s = retry_max_s
        self.hooks = hooks or Hooks()
        self._streams: dict[tuple[str, int], _Stream] = {}
        self._destinations: dict[str, Destination] = {}
        self._busy: dict[str, int] = {}  # session -> batches being uploaded
        self._finishing: set[str] = set()
        self._jobs: set[asyncio.Task[None]] = set()
        self._stopping = False

    # -- what recordings report (event loop thread)

    def grew(self, directory: Path, n: int, open_size: int) -> None:
        """The open batch n has `open_size` compressed bytes on disk."""
        sink = self._sink(directory)
        if not sink.multipart:
            return
        stream = self._streams.get((directory.name, n))
        if stream is None:
            if open_size < self.part_bytes:
                return
            stream = _Stream(self._key(directory, batch_name(n)), sink)
            self._streams[(directory.name, n)] = stream
        if not stream.failed and open_size - stream.offset >= self.part_bytes:
            self._spawn(self._stream_parts(directory, n, stream, open_size))

    def closed(self, directory: Path, info: BatchInfo) -> None:
        self._busy[directory.name] = self._busy.get(directory.name, 0) + 1
        self._spawn(self._upload(directory, info))

    def ended(self, directory: Path) -> None:
        self._maybe_finish(directory)

    @property
    def pending(self) -> int:
        return sum(self._busy.values()) + len(self._finishing)

    # -- start and stop

    async def recover(self, orphan_reason: str) -> int:
        """Carry on with what an earlier daemon left in the spool; sessions
        it was still recording end with `orphan_reason`, incomplete."""
        if not self.root.exists():
            return 0
        found = 0
        for directory in sorted(p for p in self.root.iterdir() if p.is_dir()):
            if not (directory / SESSION).exists():
                shutil.rmtree(directory, ignore_errors=True)  # never got going
                continue
            found += 1
            self.meter.add(await asyncio.to_thread(size, directory))
            for pending in directory.glob("*.upload"):
                self._spawn(self._abort_left(directory, pending))
            if not (directory / END).exists():
                await asyncio.to_thread(_end_orphan, directory, orphan_reason)
            for n in batches_on_disk(directory):
                info = BatchInfo.from_dict(read_json(sidecar(directory, n)))
                self.closed(directory, info)
            self._maybe_finish(directory)
        return found

    async def flush(self, timeout: float) -> bool:
        """Wait until nothing is queued; False if `timeout` came first."""
        deadline = time.monotonic() + timeout
        while self._jobs:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            await asyncio.wait(set(self._jobs), timeout=left)
        return True

    async def stop(self, timeout: float) -> bool:
        """Flush for up to `timeout`, then give up: the spool keeps the rest."""
        flushed = await self.flush(timeout)
        self._stopping = True
        for job in list(self._jobs):
            job.cancel()
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=5)
        return flushed

    # -- jobs

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        # A fresh context: jobs outlive the RPC or session that started them,
        # and must not log under its name.
        task = asyncio.get_running_loop().create_task(work, context=contextvars.Context())
        self._jobs.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._jobs.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("recording.upload_job_failed", error=repr(error))

    async def _stream_parts(self, directory: Path, n: int, stream: _Stream, size: int) -> None:
        async with stream.lock:
            path = directory / batch_name(n)
            try:
                while not stream.failed and size - stream.offset >= self.part_bytes:
                    await self._send_part(stream, path, stream.offset + self.part_bytes)
            except Exception as exc:
                # The closed file will be uploaded whole instead.
                stream.failed = True
                log.warning("recording.stream_failed", batch=path.name, error=_why(exc))

    async def _send_part(self, stream: _Stream, path: Path, until: int) -> None:
        if not stream.upload_id:
            # The intent first: a daemon killed while S3 creates the upload
            # leaves a record without an id, and the next start aborts every
            # upload S3 holds for this key (no other writer uses it).
            _remember_upload(path, stream.key, "")
            stream.upload_id = await self._call(
                stream.sink.create_multipart, stream.key, attempts=3
            )
            _remember_upload(path, stream.key, stream.upload_id)
        data = await asyncio.to_thread(_read, path, stream.offset, until)
        number = len(stream.parts) + 1
        part = await self._call(
            stream.sink.upload_part, stream.key, stream.upload_id, number, data, attempts=3
        )
        stream.parts.append(part)
        stream.offset = until

    async def _upload(self, directory: Path, info: BatchInfo) -> None:
        try:
            stream = self._streams.pop((directory.name, info.n), None)
            if not (stream and await self._finish_stream(directory, info, stream)):
                await self._upload_whole(directory, info)
            await asyncio.to_thread(note_uploaded, directory, info)
            freed = await asyncio.to_thread(_remove_batch, directory, info.n)
            self.meter.add(-freed)
            self.hooks.uploaded(info.bytes)
        finally:
            self._busy[directory.name] -= 1
            if not self._busy[directory.name]:
                del self._busy[directory.name]
        self._maybe_finish(directory)

    async def _finish_stream(self, directory: Path, info: BatchInfo, stream: _Stream) -> bool:
        async with stream.lock:
            if stream.failed or not stream.upload_id:
                await self._abort(stream.key, stream.upload_id, directory / info.file)
                return False
            path = directory / info.file
            try:
                if info.bytes > stream.offset:
                    await self._send_part(stream, path, info.bytes)
                await self._call(
                    stream.sink.complete_multipart,
                    stream.key,
                    stream.upload_id,
                    stream.parts,
                    attempts=3,
                )
            except Exception as exc:
                log.warning("recording.stream_failed", batch=info.file, error=_why(exc))
                await self._abort(stream.key, stream.upload_id, path)
                return False
            _forget_upload(path)
            return True

    async def _upload_whole(self, directory: Path, info: BatchInfo) -> None:
        sink = self._sink(directory)
        key = self._key(directory, info.file)
        path = directory / info.file
        if not sink.multipart or info.bytes <= self.part_bytes:
            await self._call(sink.put_file, key, path, info.sha256)
            return
        delay = 0.5
        while True:
            stream = _Stream(key, sink)
            try:
                while stream.offset < info.bytes:
                    await self._send_part(
                        stream, path, min(info.bytes, stream.offset + self.part_bytes)
                    )
                await self._call(
                    sink.complete_multipart, key, stream.upload_id, stream.parts, attempts=3
                )
                _forget_upload(path)
                return
            except Exception as exc:
                if self._stopping:
                    raise
                log.warning("recording.upload_retry", batch=info.file, error=_why(exc))
                await self._abort(key, stream.upload_id, path)
                self.hooks.retried("multipart")
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self._retry_max_s)

    async def _abort(self, key: str, upload_id: str, path: Path) -> None:
        if not upload_id:
            return
        sink = self._sink(path.parent)
        try:
            await self._call(sink.abort_multipart, key, upload_id, attempts=5)
            _forget_upload(path)
        except Exception as exc:
            # The .upload file stays: the next start aborts it.
            log.warning("recording.abort_failed", key=key, error=_why(exc))

    async def _abort_left(self, directory: Path, pending: Path) -> None:
        left = read_json(pending)
        path = directory / left["file"]
        if left["uploadId"]:
            await self._abort(left["key"], left["uploadId"], path)
            return
        try:
            await self._call(self._sink(directory).abort_all, left["key"], attempts=5)
            _forget_upload(path)
        except Exception as exc:  # the record stays for the next start
            log.warning("recording.abort_failed", key=left["key"], error=_why(exc))

    # -- finishing a session

    def _maybe_finish(self, directory: Path) -> None:
        name = directory.name
        if name in self._finishing or self._busy.get(name) or not (directory / END).exists():
            return
        if batches_on_disk(directory):
            return  # closed batches not handed over yet
        self._finishing.add(name)
        self._spawn(self._finish(directory))

    async def _finish(self, directory: Path) -> None:
        try:
            facts = read_json(directory / SESSION)
            end = read_json(directory / END)
            batches = await asyncio.to_thread(uploaded, directory)
            document = metadata.build(facts, end, batches)
            body = json.dumps(document, indent=1).encode()
            sink = self._sink(directory)
            key = self._key(directory, "metadata.json")
            await self._call(sink.put_bytes, key, body, "application/json")
            freed = await asyncio.to_thread(size, directory)
            await asyncio.to_thread(shutil.rmtree, directory, True)
            self._destinations.pop(directory.name, None)
            self.meter.add(-freed)
            self.hooks.finished(bool(document["complete"]))
            log.info(
                "recording.finished",
                session_id=directory.name,
                **metadata.trace_fields(facts),
                events=document["eventCount"],
                batches=len(batches),
                complete=document["complete"],
            )
        finally:
            self._finishing.discard(directory.name)

    # -- helpers

    def _destination(self, directory: Path) -> Destination:
        # Read once per session: it is asked for on every write and upload.
        found = self._destinations.get(directory.name)
        if found is None:
            found = destination(read_json(directory / SESSION))
            self._destinations[directory.name] = found
        return found

    def _sink(self, directory: Path) -> Sink:
        return self._sinks(self._destination(directory))

    def _key(self, directory: Path, name: str) -> str:
        return self._destination(directory).key(directory.name, name)

    async def _call(self, fn: Callable[..., T], *args: Any, attempts: int = 0) -> T:
        """Run a blocking call in a thread; retry with backoff and jitter
        (forever when `attempts` is 0, until the uploader stops)."""
        delay, attempt = 0.5, 0
        while True:
            attempt += 1
            try:
                async with self._sem:
                    return await asyncio.to_thread(fn, *args)
            except Exception as exc:
                if self._stopping or (attempts and attempt >= attempts):
                    raise
                self.hooks.retried(getattr(fn, "__name__", "call"))
                log.info("recording.retry", call=getattr(fn, "__name__", ""), error=_why(exc))
                await asyncio.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, self._retry_max_s)


def _why(exc: BaseException) -> str:
    # botocore's messages name the operation and the error code, never
    # credentials; keep them short for the log.
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _read(path: Path, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def _remember_upload(path: Path, key: str, upload_id: str) -> None:
    record = {"key": key, "uploadId": upload_id, "file": path.name}
    write_json(path.with_name(path.name.split(".", 1)[0] + ".upload"), record)


def _forget_upload(path: Path) -> None:
    path.with_name(path.name.split(".", 1)[0] + ".upload").unlink(missing_ok=True)


def _remove_batch(directory: Path, n: int) -> int:
    freed = 0
    for path in (directory / batch_name(n), sidecar(directory, n)):
        try:
            freed += path.stat().st_size
            path.unlink()
        except FileNotFoundError:
            pass
    return freed


def _end_orphan(directory: Path, reason: str) -> None:
    """End a session whose daemon died while it recorded: close its open
    batch with what decodes, and say the tail may be lost."""
    last = 0.0
    for n in batches_on_disk(directory):
        info = None
        if sidecar(directory, n).exists():
            info = BatchInfo.from_dict(read_json(sidecar(directory, n)))
        else:
            info = salvage(directory, n)
        if info is not None:
            last = max(last, info.last_timestamp)
    for info in uploaded(directory):
        last = max(last, info.last_timestamp)
    facts = read_json(directory / SESSION)
    end = {
        "endTime": last or float(facts["startTime"]),
        "reason": reason,
        "complete": False,
        "incompleteReasons": [
            "the worker stopped while the session was recording: "
            "events not yet written to the spool are lost"
        ],
    }
    write_json(directory / END, end)
