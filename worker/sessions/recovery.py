"""What a worker does at start about the run before it, which may have been
killed: kill its browsers (by cgroup, and by the directories they name),
remove their directories, and mark its unfinished sessions TERMINATED with
WORKER_RESTARTED. (Ended sessions past their retention are the
retention's to delete: worker.sessions.retention.)"""

from __future__ import annotations

import time

import structlog

from worker.browser import reaper
from worker.browser.cgroups import Cgroups
from worker.config import Config
from worker.sessions.model import TERMINATED, WORKER_RESTARTED
from worker.sessions.store import Store

log = structlog.get_logger(__name__)


def reap(config: Config, store: Store, cgroups: Cgroups | None) -> int:
    """Clean up after an earlier run; returns how many processes were killed."""
    sessions_dir = config.sessions_dir
    sessions_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp_root = config.session_tmp_root
    # Browsers name their profile (under the runtime root); helpers may
    # name either tree.
    if cgroups is not None:
        cgroups.remove_all()  # kills what runs inside them
    killed = reaper.kill_referencing(tmp_root) + reaper.kill_referencing(sessions_dir)
    leftover = [p for p in sessions_dir.iterdir() if p.is_dir()]
    tmp_root.mkdir(mode=0o711, parents=True, exist_ok=True)
    tmp_root.chmod(0o711)  # whatever an earlier version or the umask made
    for path in leftover:
        reaper.sweep(path, tmp_root / path.name, config.kill_timeout_s)
    if tmp_root.is_dir():
        for path in tmp_root.iterdir():
            reaper.remove_tree(path)
    stale = store.unfinished_sessions()
    now = time.time()
    for record in stale:
        record.status = TERMINATED
        record.termination_reason = WORKER_RESTARTED
        record.updated_at = now
        store.put_session(record)
    if killed or leftover or stale:
        log.warning(
            "worker.recovered",
            processes_killed=killed,
            directories_removed=len(leftover),
            sessions_terminated=len(stale),
        )
    return killed
