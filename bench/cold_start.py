"""Cold start: StartBrowserSession -> first CDP answer through the automation
endpoint, vs. a raw launch of the same Chromium binary with the same flags to
its first CDP answer over the pipe. Both flavours, runs interleaved so both
sides see the same machine noise. Prints one JSON object on its last line and
writes it to bench/results/cold_start.json.

    python bench/cold_start.py [--runs 30]
"""

from __future__ import annotations

import argparse
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from common import daemon, percentile, raw_spec, start_to_first_answer, summary, write_results
from worker.browser import launcher, reaper
from worker.config import Config
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc


def raw_launch(binary: Path, flavour: str, scratch: Path) -> float:
    """Spawn the browser exactly as the worker would; time to first answer."""
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(dir=scratch))
    pid, from_r, to_w = launcher.spawn(raw_spec(binary, flavour, root))  # the worker's spawn
    os.write(to_w, b'{"id":1,"method":"Browser.getVersion"}\0')
    buffer = b""
    deadline = time.monotonic() + 30
    while b"\0" not in buffer and time.monotonic() < deadline:
        ready, _, _ = select.select([from_r], [], [], 1)
        if ready:
            chunk = os.read(from_r, 65536)
            if not chunk:
                break
            buffer += chunk
    elapsed = (time.perf_counter() - started) * 1000
    assert b'"id":1' in buffer, "raw browser did not answer"
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    os.close(to_w)
    os.close(from_r)
    reaper.kill_referencing(root)
    shutil.rmtree(root, ignore_errors=True)
    return elapsed


def swept(runtime: Path, session_id: str) -> None:
    """Wait (bounded) for the worker's clean-up of a stopped session, which
    runs after Stop answers: a raw launch started meanwhile would share the
    CPU with it and look slower than it is."""
    deadline = time.monotonic() + 10
    while (runtime / session_id).exists() and time.monotonic() < deadline:
        time.sleep(0.005)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()
    config = Config.from_env({})
    binaries = {"chromium": config.chromium_path, "headless-shell": config.headless_shell_path}
    results: dict[str, Any] = {
        "benchmark": "cold_start",
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    # Short scratch path: Chromium's socket paths live under it.
    with tempfile.TemporaryDirectory(prefix="sbxb-") as tmp:
        scratch = Path(tmp)
        with daemon(scratch) as info, grpc.insecure_channel(info["grpc"]) as channel:
            runtime = Config.from_env({}, state_dir=Path(info["state_dir"])).session_tmp_root
            sessions = pb_grpc.BrowserSessionsStub(channel)
            browsers = pb_grpc.BrowsersStub(channel)
            shell = browsers.CreateBrowser(
                pb.CreateBrowserRequest(name="bench_shell", flavour=pb.HEADLESS_SHELL)
            ).browser_id
            ids = {"chromium": "aws.browser.v1", "headless-shell": shell}
            for flavour, binary in binaries.items():
                raw_launch(binary, flavour, scratch)  # warm the page cache for both
                worker_ms, raw_ms = [], []
                for run in range(args.runs):
                    # Alternate which side goes first, so neither always runs
                    # while the other's killed browser is still being torn down.
                    if run % 2 == 0:
                        raw_ms.append(raw_launch(binary, flavour, scratch))
                    elapsed, session_id = start_to_first_answer(
                        sessions, pb.StartBrowserSessionRequest(browser_identifier=ids[flavour])
                    )
                    worker_ms.append(elapsed)
                    sessions.StopBrowserSession(
                        pb.StopBrowserSessionRequest(
                            browser_identifier=ids[flavour], session_id=session_id
                        )
                    )
                    swept(runtime, session_id)
                    if run % 2 == 1:
                        raw_ms.append(raw_launch(binary, flavour, scratch))
                results[flavour] = {
                    "worker": summary(worker_ms),
                    "raw": summary(raw_ms),
                    "median_ratio": round(
                        statistics.median(worker_ms) / statistics.median(raw_ms), 3
                    ),
                    "p95_ratio": round(percentile(worker_ms, 95) / percentile(raw_ms, 95), 3),
                }
        version = subprocess.run(
            [str(config.chromium_path), "--version"], capture_output=True, text=True
        ).stdout.strip()
        results["machine"]["chromium"] = version
    write_results("cold_start", results)


if __name__ == "__main__":
    main()
