"""The warm pool: browsers launched before anyone asks, one per future session.

A pooled browser is spawned exactly like a session's (its own directory,
process group, profile and HOME, named by the session id it will carry) and
waits until it answers CDP. A Start that it can serve claims it: the session
gets that browser, its CAs are added to the browser's NSS store before any
client reaches it, and the pool launches a replacement. A pooled browser
serves one session and dies with it; it is never handed to a second one.

Pooled browsers count against capacity. Refills run one browser at a time,
only while there is room, so a refill never competes with more than one
launch's worth of CPU, and a cold start that needs the room evicts an idle
pooled browser instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from worker.sessions.model import BROWSER_EXITED, STOPPED
from worker.sessions.session import Session

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 2.0  # after a pooled browser failed to come up


class WarmPool:
    def __init__(
        self,
        sizes: dict[str, int],
        launch: Callable[[str], Awaitable[Session]],
        room: Callable[[], bool],
        ready_timeout_s: float,
    ) -> None:
        self.sizes = {flavour: n for flavour, n in sizes.items() if n > 0}
        self._launch = launch  # spawns a pooled browser of a flavour
        self._room = room  # whether capacity allows one more browser
        self._ready_timeout_s = ready_timeout_s
        self.idle: dict[str, list[Session]] = {flavour: [] for flavour in self.sizes}
        self._starting = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def count(self) -> int:
        """Browsers the pool holds or is launching (they use capacity)."""
        return sum(len(sessions) for sessions in self.idle.values()) + self._starting

    def start(self) -> None:
        if self.sizes and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Look again for a deficit (a browser was taken, or room freed)."""
        self._wake.set()

    def take(self, flavour: str) -> Session | None:
        """An idle browser of `flavour` that answers CDP, or None."""
        sessions = self.idle.get(flavour, [])
        while sessions:
            session = sessions.pop(0)
            process = session.process
            if process is not None and not process.exited.done():
                self.wake()
                return session
        return None

    def discard(self, session: Session) -> None:
        """A pooled browser ended (it died, or was evicted): forget it."""
        sessions = self.idle.get(session.record.flavour, [])
        if session in sessions:
            sessions.remove(session)
        self.wake()

    def evict_one(self) -> bool:
        """Close the oldest idle browser to make room for a cold start."""
        candidates = [s for sessions in self.idle.values() for s in sessions]
        if not candidates:
            return False
        victim = min(candidates, key=lambda s: s.record.created_at)
        self.discard(victim)
        victim.close_soon(STOPPED)
        return True

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        sessions = [s for group in self.idle.values() for s in group]
        for group in self.idle.values():
            group.clear()
        await asyncio.gather(*(s.close(STOPPED) for s in sessions), return_exceptions=True)

    # -- refilling

    def _deficit(self) -> str | None:
        for flavour, size in self.sizes.items():
            if len(self.idle[flavour]) < size:
                return flavour
        return None

    async def _run(self) -> None:
        while not self._closed:
            flavour = self._deficit()
            if flavour is None or not self._room():
                self._wake.clear()
                await self._wake.wait()
                continue
            self._starting = 1  # one launch at a time
            try:
                session = await self._fill(flavour)
            finally:
                self._starting = 0
            if session is None:
                await asyncio.sleep(RETRY_AFTER_S)
            elif session.process is not None and not session.process.exited.done():
                self.idle[flavour].append(session)

    async def _fill(self, flavour: str) -> Session | None:
        try:
            session = await self._launch(flavour)
        except Exception as exc:  # cannot spawn: try again later
            log.warning("pool.launch_failed", flavour=flavour, error=str(exc))
            return None
        ready = session.ready
        assert ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(ready), self._ready_timeout_s)
        except asyncio.CancelledError:
            await session.close(STOPPED)
            raise
        except Exception as exc:
            log.warning("pool.launch_failed", flavour=flavour, error=type(exc).__name__)
            await session.close(BROWSER_EXITED)
            return None
        log.info("pool.browser_ready", flavour=flavour, session_id=session.session_id)
        return session
