"""`sandbox-worker loadtest` against a real daemon: it runs the sessions it
says, reports latency, failures by code and the worker's usage, writes its
JSON and chart, and leaves nothing running."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from helpers.daemon import daemon
from helpers.workers import worker_processes


def loadtest(info: dict[str, Any], tmp_path: Path, *flags: str) -> dict[str, Any]:
    argv = [
        sys.executable, "-m", "worker.cli", "loadtest",
        "--target", info["grpc"],
        "--metrics", f"http://127.0.0.1:{info['metrics_port']}/metrics",
        "--out", str(tmp_path / "report.json"),
        "--json", "--quiet",
        *flags,
    ]  # fmt: skip
    out = subprocess.run(argv, capture_output=True, text=True, timeout=180)
    assert out.returncode in (0, 1), out.stderr
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def test_a_load_run_reports_every_session_and_leaves_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with daemon(state, "--max-sessions", "3") as (_, info):
        chart = tmp_path / "load.png"
        result = loadtest(
            info, tmp_path, "--concurrency", "2", "--sessions", "6", "--chart", str(chart)
        )
        assert (result["sessions"], result["succeeded"], result["failures"]) == (6, 6, {})
        assert 0 < result["start_ms"]["p50"] <= result["start_ms"]["p99"]
        assert result["scenario_ms"]["p50"] >= result["start_ms"]["p50"]
        assert result["sessions_per_s"] > 0
        assert result["worker"]["daemon_rss_mib"] > 10
        assert result["worker"]["daemon_cpu_seconds"] >= 0
        assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        report = json.loads((tmp_path / "report.json").read_text())
        assert len(report["timeline"]) == 6
        # Stop answers once a browser exited; its sweep follows within moments.
        deadline = time.monotonic() + 10
        while list((state / "sessions").iterdir()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not worker_processes(state)
        assert not list((state / "sessions").iterdir())


def test_refused_starts_are_counted_by_code(tmp_path: Path) -> None:
    with daemon(tmp_path / "state", "--max-sessions", "1") as (_, info):
        result = loadtest(info, tmp_path, "--concurrency", "3", "--sessions", "6")
    assert result["sessions"] == 6
    assert result["failures"].get("RESOURCE_EXHAUSTED", 0) >= 1
    assert result["succeeded"] + sum(result["failures"].values()) == 6


def test_a_recorded_load_run_finishes_a_recording_per_session(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with daemon(state, "--max-sessions", "2") as (_, info):
        result = loadtest(info, tmp_path, "--sessions", "4", "--record", "loadbucket")
        folder = state / "recordings" / "loadbucket" / "loadtest"
        deadline = time.monotonic() + 20
        while len(list(folder.glob("*/metadata.json"))) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        again = loadtest(info, tmp_path, "--sessions", "1", "--record", "loadbucket")
    assert result["succeeded"] == 4 and again["succeeded"] == 1
    metadata = [json.loads(p.read_text()) for p in folder.glob("*/metadata.json")]
    assert len(metadata) >= 4 and all(m["complete"] and m["eventCount"] for m in metadata)
