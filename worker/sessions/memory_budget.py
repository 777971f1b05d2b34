"""A per-session memory budget held without cgroups.

In a container the cgroupfs is read-only, so the kernel cannot hold one
session to its share, and one runaway page can get the whole pod
OOM-killed with every session in it. This watch does the job from outside
instead: every `session_memory_interval_s` it reads the private memory of
each live session's processes (anonymous and shared-memory pages, what a
page's allocations grow; one /proc scan for all sessions, in a thread, off
the event loop), and a session that stays above `session_memory_mb` for
`session_memory_grace_s` is killed and ends OUT_OF_MEMORY, like a cgroup
OOM kill. PSS would also count the shared code pages, but reading it walks
every mapping, ~2 ms per Chromium process (~20 ms per session) against
~50 us for these counters. It reacts after the fact (a page can
grow by an interval's worth of allocation before it is seen), so the pod's
own limit needs headroom above the sessions' budgets (docs/operations.md).

Each sample's cost is observed in `sandbox_session_memory_sample_seconds`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable

import structlog

from worker.config import Config
from worker.lifetime import Every
from worker.metrics import Metrics
from worker.procfs import private_bytes, process_groups
from worker.sessions.session import Session

log = structlog.get_logger(__name__)


def sample(leaders: Iterable[int]) -> dict[int, int]:
    """Each process group's private memory in bytes. Every process a browser
    starts is in its group (the launcher gives each browser its own)."""
    groups = process_groups(set(leaders))
    return {leader: sum(private_bytes(pid) for pid in pids) for leader, pids in groups.items()}


class MemoryBudget:
    """Ends the sessions whose processes stay above their budget."""

    def __init__(
        self, config: Config, metrics: Metrics, sessions: Callable[[], Iterable[Session]]
    ) -> None:
        self._limit = config.session_memory_mb * 1024 * 1024
        self._interval = config.session_memory_interval_s
        self._grace = config.session_memory_grace_s
        self._metrics = metrics
        self._sessions = sessions  # the live ones, read at each sample
        self._over_since: dict[str, float] = {}
        # A failed sample does not end the watch: the next one runs.
        self._timer = Every(self._interval, self.check, "worker.memory_budget_failed")

    def start(self) -> None:
        self._timer.start()

    async def stop(self) -> None:
        await self._timer.stop()

    async def check(self) -> list[str]:
        """One sample; returns the ids of the sessions it ended."""
        watched = {s.process.pid: s for s in self._sessions() if s.process and s.running}
        began = time.perf_counter()
        used = await asyncio.to_thread(sample, watched)
        self._metrics.memory_sample_seconds.observe(time.perf_counter() - began)
        now, ended = time.monotonic(), []
        for pid, session in watched.items():
            if used.get(pid, 0) <= self._limit:
                self._over_since.pop(session.session_id, None)
                continue
            since = self._over_since.setdefault(session.session_id, now)
            if now - since >= self._grace:
                session.exceeded_memory(used[pid], self._limit)
                ended.append(session.session_id)
        live = {s.session_id for s in watched.values()}
        self._over_since = {k: v for k, v in self._over_since.items() if k in live}
        return ended
