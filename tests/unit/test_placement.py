"""Placement: a Start goes to a fresh, non-draining worker with room, one
with an idle warm browser of its flavour first, then the most free room."""

from __future__ import annotations

from typing import Any

from worker.fleet.placement import WorkerView, candidates, fleet_capacity, full_by_report

LOST_AFTER = 15.0


def view(worker_id: str, **body: Any) -> WorkerView:
    age = body.pop("age_s", 1.0)
    defaults: dict[str, Any] = {"grpc": f"{worker_id}:1", "capacity": 4, "in_use": 0}
    return WorkerView.from_heartbeat(worker_id, {**defaults, **body}, age)


def order(
    workers: list[WorkerView],
    flavour: str = "chromium",
    placed: dict[str, int] | None = None,
    **pending: int,
) -> list[str]:
    return [w.worker_id for w in candidates(workers, flavour, LOST_AFTER, pending, placed)]


def test_the_most_free_room_comes_first() -> None:
    assert order([view("a", in_use=3), view("b", in_use=1), view("c", in_use=2)]) == [
        "b",
        "c",
        "a",
    ]


def test_an_idle_warm_browser_of_the_flavour_beats_free_room() -> None:
    workers = [view("a", in_use=0), view("b", in_use=2, warm={"chromium": 1})]
    assert order(workers) == ["b", "a"]
    assert order(workers, "headless-shell") == ["a", "b"]
    # A warm browser another Start of this gateway is already taking does not count.
    assert order(workers, b=1) == ["a", "b"]


def test_equal_workers_take_turns_the_least_recently_placed_first() -> None:
    workers = [view("a"), view("b"), view("c")]
    assert order(workers) == ["a", "b", "c"]
    assert order(workers, placed={"a": 3, "b": 1}) == ["c", "b", "a"]
    # Turns break ties only: more free room still comes first.
    assert order([view("a"), view("b", in_use=1)], placed={"a": 2, "b": 1}) == ["a", "b"]


def test_stale_draining_stopped_and_full_workers_are_not_placed() -> None:
    workers = [
        view("stale", age_s=20.0),
        view("draining", draining=True),
        view("stopped", stopped=True),
        view("full", in_use=4),
        view("busy", in_use=2),
        view("ok"),
    ]
    assert order(workers) == ["ok", "busy"]
    assert order(workers, busy=2) == ["ok"]


def test_the_fleets_capacity_counts_fresh_workers_that_take_sessions() -> None:
    workers = [view("a"), view("b", capacity=2), view("gone", age_s=30.0), view("d", draining=True)]
    assert fleet_capacity(workers, LOST_AFTER) == (6, 2)


def test_when_every_report_says_full_the_fresh_workers_are_asked_anyway() -> None:
    workers = [
        view("a", in_use=4),
        view("b", in_use=4, age_s=20.0),
        view("c", in_use=3, capacity=3),
    ]
    assert order(workers) == []
    assert [w.worker_id for w in full_by_report(workers, LOST_AFTER)] == ["a", "c"]
