"""Per-session limits: a page that eats memory ends only its own session
(OUT_OF_MEMORY, recording finalised, capacity back), whether a cgroup holds
it or, where there are none (containers), the sampling watch; and a CPU
quota holds a busy page to its share."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from helpers.faults import EAT_MEMORY_STEADILY, report_fault
from helpers.recordings import local_metadata, recording_browser
from helpers.waits import eventually
from helpers.workers import (
    RunningWorker,
    connected_page,
    make_config,
    running_worker,
    session_processes,
    thread_nices,
)
from worker.browser.cgroups import CgroupLimits, Cgroups
from worker.metrics import Metrics
from worker.pb import sandbox_pb2 as pb


def cgroups_available() -> bool:
    found = Cgroups.discover("sandbox-test-probe", CgroupLimits(1 << 30, 1.0))
    if isinstance(found, str):
        return False
    found.close()
    return True


needs_cgroups = pytest.mark.skipif(
    not cgroups_available(), reason="no writable memory and cpu cgroups on this host"
)

# Touches every page of 64 MiB buffers until something gives.
EAT_MEMORY = """() => {
  window.hoard = [];
  const grow = () => {
    for (let i = 0; i < 4; i++) window.hoard.push(new Uint8Array(64 << 20).fill(7));
    setTimeout(grow, 0);
  };
  grow();
  return true;
}"""


async def ended(worker: RunningWorker, session_id: str, browser: str) -> Any:
    got = await worker.get(session_id, browser)
    return got if got.status == pb.TERMINATED else None


async def eat_until_ended(
    worker: RunningWorker, page: Any, script: str, greedy: Any, browser: str
) -> tuple[Any, float]:
    """Run `script` in the greedy session's page until the session has
    ended; returns its answer and the seconds it took. The evaluate may
    never answer: the page dies under it."""
    began = time.monotonic()
    eat = asyncio.ensure_future(page.evaluate(script))
    eat.add_done_callback(lambda f: f.cancelled() or f.exception())
    got = await eventually(lambda: ended(worker, greedy.session_id, browser), timeout=60)
    eat.cancel()
    return got, time.monotonic() - began


@needs_cgroups
async def test_a_page_that_exhausts_memory_ends_only_its_own_session(tmp_path: Path) -> None:
    config = make_config(tmp_path, session_memory_mb=768)
    async with running_worker(config) as worker:
        manager = worker.server.manager
        assert manager is not None and manager.cgroups is not None
        browser = await recording_browser(worker, "oom")
        greedy = await worker.start(browser_identifier=browser)
        bystander = await worker.start()
        group = manager.cgroups.path(greedy.session_id)
        assert all(g.is_dir() for g in group)
        async with connected_page(bystander) as calm:
            await calm.goto("data:text/html,<p id=p>still here")
            async with connected_page(greedy) as page:
                await page.goto("data:text/html,<p>hungry")
                got, took = await eat_until_ended(worker, page, EAT_MEMORY, greedy, browser)
            assert got.termination_reason == pb.OUT_OF_MEMORY
            # The other session never noticed.
            assert await calm.inner_text("#p") == "still here"
            assert (await worker.get(bystander.session_id)).status == pb.READY
        await eventually(lambda: not session_processes(config.state_dir, greedy.session_id), 10)
        await eventually(lambda: not any(g.exists() for g in group), 10)
        assert manager.in_use == 1  # capacity back
        meta = await local_metadata(worker, greedy.session_id)
        assert meta["complete"] is False
        assert any("memory limit" in r for r in meta["incompleteReasons"])
    report_fault(
        f"a page allocates without end under a {config.session_memory_mb} MiB session limit"
        f" (cgroup v{manager.cgroups.version})",
        f"session ended OUT_OF_MEMORY {took:.1f} s after it began; processes, cgroup and"
        " directories gone; capacity back",
        "1 of 1 kept (READY, its page answering)",
        "recording finalised, marked incomplete with the reason",
    )


@needs_cgroups
async def test_a_cpu_quota_throttles_a_busy_page(tmp_path: Path) -> None:
    config = make_config(tmp_path, session_cpus=0.25)
    async with running_worker(config) as worker:
        manager = worker.server.manager
        assert manager is not None and manager.cgroups is not None
        started = await worker.start()
        procs_files = manager.cgroups.path(started.session_id)
        cpu_group = next(g for g in procs_files if "cpu" in str(g) or manager.cgroups.version == 2)
        async with connected_page(started) as page:
            await page.goto("data:text/html,<p>busy")
            inside = {int(p) for p in (cpu_group / "cgroup.procs").read_text().split()}
            assert set(session_processes(config.state_dir, started.session_id)) <= inside
            # One second of solid work on one core, against a quarter core.
            took_ms = await page.evaluate(
                "() => { const t = performance.now(); while (performance.now() - t < 1000) {}"
                " return performance.now() - t; }"
            )
            assert took_ms >= 1000
        stat = dict(
            line.split() for line in (cpu_group / "cpu.stat").read_text().splitlines() if line
        )
        throttled = int(stat.get("nr_throttled", "0"))
        assert throttled > 0, stat


@needs_cgroups
async def test_a_browser_in_its_own_cgroup_starts_at_its_nice(tmp_path: Path) -> None:
    # Autogroups do not reach into a session's cgroup: the nice must be on
    # every thread from the first exec on.
    config = make_config(tmp_path, session_memory_mb=1024, browser_nice=6)
    async with running_worker(config) as worker:
        started = await worker.start()
        async with connected_page(started) as page:
            await page.goto("data:text/html,<p>a renderer exists now")
            tree = session_processes(config.state_dir, started.session_id)
            assert len(tree) >= 3
            for pid in tree:
                assert thread_nices(pid) == {6}, pid


def sample_cost(metrics: Metrics) -> tuple[float, float]:
    """How many samples the watch took, and their mean cost in ms."""
    count = metrics.registry.get_sample_value("sandbox_session_memory_sample_seconds_count")
    total = metrics.registry.get_sample_value("sandbox_session_memory_sample_seconds_sum")
    assert count is not None and total is not None
    return count, (total / count * 1000 if count else 0.0)


async def test_without_cgroups_the_watch_ends_a_session_over_its_memory_budget(
    tmp_path: Path,
) -> None:
    # As in a container: no cgroup per session, the budget held by sampling.
    config = make_config(
        tmp_path,
        session_memory_mb=600,
        session_limits="sampled",
        session_memory_interval_s=0.25,
        session_memory_grace_s=1.0,
    )
    async with running_worker(config) as worker:
        manager = worker.server.manager
        assert manager is not None and manager.cgroups is None
        assert manager.memory_budget is not None
        browser = await recording_browser(worker, "budget")
        greedy = await worker.start(browser_identifier=browser)
        bystander = await worker.start()
        async with connected_page(bystander) as calm:
            await calm.goto("data:text/html,<p id=p>still here")
            async with connected_page(greedy) as page:
                await page.goto("data:text/html,<p>hungry")
                # Two seconds under the budget first: a session within it is left alone.
                await asyncio.sleep(2)
                assert (await worker.get(greedy.session_id, browser)).status == pb.READY
                quiet = sample_cost(manager.metrics)
                got, took = await eat_until_ended(
                    worker, page, EAT_MEMORY_STEADILY, greedy, browser
                )
            assert got.termination_reason == pb.OUT_OF_MEMORY
            assert await calm.inner_text("#p") == "still here"
            assert (await worker.get(bystander.session_id)).status == pb.READY
        await eventually(lambda: not session_processes(config.state_dir, greedy.session_id), 10)
        assert manager.in_use == 1  # capacity back
        meta = await local_metadata(worker, greedy.session_id)
        assert meta["complete"] is False
        assert any("memory limit" in r for r in meta["incompleteReasons"])
        total = sample_cost(manager.metrics)
    assert quiet[0] >= 4 and total[0] > quiet[0]
    report_fault(
        f"a page allocates without end under a {config.session_memory_mb} MiB budget,"
        " no cgroups (the sampling watch)",
        f"session ended OUT_OF_MEMORY {took:.1f} s after it began (grace"
        f" {config.session_memory_grace_s:.0f} s); processes and directories gone; capacity"
        f" back; a sample of two sessions took {quiet[1]:.2f} ms within budget,"
        f" {total[1]:.2f} ms on average over the whole test",
        "1 of 1 kept (READY, its page answering)",
        "recording finalised, marked incomplete with the reason",
    )
