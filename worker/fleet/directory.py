"""A gateway's view of the workers: what each last said in the store,
refreshed in the background, plus the Starts this gateway has in flight to
each (placement counts them as taken room). A worker silent past
`worker_lost_after_s` is out of placement, and its sessions end WORKER_LOST
(the store lets exactly one gateway do that, and log it). The gateway
calls `refresh` on a timer; it returns the workers newly found lost, whose
relayed clients the gateway then closes (and counts)."""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Iterator

import structlog

from worker.errors import Unavailable
from worker.fleet.placement import WorkerView, candidates, fleet_capacity, full_by_report
from worker.sessions.postgres_store import PostgresStore

log = structlog.get_logger(__name__)

REFRESH_S = 0.5  # well inside a worker's 2 s heartbeat


@dataclasses.dataclass(frozen=True)
class Lost:
    """A worker this gateway found silent."""

    worker_id: str
    sessions: int  # that this gateway ended WORKER_LOST (0: another gateway did)


class Directory:
    def __init__(self, store: PostgresStore, lost_after_s: float) -> None:
        self._store = store
        self.lost_after_s = lost_after_s
        self.workers: dict[str, WorkerView] = {}
        self.pending: dict[str, int] = {}
        self.placed: dict[str, int] = {}  # worker -> number of its latest placement
        self._placements = 0
        self.reachable = False  # the store answered the last refresh
        # Since when this gateway has seen the store without a break: a
        # worker is judged silent only over that span, so a store outage
        # (workers cannot heartbeat through it) never loses the fleet.
        self._reachable_since = time.monotonic()
        self._lost: set[str] = set()  # silent workers this gateway has seen

    def candidates(self, flavour: str) -> list[WorkerView]:
        """Workers to try, best first; all fresh ones when none reports room."""
        workers = list(self.workers.values())
        return candidates(
            workers, flavour, self.lost_after_s, self.pending, self.placed
        ) or full_by_report(workers, self.lost_after_s)

    def capacity(self) -> tuple[int, int]:
        return fleet_capacity(list(self.workers.values()), self.lost_after_s)

    def fresh(self) -> list[WorkerView]:
        return [w for w in self.workers.values() if w.fresh(self.lost_after_s)]

    @contextlib.contextmanager
    def starting(self, worker_id: str) -> Iterator[None]:
        """Count a Start in flight to a worker while it runs."""
        self.pending[worker_id] = self.pending.get(worker_id, 0) + 1
        self._placements += 1
        self.placed[worker_id] = self._placements
        try:
            yield
        finally:
            self.pending[worker_id] -= 1

    async def refresh(self) -> list[Lost]:
        """Read the workers again; returns those newly found silent."""
        try:
            rows = await self._store.workers()
        except Unavailable:
            self.reachable = False
            raise
        if not self.reachable:
            self.reachable, self._reachable_since = True, time.monotonic()
        self.workers = {wid: WorkerView.from_heartbeat(wid, body, age) for wid, body, age in rows}
        self._forget_unlisted()
        watched = time.monotonic() - self._reachable_since
        newly = []
        for view in self.workers.values():
            if view.stopped or min(view.age_s, watched) < self.lost_after_s:
                self._lost.discard(view.worker_id)  # back (or gone on purpose)
            elif view.worker_id not in self._lost:
                self._lost.add(view.worker_id)
                newly.append(Lost(view.worker_id, await self._lose(view)))
        return newly

    def _forget_unlisted(self) -> None:
        """Drop what this gateway kept about workers the store no longer
        lists (a worker has a new id at every start: kept, these would
        grow with every restart in the fleet)."""
        listed = self.workers.keys()
        self._lost = {w for w in self._lost if w in listed}
        self.placed = {w: n for w, n in self.placed.items() if w in listed}
        self.pending = {w: n for w, n in self.pending.items() if n or w in listed}

    async def _lose(self, view: WorkerView) -> int:
        ended = await self._store.mark_lost(view.worker_id, time.time())
        if ended:
            log.warning(
                "fleet.worker_lost",
                worker_id=view.worker_id,
                silent_s=round(view.age_s, 1),
                sessions=len(ended),
            )
        return len(ended)
