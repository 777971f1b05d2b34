"""A gateway's metrics: the fleet as this gateway sees it (what the workers
last said in the store, and whether the store answers), the calls it
forwarded and how each worker answered, the workers it found lost, and
the clients its relay carries. With the API calls and process figures
every daemon exports (worker.metrics.DaemonMetrics), and none of a
worker's own session metrics: those come from the workers.

Every gateway sees the same workers, so fleet gauges are the same at each
(aggregate them with max, not sum); counters are this gateway's own.
Worker ids are new at every worker start, so no series is labelled with
one: a long-running gateway's series stay as few as its states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from worker.fleet.placement import WorkerView, fleet_capacity
from worker.metrics import DaemonMetrics

# A worker's state as the fleet gauges count it: "silent" is out of
# placement for want of a heartbeat (lost, once it lasts past
# worker_lost_after_s while the store answers).
STATES = ("ready", "full", "draining", "silent")


@dataclasses.dataclass(frozen=True)
class FleetState:
    """A snapshot of what the gateway knows, taken on its event loop."""

    store_up: bool
    workers: tuple[WorkerView, ...]
    lost_after_s: float
    starting: int  # Starts this gateway has in flight
    relayed: int  # websocket clients this gateway relays now


def worker_state(view: WorkerView, lost_after_s: float) -> str | None:
    """One of STATES, or None for a worker that stopped on purpose."""
    if view.stopped:
        return None
    if not view.fresh(lost_after_s):
        return "silent"
    if view.draining:
        return "draining"
    return "ready" if view.free(0) > 0 else "full"


class GatewayMetrics(DaemonMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        self.forwarded = self._counter(
            "sandbox_fleet_forwarded_calls_total",
            "Calls forwarded to a worker, by how it answered (OK, its refusal's "
            "code, or UNREACHABLE when it did not answer)",
            "method",
            "code",
        )
        self.workers_lost = self._counter(
            "sandbox_fleet_workers_lost_total",
            "Workers this gateway found silent for worker_lost_after_s",
        )
        self.sessions_lost = self._counter(
            "sandbox_fleet_sessions_lost_total",
            "Sessions this gateway ended WORKER_LOST (each is ended by one gateway)",
        )

    def watch(self, snapshot: Callable[[], FleetState]) -> None:
        """Report the fleet's present state on every scrape."""
        self.registry.register(FleetCollector(snapshot))


class FleetCollector(Collector):
    def __init__(self, snapshot: Callable[[], FleetState]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        state = self._snapshot()
        yield GaugeMetricFamily(
            "sandbox_fleet_store_up",
            "1 while the fleet's store answered this gateway's last refresh",
            1 if state.store_up else 0,
        )
        counted = {name: 0 for name in STATES}
        capacity, _ = fleet_capacity(list(state.workers), state.lost_after_s)
        in_use = 0
        warm: dict[str, int] = {}
        for view in state.workers:
            found = worker_state(view, state.lost_after_s)
            if found is None:
                continue
            counted[found] += 1
            if found == "silent":
                continue
            in_use += view.in_use
            for flavour, count in view.warm.items():
                warm[flavour] = warm.get(flavour, 0) + count
        workers = GaugeMetricFamily(
            "sandbox_fleet_workers", "Workers of the fleet, by state", labels=["state"]
        )
        for name in STATES:
            workers.add_metric([name], counted[name])
        yield workers
        yield GaugeMetricFamily(
            "sandbox_fleet_capacity_sessions",
            "Sessions the fleet's live, non-draining workers run at most",
            capacity,
        )
        yield GaugeMetricFamily(
            "sandbox_fleet_sessions_in_use",
            "Sessions the fleet's live workers run, as each last reported",
            in_use,
        )
        pooled = GaugeMetricFamily(
            "sandbox_fleet_warm_browsers",
            "Pooled browsers waiting for a session, by flavour",
            labels=["flavour"],
        )
        for flavour, count in sorted(warm.items()):
            pooled.add_metric([flavour], count)
        yield pooled
        yield GaugeMetricFamily(
            "sandbox_fleet_starts_in_flight",
            "Starts this gateway has forwarded and not yet had answered",
            state.starting,
        )
        yield GaugeMetricFamily(
            "sandbox_fleet_relayed_streams",
            "Automation and live-view websockets this gateway relays",
            state.relayed,
        )
