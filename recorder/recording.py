"""One session's recording: capture -> ordered stream -> spool -> uploader.

Every `drain_s` the events whose reorder window has passed are written to
the open batch on disk (in a thread: JSON joins and gzip), batches close on
size or age, and the uploader hears about closed batches and about open
ones big enough to stream. At the end the pages are asked for what they
hold, everything left is written, and `end.json` says how the session ended
and whether anything is known to be missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
from pathlib import Path
from typing import Any

import structlog

from recorder import metadata, script
from recorder.batch import BatchInfo, BatchWriter, WriteFailed, write_json
from recorder.capture import CDP, Capture
from recorder.spool import END, Destination, write_session
from recorder.stream import Stream, now_ms
from recorder.uploader import Uploader

log = structlog.get_logger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchLimits:
    batch_bytes: int = 8 * 1024 * 1024  # uncompressed
    batch_age_s: float = 10.0
    drain_s: float = 0.25
    reorder_ms: float = 300.0
    memory_bytes: int = 32 * 1024 * 1024  # events waiting in memory, per session
    page_flush_ms: int = 100


class Recording:
    def __init__(
        self,
        session_id: str,
        facts: dict[str, Any],
        destination: Destination,
        uploader: Uploader,
        limits: BatchLimits,
    ) -> None:
        self.session_id = session_id
        self._trace = metadata.trace_fields(facts)  # on its log lines too
        self.directory = uploader.root / session_id
        self.destination = destination
        self._uploader = uploader
        self._limits = limits
        self.stream = Stream(limits.reorder_ms, limits.memory_bytes)
        self._writer = BatchWriter(self.directory, limits.batch_bytes, limits.batch_age_s)
        self._binding = "__rec_" + secrets.token_hex(8)
        self.capture: Capture | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        self.spool_dropped = 0  # events dropped because the spool was full
        self.disk_dropped = 0  # events dropped because its disk was full or failed
        self._said: set[str] = set()
        self.events_written = 0
        self._ended = False
        write_session(
            self.directory,
            {
                **facts,
                "sessionId": session_id,
                "startTime": now_ms(),
                "destination": {
                    "storage": destination.storage,
                    "bucket": destination.bucket,
                    "prefix": destination.prefix,
                    "roleArn": destination.role_arn,
                },
            },
        )

    def attach(self, conn: CDP) -> None:
        """Start capturing on a browser connection; call before any client
        can open a page, so every page is attached and injected."""
        source = script.source(self._binding, self._limits.page_flush_ms)
        self.capture = Capture(conn, self.stream, self._binding, source)
        self.capture.start()
        self._loop_task = asyncio.ensure_future(self._drain_loop())

    def client_command(
        self,
        client: int,
        method: str,
        params: dict[str, Any],
        reply: dict[str, Any],
        took_ms: float,
    ) -> None:
        if self.capture is not None:
            self.capture.client_command(client, method, params, reply, took_ms)

    def focus(self, target_id: str) -> None:
        """A client acts on this page: it is the tab in use from now on."""
        if self.capture is not None:
            self.capture.focus(target_id)

    async def _drain_loop(self) -> None:
        while True:
            await asyncio.sleep(self._limits.drain_s)
            try:
                await self._drain(final=False)
            except Exception as exc:  # a full disk: keep the session running
                log.error("recording.write_failed", session_id=self.session_id, error=repr(exc))

    async def _drain(self, final: bool) -> None:
        async with self._lock:
            events = self.stream.take(final)
            first_seq = self.stream.seq - len(events) + 1
            if events and self._uploader.meter.full:
                # The metered policy: a full spool drops new events (their
                # sequence numbers stay unused, so readers see the hole) and
                # the session keeps running.
                self.spool_dropped += len(events)
                self._say_dropping("spool_full")
                events = []
            elif events and _disk_short(self.directory, events):
                # The same policy when the disk itself runs out before the
                # metered limit (a spool volume smaller than the setting,
                # or shared): drop, count, mark; never fail the session.
                self.disk_dropped += len(events)
                self._say_dropping("disk_full")
                events = []
            closed: list[BatchInfo] = []
            if events:
                before = self._writer.open_size
                try:
                    closed = await asyncio.to_thread(self._writer.write, events, first_seq)
                    self.events_written += len(events)
                except WriteFailed as failed:
                    # What reached the disk is whole; the rest is dropped.
                    closed = failed.closed
                    kept = max(0, failed.kept_through - first_seq + 1)
                    self.events_written += kept
                    self.disk_dropped += len(events) - kept
                    log.error(
                        "recording.write_failed", session_id=self.session_id, error=str(failed)
                    )
                grown = sum(i.bytes for i in closed) + self._writer.open_size - before
                self._uploader.meter.add(grown)
            aged = self._writer.close_if_old() if not final else None
            if aged is not None:
                closed.append(aged)
            for info in closed:
                self._uploader.closed(self.directory, info)
            open_batch = self._writer.info
            if open_batch is not None:
                self._uploader.grew(self.directory, open_batch.n, self._writer.open_size)

    def _say_dropping(self, why: str) -> None:
        if why not in self._said:  # once per recording: a full disk stays full
            self._said.add(why)
            log.warning("recording.dropping_events", session_id=self.session_id, reason=why)

    async def end(self, reason: str, incomplete: list[str], browser_alive: bool) -> None:
        """Finish: take what pages hold, write the rest, hand over to the
        uploader. Idempotent."""
        if self._ended:
            return
        self._ended = True
        capture = self.capture
        if capture is not None and browser_alive:
            with contextlib.suppress(Exception):
                await capture.flush_pages(1.0)
        if self._loop_task is not None:
            # Under the lock: a drain in progress has its write running in a
            # thread, which a cancel would not stop; two writers would then
            # interleave in one gzip stream.
            async with self._lock:
                self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._loop_task
        if capture is not None:
            capture.stop()
        await self._drain(final=True)
        async with self._lock:
            last = await asyncio.to_thread(self._writer.close)
        if last is not None:
            self._uploader.closed(self.directory, last)
        reasons = list(incomplete)
        if self.stream.dropped:
            reasons.append(f"{self.stream.dropped} events dropped: the in-memory bound was reached")
        if self.spool_dropped:
            reasons.append(f"{self.spool_dropped} events dropped: the spool was full")
        if self.disk_dropped:
            reasons.append(f"{self.disk_dropped} events dropped: the spool's disk was full")
        end = {
            "endTime": now_ms(),
            "reason": reason,
            "complete": not reasons,
            "incompleteReasons": reasons,
            "droppedEvents": self.stream.dropped + self.spool_dropped + self.disk_dropped,
            "pageViewport": self.stream.page_viewport,
        }
        await asyncio.to_thread(write_json, self.directory / END, end)
        self._uploader.ended(self.directory)
        log.info(
            "recording.ended",
            session_id=self.session_id,
            **self._trace,
            events=self.stream.seq,
            page_events=capture.page_events if capture else 0,
            complete=not reasons,
        )


# Room kept free on the spool's disk beyond a write's own size: sidecars,
# gzip trailers and the metadata file must still fit after a drop.
DISK_RESERVE = 1024 * 1024


def _disk_short(directory: Path, events: list[tuple[float, str]]) -> bool:
    try:
        st = os.statvfs(directory)
    except OSError:
        return False  # the write itself will say what is wrong
    need = DISK_RESERVE + sum(len(line) + 1 for _, line in events)  # compressed is less
    return st.f_bavail * st.f_frsize < need
