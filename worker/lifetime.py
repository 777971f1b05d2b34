"""A daemon's lifetime, the worker's and the gateway's alike: start it, run
until SIGTERM or SIGINT (which only set an event), then stop it in its own
order, also when starting failed half-way."""

from __future__ import annotations

import asyncio
import signal
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
