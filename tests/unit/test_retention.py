"""A worker deletes the sessions that ended more than the retention ago
from its state file while it runs, not only at its next start; running
sessions and recently ended ones stay."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from worker.config import Config
from worker.sessions.model import READY, TERMINATED, SessionRecord, Viewport
from worker.sessions.retention import Retention
from worker.sessions.store import Store

DAY = 24 * 3600.0


def record(session_id: str, status: str, ended_ago_s: float) -> SessionRecord:
    at = time.time() - ended_ago_s
    return SessionRecord(
        session_id, "aws.browser.v1", "s", "chromium", 900, Viewport(1280, 720), at, at, status
    )


async def test_ended_sessions_past_the_retention_go_while_the_worker_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "state.db")
    config = Config.from_env({}, session_retention_s=7 * DAY, session_purge_interval_s=0.05)
    retention = Retention(config, store)
    retention.start()
    # Written after the purge at start: only the timer's purge can take them.
    for session_id, status, ago in (
        ("old-ended", TERMINATED, 8 * DAY),
        ("new-ended", TERMINATED, DAY),
        ("old-running", READY, 8 * DAY),
    ):
        store.put_session(record(session_id, status, ago))
    try:
        for _ in range(100):  # up to 5 s
            if store.get_session("old-ended") is None:
                break
            await asyncio.sleep(0.05)
    finally:
        await retention.stop()
    kept = [s for s in ("old-ended", "new-ended", "old-running") if store.get_session(s)]
    store.close()
    assert kept == ["new-ended", "old-running"]
