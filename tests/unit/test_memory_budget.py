"""The memory budget watch's decisions (without cgroups): pure logic over
sampled numbers, with stand-in sessions and a stand-in sampler."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from worker import procfs
from worker.config import Config, ConfigError
from worker.metrics import Metrics
from worker.sessions import memory_budget
from worker.sessions.memory_budget import MemoryBudget

MIB = 1 << 20


@dataclasses.dataclass
class Proc:
    pid: int


@dataclasses.dataclass
class FakeSession:
    session_id: str
    process: Proc
    running: bool = True
    ended: tuple[int, int] | None = None

    def exceeded_memory(self, used: int, limit: int) -> None:
        self.ended = (used, limit)
        self.running = False


def watch(tmp_path: Path, sessions: list[FakeSession], grace: float) -> MemoryBudget:
    config = Config.from_env(
        {}, state_dir=tmp_path, session_memory_mb=100, session_memory_grace_s=grace
    )
    return MemoryBudget(config, Metrics(), lambda: sessions)  # type: ignore[arg-type, return-value]


def use(monkeypatch: pytest.MonkeyPatch, sizes: dict[int, int]) -> None:
    monkeypatch.setattr(memory_budget, "sample", lambda leaders: {p: sizes[p] for p in leaders})


async def test_a_session_over_budget_ends_only_once_the_grace_has_passed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [1000.0]
    monkeypatch.setattr(memory_budget.time, "monotonic", lambda: clock[0])
    greedy, calm = FakeSession("greedy", Proc(11)), FakeSession("calm", Proc(22))
    budget = watch(tmp_path, [greedy, calm], grace=2.0)
    use(monkeypatch, {11: 150 * MIB, 22: 50 * MIB})
    assert await budget.check() == []  # over, but only just now
    clock[0] += 1.5
    assert await budget.check() == []
    clock[0] += 0.5
    assert await budget.check() == ["greedy"]
    assert greedy.ended == (150 * MIB, 100 * MIB) and calm.ended is None


async def test_dipping_under_the_budget_starts_the_grace_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr(memory_budget.time, "monotonic", lambda: clock[0])
    spiky = FakeSession("spiky", Proc(11))
    budget = watch(tmp_path, [spiky], grace=1.0)
    for size in (150, 90, 150, 150):
        use(monkeypatch, {11: size * MIB})
        assert await budget.check() == []
        clock[0] += 0.5
    use(monkeypatch, {11: 150 * MIB})
    assert await budget.check() == ["spiky"]  # a whole second over, counted from 150 after 90


async def test_closing_sessions_are_not_sampled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    closing = FakeSession("closing", Proc(11), running=False)
    seen: list[Any] = []
    monkeypatch.setattr(memory_budget, "sample", lambda leaders: seen.append(dict(leaders)) or {})
    await watch(tmp_path, [closing], grace=0.0).check()
    assert seen == [{}]


def test_private_bytes_reads_this_processs_own_counters() -> None:
    held = bytearray(64 * MIB)  # touched: zero-filled by the allocator, then written
    held[::4096] = b"x" * len(held[::4096])
    assert procfs.private_bytes(os.getpid()) >= 64 * MIB
    assert procfs.private_bytes(2**22 + 12345) == 0  # no such process: nothing, no error


def test_limit_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="session_limits"):
        Config.from_env({"SANDBOX_SESSION_LIMITS": "kernel"})
    with pytest.raises(ConfigError, match="session_cpus"):
        Config.from_env({"SANDBOX_SESSION_LIMITS": "sampled", "SANDBOX_SESSION_CPUS": "1"})
    with pytest.raises(ConfigError, match="session_memory_interval_s"):
        Config.from_env({"SANDBOX_SESSION_MEMORY_INTERVAL_S": "0"})
    with pytest.raises(ConfigError, match="extra_chromium_args"):
        Config.from_env(
            {"SANDBOX_BROWSER_SANDBOX": "on", "SANDBOX_EXTRA_CHROMIUM_ARGS": "--no-sandbox"}
        )
