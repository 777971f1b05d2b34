"""A worker's place in a fleet: it registers in the shared store and
heartbeats every `heartbeat_interval_s` (its addresses as gateways reach
them, capacity, sessions in use and starting, idle warm browsers per
flavour, draining, version), and copies its session records there, so any
gateway can answer Get and List.

Records flow one way: the worker's own state file is the source (it keeps
what recovery needs), and this loop copies every record changed since the
last copy. A store that is down costs nothing but the copy: sessions keep
running, the loop retries with backoff and catches up when it returns.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import structlog

from worker.errors import Unavailable
from worker.sessions.manager import SessionManager
from worker.sessions.model import WORKER_LOST
from worker.sessions.postgres_store import PostgresStore

log = structlog.get_logger(__name__)

MAX_BACKOFF_S = 5.0


class FleetMember:
    def __init__(
        self,
        store: PostgresStore,
        manager: SessionManager,
        worker_id: str,
        addresses: dict[str, str],
        version: str,
    ) -> None:
        self._store = store
        self._manager = manager
        self.worker_id = worker_id
        self._addresses = addresses
        self._version = version
        self._interval_s = manager.config.heartbeat_interval_s
        self._since = 0.0  # records changed at or after this were not yet copied
        self._task: asyncio.Task[None] | None = None
        self._stopped = asyncio.Event()

    async def start(self) -> None:
        """Join at once (a failure here is the caller's: the worker does
        not start without its fleet), then beat in the background."""
        await self.beat()
        self._task = asyncio.ensure_future(self._run())
        log.info("fleet.joined", worker_id=self.worker_id, store=self._store.where)

    async def stop(self) -> None:
        """A last copy and beat (draining), then stop beating."""
        self._stopped.set()
        if self._task is not None:
            await self._task
        with contextlib.suppress(Unavailable):
            await self.beat()

    async def beat(self) -> None:
        await self.copy_records()
        await self._store.heartbeat(self.worker_id, self.status())
        await self._reconcile()

    async def _reconcile(self) -> None:
        """Sessions the fleet ended WORKER_LOST while this worker was out of
        touch (a partition, a pause): their clients were told they are gone,
        so they end here too."""
        live = list(self._manager.live)
        if not live:
            return
        for session_id in await self._store.lost_sessions(self.worker_id, live):
            session = self._manager.live.get(session_id)
            if session is not None:
                log.warning("fleet.session_lost", session_id=session_id)
                session.close_soon(WORKER_LOST)

    def status(self) -> dict[str, Any]:
        return {
            **self._addresses,
            **self._manager.room(),
            "version": self._version,
            "stopped": self._stopped.is_set(),
        }

    async def copy_records(self) -> None:
        # Read and note the time with no await between: any later change
        # has a later updated_at. A second's overlap is copied twice (an
        # idempotent upsert) rather than lost to a clock step.
        started = time.time()
        changed = self._manager.store.sessions_changed_since(self._since)
        if changed:
            await self._store.put_sessions(self.worker_id, changed)
        self._since = started - 1.0

    async def _run(self) -> None:
        backoff = self._interval_s
        down_since = 0.0
        while not self._stopped.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopped.wait(), backoff)
            if self._stopped.is_set():
                return
            try:
                await self.beat()
            except Unavailable as exc:
                if not down_since:
                    down_since = time.monotonic()
                    log.warning("fleet.store_unavailable", reason=exc.reason)
                # Back soon after the store is: gateways give a worker only
                # worker_lost_after_s from then.
                backoff = min(backoff * 2, MAX_BACKOFF_S, 4 * self._interval_s)
                continue
            except Exception:  # the beat must outlive any one failure
                log.exception("fleet.heartbeat_failed")
                continue
            if down_since:
                log.info("fleet.store_back", after_s=round(time.monotonic() - down_since, 1))
                down_since = 0.0
            backoff = self._interval_s
