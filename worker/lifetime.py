"""A daemon's lifetime, the worker's and the gateway's alike: start it, run
until SIGTERM or SIGINT (which only set an event), then stop it in its own
order, also when starting failed half-way. With the pieces that live as
long: a step repeated on a timer, and the liveness probe's question to the
event loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable
from typing import Protocol

import structlog

log = structlog.get_logger(__name__)


class Daemon(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...


async def run_until_signalled(daemon: Daemon, signalled: str = "") -> None:
    """`signalled`: the event logged when a signal arrives ("": none)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await daemon.start()
        await stop.wait()
        if signalled:
            log.info(signalled, action="draining")
    finally:
        await daemon.stop()


class Every:
    """`step` every `interval_s` from `start()` until `stop()`; a step that
    fails is logged as `failed` and tried again at the next turn."""

    def __init__(
        self, interval_s: float, step: Callable[[], Awaitable[object]], failed: str
    ) -> None:
        self._interval_s = interval_s
        self._step = step
        self._failed = failed
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self._interval_s)
            try:
                await self._step()
            except Exception:
                log.exception(self._failed)


def loop_answers(loop: asyncio.AbstractEventLoop) -> Callable[[], bool]:
    """A liveness check for another thread (the metrics server's): whether
    the event loop runs a step within 5 s, so a wedged daemon fails it."""

    def answers() -> bool:
        try:
            asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)
        except Exception:
            return False
        return True

    return answers
