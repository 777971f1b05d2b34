"""A gateway's fleet gauges: workers counted by state, and the fleet's
capacity, use and warm browsers summed over the workers that count."""

from __future__ import annotations

from typing import Any

from worker.fleet.metrics import FleetState, GatewayMetrics
from worker.fleet.placement import WorkerView

LOST_AFTER = 15.0


def view(worker_id: str, **body: Any) -> WorkerView:
    age = body.pop("age_s", 1.0)
    defaults: dict[str, Any] = {"capacity": 4, "in_use": 0}
    return WorkerView.from_heartbeat(worker_id, {**defaults, **body}, age)


def scrape(*workers: WorkerView, store_up: bool = True) -> GatewayMetrics:
    metrics = GatewayMetrics()
    state = FleetState(store_up, workers, LOST_AFTER, starting=2, relayed=5)
    metrics.watch(lambda: state)
    return metrics


def sample(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_workers_are_counted_by_state_and_a_stopped_one_not_at_all() -> None:
    metrics = scrape(
        view("ready", in_use=1),
        view("full", in_use=4),
        view("draining", draining=True),
        view("silent", age_s=LOST_AFTER + 1),
        view("stopped", stopped=True),
    )
    states = {
        s: sample(metrics, "sandbox_fleet_workers", state=s)
        for s in ("ready", "full", "draining", "silent")
    }
    assert states == {"ready": 1, "full": 1, "draining": 1, "silent": 1}


def test_capacity_sums_live_workers_that_take_starts_and_use_sums_every_live_one() -> None:
    metrics = scrape(
        view("a", capacity=4, in_use=1, warm={"chromium": 1}),
        view("b", capacity=2, in_use=2, warm={"chromium": 1, "headless-shell": 2}),
        view("c", capacity=8, in_use=3, draining=True),
        view("d", capacity=16, in_use=5, warm={"chromium": 4}, age_s=LOST_AFTER),
    )
    assert sample(metrics, "sandbox_fleet_capacity_sessions") == 6
    assert sample(metrics, "sandbox_fleet_sessions_in_use") == 6
    assert sample(metrics, "sandbox_fleet_warm_browsers", flavour="chromium") == 2
    assert sample(metrics, "sandbox_fleet_warm_browsers", flavour="headless-shell") == 2


def test_the_store_starts_in_flight_and_relayed_streams_are_reported() -> None:
    up, down = scrape(), scrape(store_up=False)
    assert sample(up, "sandbox_fleet_store_up") == 1
    assert sample(down, "sandbox_fleet_store_up") == 0
    assert sample(up, "sandbox_fleet_starts_in_flight") == 2
    assert sample(up, "sandbox_fleet_relayed_streams") == 5


def test_a_gateway_exports_none_of_a_worker_s_session_metrics() -> None:
    names = {m.name for m in scrape(view("a")).registry.collect()}
    assert "sandbox_grpc_requests" in names and "sandbox_fleet_forwarded_calls" in names
    assert not {n for n in names if n.startswith(("sandbox_session", "sandbox_recording"))}
