"""The live sessions of this worker, by id, and the room beside them.

The manager adds a session when its start begins and removes it the moment
its end begins, so capacity counts starting sessions and frees a slot at
once. A removed session stays known as closing until its clean-up (the
sweep of its processes and directories) is over, so that shutdown can wait
for it: a daemon that exits mid-sweep would leave the directories behind.

The warm pool reads it to know whether one more browser fits: pooled
browsers use capacity too, until a session claims one or a cold start needs
the room.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from worker.sessions.session import Session


class Registry:
    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.live: dict[str, Session] = {}
        self.closing: set[Session] = set()  # ended, still cleaning up
        self.idle = asyncio.Event()  # set while no session is live (drain waits on it)
        self.idle.set()

    def __len__(self) -> int:
        return len(self.live)

    def add(self, session: Session) -> None:
        self.live[session.session_id] = session
        self.idle.clear()

    def remove(self, session: Session) -> None:
        self.live.pop(session.session_id, None)
        if not self.live:
            self.idle.set()
        self.closing.add(session)
        done = asyncio.ensure_future(session.wait_closed())
        done.add_done_callback(lambda _done: self.closing.discard(session))

    async def wait_closed(self, timeout: float) -> None:
        """Wait (bounded) for every ended session's clean-up to finish."""
        waits = [asyncio.ensure_future(s.wait_closed()) for s in list(self.closing)]
        if waits:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*waits), timeout)

    def fits(self, pooled: int) -> bool:
        """Whether one more browser fits beside the live sessions and
        `pooled` pooled browsers."""
        return len(self.live) + pooled < self.limit
