"""The warm pool: browsers launched before anyone asks, one per future session.

A pooled browser (`PooledBrowser`) is spawned exactly like a session's (its
own directory, process group, profile and HOME, named by the session id it
will carry) and waits until it answers CDP. It is not a session: it has no
record, no token and no timeout, and it is never listed. A Start that it
can serve claims it: `claim` turns it into the `Session` the Start asked
for, the session's CAs are added to the browser's NSS store before any
client reaches it, and the pool launches a replacement. A pooled browser
serves one session and dies with it; it is never handed to a second one.

Pooled browsers count against capacity. Refills run one browser at a time,
only while the registry has room, so a refill never competes with more than
one launch's worth of CPU, and a cold start that needs the room evicts an
idle pooled browser instead of being refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from worker import ids
from worker.browser import launcher
from worker.sessions.host import HostServices
from worker.sessions.model import BROWSER_EXITED, START_FAILED, STOPPED, SessionRecord, Viewport
from worker.sessions.registry import Registry
from worker.sessions.session import Session

log = structlog.get_logger(__name__)

RETRY_AFTER_S = 2.0  # after a pooled browser failed to come up


class PooledBrowser:
    """A launched, answering browser that no session has claimed yet."""

    def __init__(self, session: Session) -> None:
        self._session = session  # unclaimed: persists nothing, counts nothing

    @classmethod
    async def launch(cls, host: HostServices, flavour: str) -> PooledBrowser:
        """Spawn one with the worker's default viewport; returns once it runs."""
        session_id = ids.new_session_id()
        now = time.time()
        config = host.config
        record = SessionRecord(
            session_id=session_id,
            browser_id="",
            name="",
            flavour=flavour,
            timeout_s=0,
            viewport=Viewport(config.default_viewport_width, config.default_viewport_height),
            created_at=now,
            updated_at=now,
            session_dir=str(config.sessions_dir / session_id),
        )
        session = Session(record, "", host, pooled=True)
        try:
            await session.launch()
        except BaseException:
            await session.close(START_FAILED)
            raise
        return cls(session)

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def flavour(self) -> str:
        return self._session.record.flavour

    @property
    def created_at(self) -> float:
        return self._session.record.created_at

    @property
    def process(self) -> launcher.BrowserProcess | None:
        return self._session.process

    @property
    def ready(self) -> asyncio.Future[str] | None:
        return self._session.ready

    @property
    def alive(self) -> bool:
        process = self._session.process
        return process is not None and not process.exited.done()

    def on_end(self, pool: WarmPool) -> None:
        """Tell `pool` when this browser ends, claimed or not."""
        self._session.subscribe(lambda _session: pool.discard(self))

    def claim(self, record: SessionRecord, token: str) -> Session:
        """The session this browser now is. It is not READY until its
        `take_over` has applied what the session brings."""
        self._session.adopt(record, token)
        return self._session

    def close_soon(self, reason: str) -> None:
        self._session.close_soon(reason)

    async def close(self, reason: str) -> None:
        await self._session.close(reason)

    async def wait_closed(self) -> None:
        await self._session.wait_closed()


class WarmPool:
    def __init__(
        self,
        sizes: dict[str, int],
        host: HostServices,
        registry: Registry,
        ready_timeout_s: float,
    ) -> None:
        self.sizes = {flavour: n for flavour, n in sizes.items() if n > 0}
        self._host = host
        self._registry = registry  # read only: whether one more browser fits
        self._ready_timeout_s = ready_timeout_s
        self.idle: dict[str, list[PooledBrowser]] = {flavour: [] for flavour in self.sizes}
        self._starting = 0
        self._evicted: set[PooledBrowser] = set()  # closing to make room
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def count(self) -> int:
        """Browsers the pool holds or is launching (they use capacity)."""
        return sum(len(browsers) for browsers in self.idle.values()) + self._starting

    def start(self) -> None:
        if self.sizes and self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def wake(self) -> None:
        """Look again for a deficit (a browser was taken, or room freed)."""
        self._wake.set()

    def take(self, flavour: str) -> PooledBrowser | None:
        """An idle browser of `flavour` that answers CDP, or None."""
        browsers = self.idle.get(flavour, [])
        while browsers:
            browser = browsers.pop(0)
            if browser.alive:
                self.wake()
                return browser
        return None

    def discard(self, browser: PooledBrowser) -> None:
        """A pooled browser ended (it died, or was evicted): forget it."""
        browsers = self.idle.get(browser.flavour, [])
        if browser in browsers:
            browsers.remove(browser)
        self.wake()

    def evict_one(self) -> bool:
        """Close the oldest idle browser to make room for a cold start."""
        candidates = [b for browsers in self.idle.values() for b in browsers]
        if not candidates:
            return False
        victim = min(candidates, key=lambda b: b.created_at)
        self.discard(victim)
        victim.close_soon(STOPPED)
        self._evicted.add(victim)
        done = asyncio.ensure_future(victim.wait_closed())
        done.add_done_callback(lambda _done: self._evicted.discard(victim))
        return True

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        browsers = [b for group in self.idle.values() for b in group]
        for group in self.idle.values():
            group.clear()
        await asyncio.gather(*(b.close(STOPPED) for b in browsers), return_exceptions=True)
        # Evicted ones close on their own; their directories must still go.
        await asyncio.gather(*(b.wait_closed() for b in list(self._evicted)))

    # -- refilling

    def _deficit(self) -> str | None:
        for flavour, size in self.sizes.items():
            if len(self.idle[flavour]) < size:
                return flavour
        return None

    async def _run(self) -> None:
        while not self._closed:
            flavour = self._deficit()
            if flavour is None or not self._registry.fits(self.count):
                self._wake.clear()
                await self._wake.wait()
                continue
            self._starting = 1  # one launch at a time
            try:
                browser = await self._fill(flavour)
            finally:
                self._starting = 0
            if browser is None:
                await asyncio.sleep(RETRY_AFTER_S)
            elif browser.alive:
                self.idle[flavour].append(browser)

    async def _fill(self, flavour: str) -> PooledBrowser | None:
        try:
            browser = await PooledBrowser.launch(self._host, flavour)
        except Exception as exc:  # cannot spawn: try again later
            log.warning("pool.launch_failed", flavour=flavour, error=str(exc))
            return None
        browser.on_end(self)
        ready = browser.ready
        assert ready is not None
        try:
            await asyncio.wait_for(asyncio.shield(ready), self._ready_timeout_s)
        except asyncio.CancelledError:
            await browser.close(STOPPED)
            raise
        except Exception as exc:
            log.warning("pool.launch_failed", flavour=flavour, error=type(exc).__name__)
            await browser.close(BROWSER_EXITED)
            return None
        log.info("pool.browser_ready", flavour=flavour, session_id=browser.session_id)
        return browser
