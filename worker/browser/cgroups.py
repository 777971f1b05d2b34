"""Per-session memory and CPU limits, as a cgroup per browser.

A page that allocates without end must take down its own session, not the
host's other sessions or the daemon. Each browser starts inside a cgroup of
its own (a shell joins it and then execs the browser, so every process of
the tree is inside from its first instruction). The kernel's OOM killer then
acts within the session's limit only; the daemon sees the kill in the
cgroup's counters and ends the session OUT_OF_MEMORY.

cgroup v2 is used where the daemon's cgroup offers the memory controller,
else the v1 memory and cpu hierarchies (older hosts). Without either
(no root, read-only cgroupfs) sessions run unlimited, which is said once in
the log at start; the pod's own limit is then the only bound.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


@dataclasses.dataclass(frozen=True)
class CgroupLimits:
    memory_bytes: int  # 0: none
    cpus: float  # cores; 0: none


class Cgroups:
    """Makes, watches and removes the cgroups of one worker's browsers."""

    def __init__(self, version: int, parents: dict[str, Path], limits: CgroupLimits) -> None:
        self.version = version
        self._parents = parents  # controller ("memory", "cpu"; "" for v2) -> our directory
        self.limits = limits

    # -- discovery

    @classmethod
    def discover(cls, name: str, limits: CgroupLimits, root: Path = CGROUP_ROOT) -> Cgroups | str:
        """The worker's cgroups, or why it cannot have them."""
        if not limits.memory_bytes and not limits.cpus:
            return "no limits configured"
        own = _own_cgroups()
        reasons = []
        for attempt in (_v2, _v1):
            found = attempt(root, own, name, limits)
            if isinstance(found, Cgroups):
                return found
            reasons.append(found)
        return "; ".join(reasons)

    def path(self, session_id: str) -> list[Path]:
        return [parent / session_id for parent in self._parents.values()]

    # -- one session

    def create(self, session_id: str) -> list[Path]:
        """Make the session's cgroup(s) with the limits; returns the
        `cgroup.procs` files its browser must join."""
        procs = []
        for controller, parent in self._parents.items():
            group = parent / session_id
            group.mkdir(mode=0o700)
            if self.version == 2:
                if self.limits.memory_bytes:
                    _write(group / "memory.max", str(self.limits.memory_bytes))
                    _write(group / "memory.swap.max", "0", missing_ok=True)
                    # One OOM kill takes the whole browser: a half-dead
                    # browser (its renderer killed) is no use to an agent.
                    _write(group / "memory.oom.group", "1", missing_ok=True)
                if self.limits.cpus:
                    quota = int(self.limits.cpus * PERIOD_US)
                    _write(group / "cpu.max", f"{quota} {PERIOD_US}")
            elif controller == "memory" and self.limits.memory_bytes:
                _write(group / "memory.limit_in_bytes", str(self.limits.memory_bytes))
                # No swap beyond the limit, where swap accounting exists.
                _write(
                    group / "memory.memsw.limit_in_bytes",
                    str(self.limits.memory_bytes),
                    missing_ok=True,
                )
            elif controller == "cpu" and self.limits.cpus:
                _write(group / "cpu.cfs_period_us", str(PERIOD_US))
                _write(group / "cpu.cfs_quota_us", str(int(self.limits.cpus * PERIOD_US)))
            procs.append(group / "cgroup.procs")
        return procs

    def oom_kills(self, session_id: str) -> int:
        """How many processes the kernel killed in the session for memory."""
        parent = self._parents.get("" if self.version == 2 else "memory")
        if parent is None:
            return 0
        name = "memory.events" if self.version == 2 else "memory.oom_control"
        try:
            text = (parent / session_id / name).read_text()
        except OSError:
            return 0
        for line in text.splitlines():
            key, _, value = line.partition(" ")
            if key == "oom_kill":
                return int(value)
        return 0

    def remove(self, session_id: str, timeout: float = 5.0) -> None:
        """Kill whatever is still inside and remove the cgroup(s)."""
        for group in self.path(session_id):
            _empty_and_remove(group, timeout)

    def close(self) -> None:
        """At shutdown, once every session is gone: remove our own parent
        cgroup(s), so a stopped worker leaves nothing in the cgroupfs."""
        for parent in self._parents.values():
            with contextlib.suppress(OSError):
                parent.rmdir()

    def remove_all(self, timeout: float = 5.0) -> int:
        """At start: the cgroups a killed earlier run left, and what runs in
        them (browsers that outlived it). Returns how many were removed."""
        removed = 0
        for parent in self._parents.values():
            if not parent.is_dir():
                continue
            for group in parent.iterdir():
                if group.is_dir():
                    _empty_and_remove(group, timeout)
                    removed += 1
        return removed


