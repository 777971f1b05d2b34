"""How long a worker keeps its ended sessions: `session_retention_s`, after
which they are deleted from its state file, at start (recovery) and every
`session_purge_interval_s` while it runs, so a worker that runs for months
keeps a week of history, not months of it."""

from __future__ import annotations

import time

import structlog

from worker.config import Config
from worker.lifetime import Every
from worker.sessions.store import Store

log = structlog.get_logger(__name__)


class Retention:
    def __init__(self, config: Config, store: Store) -> None:
        self._keep_s = config.session_retention_s
        self._store = store
        self._timer = Every(config.session_purge_interval_s, self._step, "worker.purge_failed")

    def start(self) -> None:
        """Purge now (what a stopped worker kept past its time), then on the timer."""
        self.purge()
        self._timer.start()

    async def stop(self) -> None:
        await self._timer.stop()

    def purge(self) -> int:
        """Delete the sessions that ended more than the retention ago."""
        purged = self._store.purge_terminated(time.time() - self._keep_s)
        if purged:
            log.info("worker.sessions_purged", sessions=purged)
        return purged

    async def _step(self) -> None:
        self.purge()
