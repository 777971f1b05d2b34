"""The daemon as a process: the CLI, SIGTERM drain, and SIGKILL + restart."""

from __future__ import annotations

import base64
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.daemon import cli, daemon, serve_argv
from helpers.faults import report_fault
from helpers.workers import kill_worker_processes, worker_processes
from worker.config import Config


def test_the_cli_starts_lists_and_stops_sessions(tmp_path: Path) -> None:
    with daemon(tmp_path / "state") as (_, info):
        target = info["grpc"]
        status = cli(target, "status")
        assert status["capacity"] >= 1 and "CHROMIUM" in status["flavours"]
        lean = cli(target, "browser", "create", "lean", "--flavour", "headless-shell")
        assert lean["flavour"] == "HEADLESS_SHELL"
        started = cli(
            target,
            "session",
            "start",
            "--browser",
            lean["browserId"],
            "--name",
            "cli",
            "--viewport",
            "800x600",
        )
        assert started["status"] == "READY" and started["viewPort"] == {"width": 800, "height": 600}
        assert started["streams"]["automationStream"]["token"]
        sid = started["sessionId"]
        listed = cli(target, "session", "list", "--browser", lean["browserId"])
        assert [s["sessionId"] for s in listed["items"]] == [sid]
        stopped = cli(target, "session", "stop", sid, "--browser", lean["browserId"])
        assert (stopped["status"], stopped["terminationReason"]) == ("TERMINATED", "STOPPED")


def test_the_cli_invokes_actions_on_a_session(tmp_path: Path) -> None:
    with daemon(tmp_path / "state", env={"SANDBOX_FIRST_TAB": "true"}) as (_, info):
        target = info["grpc"]
        sid = cli(target, "session", "start")["sessionId"]
        moved = cli(target, "session", "invoke", sid, '{"mouseMove": {"x": 100, "y": 100}}')
        assert moved == {"sessionId": sid, "action": "mouseMove", "status": "SUCCESS"}
        shot = cli(target, "session", "invoke", sid, '{"screenshot": {}}')
        assert base64.b64decode(shot["data"]).startswith(b"\x89PNG\r\n")
        invoke = [sys.executable, "-m", "worker.cli", "session", "invoke", "--target", target, sid]
        out = subprocess.run([*invoke, "{nope"], capture_output=True, timeout=60)
        assert out.returncode != 0 and b"ACTION_JSON" in out.stderr
        bad = '{"mouseClick": {"x": 1, "y": 5}}'
        out = subprocess.run([*invoke, bad], capture_output=True, timeout=60)
        assert out.returncode == 1 and b"INVALID_ARGUMENT: action.mouse_click.x:" in out.stderr


def test_the_cli_reports_errors_with_the_grpc_code(tmp_path: Path) -> None:
    with daemon(tmp_path / "state") as (_, info):
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "worker.cli",
                "session",
                "start",
                "--timeout",
                "99999",
                "--target",
                info["grpc"],
            ],
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 1
        assert b"INVALID_ARGUMENT: session_timeout_seconds:" in out.stderr


def test_sigterm_drains_then_stops_sessions_and_exits_cleanly(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with daemon(state, "--drain-timeout", "1") as (proc, info):
        cli(info["grpc"], "session", "start")
        assert worker_processes(state)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
        assert not worker_processes(state)
        assert not list((state / "sessions").iterdir())


@pytest.fixture
def frozen_orphans(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """A state dir whose worker was SIGKILLed, leaving stopped browsers."""
    state = tmp_path / "state"
    with daemon(state, reap=False) as (proc, info):
        ids = [cli(info["grpc"], "session", "start")["sessionId"] for _ in range(2)]
        # Freeze the browsers so they cannot exit by themselves when the
        # pipe closes: only the next worker's reaper can end them.
        for pid in worker_processes(state):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    try:
        yield state, ids
    finally:
        kill_worker_processes(state)


def exited(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def test_a_killed_daemons_proxy_relay_exits_by_itself(tmp_path: Path) -> None:
    with daemon(tmp_path / "state") as (proc, info):
        relay = info["relay_pid"]
        assert relay and not exited(relay)
        os.killpg(proc.pid, signal.SIGKILL)  # the relay has its own group
        proc.wait(10)
        deadline = time.monotonic() + 10
        while not exited(relay) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert exited(relay), "the relay outlived its daemon"


def test_restart_kills_frozen_orphans_and_marks_sessions_terminated(
    frozen_orphans: tuple[Path, list[str]],
) -> None:
    state, ids = frozen_orphans
    time.sleep(0.5)
    assert worker_processes(state), "the frozen orphans should still exist"
    with daemon(state) as (_, info):
        assert not worker_processes(state)
        assert not list((state / "sessions").iterdir())
        runtime = Config.from_env({}, state_dir=state.resolve()).session_tmp_root
        assert not runtime.exists() or not list(runtime.iterdir())
        for sid in ids:
            got = cli(info["grpc"], "session", "get", sid)
            assert (got["status"], got["terminationReason"]) == ("TERMINATED", "WORKER_RESTARTED")
    report_fault(
        f"daemon SIGKILLed with {len(ids)} live sessions (their browsers frozen)",
        "restart kills every orphan browser and removes their directories; sessions"
        " TERMINATED WORKER_RESTARTED",
        "n/a (one daemon)",
        "n/a (not recorded)",
    )


def test_a_second_worker_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with daemon(state):
        out = subprocess.run(
            serve_argv(state),
            capture_output=True,
            timeout=60,
        )
        assert out.returncode == 2
        assert b"state_dir:" in out.stderr and b"in use by another running worker" in out.stderr