def join_argv(procs: list[Path], argv: list[str]) -> list[str]:
    """`argv` behind a shell that first moves itself into the cgroups."""
    script = 'while [ "$1" != -- ]; do echo $$ > "$1" || exit 126; shift; done; shift; exec "$@"'
    return ["/bin/sh", "-c", script, "sh", *map(str, procs), "--", *argv]


# -- helpers


def _own_cgroups() -> dict[str, str]:
    """controller -> our cgroup path ("" is the v2 unified hierarchy)."""
    found = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for controller in controllers.split(","):
                found[controller] = path
    return found


def _v2(root: Path, own: dict[str, str], name: str, limits: CgroupLimits) -> Cgroups | str:
    if "" not in own:
        return "cgroup v2: not mounted"
    base = root if (root / "cgroup.controllers").exists() else root / "unified"
    mine = base / own[""].lstrip("/")
    try:
        available = (mine / "cgroup.controllers").read_text().split()
    except OSError as exc:
        return f"cgroup v2: {exc.strerror}"
    wanted = ["memory"] * bool(limits.memory_bytes) + ["cpu"] * bool(limits.cpus)
    if missing := [c for c in wanted if c not in available]:
        return f"cgroup v2: controllers {missing} not delegated to {mine}"
    try:
        # A cgroup with processes cannot hand controllers to children (the
        # no-internal-process rule): the daemon moves into a leaf first.
        leaf = mine / "daemon"
        leaf.mkdir(exist_ok=True)
        _write(leaf / "cgroup.procs", str(os.getpid()))
        _write(mine / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
        ours = mine / name
        ours.mkdir(mode=0o700, exist_ok=True)
        _write(ours / "cgroup.subtree_control", " ".join(f"+{c}" for c in wanted))
    except OSError as exc:
        return f"cgroup v2: cannot delegate under {mine}: {exc.strerror}"
    return Cgroups(2, {"": ours}, limits)


def _v1(root: Path, own: dict[str, str], name: str, limits: CgroupLimits) -> Cgroups | str:
    wanted = ["memory"] * bool(limits.memory_bytes) + ["cpu"] * bool(limits.cpus)
    parents = {}
    for controller in wanted:
        if controller not in own or not (root / controller).is_dir():
            return f"cgroup v1: no {controller} hierarchy"
        ours = root / controller / own[controller].lstrip("/") / name
        try:
            ours.mkdir(mode=0o700, exist_ok=True)
        except OSError as exc:
            return f"cgroup v1: cannot create {ours}: {exc.strerror}"
        parents[controller] = ours
    return Cgroups(1, parents, limits)


def _write(path: Path, value: str, missing_ok: bool = False) -> None:
    try:
        with open(path, "w") as f:
            f.write(value)
    except FileNotFoundError:
        if not missing_ok:
            raise


def _empty_and_remove(group: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except FileNotFoundError:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        try:
            group.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            if time.monotonic() > deadline:
                log.warning("limits.cgroup_left", cgroup=str(group))
                return
            time.sleep(0.02)  # dying processes leave within moments; bounded
