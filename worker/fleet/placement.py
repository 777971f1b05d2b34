"""Where a Start goes: pure decisions over what the workers last said.

A worker is placeable while its heartbeat is fresh, it is not draining or
stopped, and it has room once the Starts this gateway has in flight to it
are counted. Among those, one with an idle warm browser of the session's
flavour comes first (its Start skips a cold launch), then the most free
room, then the one this gateway placed on least recently (so equal
workers take turns, and the one that just started a session is left to
refill its warm pool); the caller tries them in order, a bounded number
of times.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class WorkerView:
    worker_id: str
    grpc: str  # host:port, as gateways reach it
    link: str  # host:port of its fleet link; "": call it over gRPC
    automation: str  # ws://host:port
    capacity: int
    in_use: int
    starting: int
    warm: Mapping[str, int]
    draining: bool
    stopped: bool
    age_s: float  # since its last heartbeat
    default_flavour: str = "chromium"  # its built-in browser's

    @classmethod
    def from_heartbeat(cls, worker_id: str, body: dict[str, Any], age_s: float) -> WorkerView:
        return cls(
            worker_id=worker_id,
            grpc=str(body.get("grpc", "")),
            link=str(body.get("link", "")),
            automation=str(body.get("automation", "")),
            capacity=int(body.get("capacity", 0)),
            in_use=int(body.get("in_use", 0)),
            starting=int(body.get("starting", 0)),
            warm=dict(body.get("warm", {})),
            draining=bool(body.get("draining", False)),
            stopped=bool(body.get("stopped", False)),
            age_s=age_s,
            default_flavour=str(body.get("default_flavour", "chromium")),
        )

    def fresh(self, lost_after_s: float) -> bool:
        return not self.stopped and self.age_s < lost_after_s

    def free(self, pending: int) -> int:
        return self.capacity - self.in_use - pending


def candidates(
    workers: list[WorkerView],
    flavour: str,
    lost_after_s: float,
    pending: Mapping[str, int],
    placed: Mapping[str, int] | None = None,
) -> list[WorkerView]:
    """Placeable workers, best first; `placed` numbers each worker's latest
    placement (higher: more recent)."""
    placed = placed or {}
    usable = [
        w
        for w in workers
        if w.fresh(lost_after_s) and not w.draining and w.free(pending.get(w.worker_id, 0)) > 0
    ]

    def rank(w: WorkerView) -> tuple[int, int, int, str]:
        waiting = pending.get(w.worker_id, 0)
        warm = w.warm.get(flavour, 0) > waiting
        return (0 if warm else 1, -w.free(waiting), placed.get(w.worker_id, 0), w.worker_id)

    return sorted(usable, key=rank)


def full_by_report(workers: list[WorkerView], lost_after_s: float) -> list[WorkerView]:
    """When no worker reports room: the fresh, non-draining ones, most free
    first. A report is up to a heartbeat old and a session may have ended
    since; the worker itself is the authority, and its refusal costs one
    call, where a refusal from here would be wrong."""
    fresh = [w for w in workers if w.fresh(lost_after_s) and not w.draining]
    return sorted(fresh, key=lambda w: (-w.free(0), w.worker_id))


def fleet_capacity(workers: list[WorkerView], lost_after_s: float) -> tuple[int, int]:
    """(sessions the fresh workers hold at most, how many workers)."""
    fresh = [w for w in workers if w.fresh(lost_after_s) and not w.draining]
    return sum(w.capacity for w in fresh), len(fresh)
