"""How long a worker keeps its ended sessions: `session_retention_s`, after
which they are deleted from its state file, at start (recovery) and every
`session_purge_interval_s` while it runs, so a worker that runs for months
keeps a week of history, not months of it."""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from worker.config import Config
from worker.sessions.store import Store

log = structlog.get_logger(__name__)


class Retention:
    def __init__(self, config: Config, store: Store) -> None:
        self._keep_s = config.session_retention_s
        self._every_s = config.session_purge_interval_s
        self._store = store
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def purge(self) -> int:
        """Delete the sessions that ended more than the retention ago."""
        purged = self._store.purge_terminated(time.time() - self._keep_s)
        if purged:
            log.info("worker.sessions_purged", sessions=purged)
        return purged

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._every_s)
            try:
                self.purge()
            except Exception:  # a failed purge is tried again next time
                log.exception("worker.purge_failed")
