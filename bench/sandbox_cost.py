"""What Chromium's sandbox costs inside the container, as the prod overlay
runs it.

The image (deploy/image.sh, layers cached) runs twice side by side under
podman with the StatefulSet's security context and the shipped seccomp
profile (deploy/k8s/components/seccomp): one worker with
SANDBOX_BROWSER_SANDBOX=on, one with `off`; nothing else differs. Measured
from the client's side with Playwright, interleaved in one run (the order
alternates each round):

- time to first page, cold (request -> connected -> new page -> set
  content -> evaluate), p50/p95 per flavour and side, and its `start`
  phase (the StartBrowserSession answer);
- memory: PSS of each session's process tree, read from the host's /proc,
  with --idle sessions per flavour and side holding one small page each;
- the memory budget watch (both sides hold SANDBOX_SESSION_MEMORY_MB, which
  in a container, without cgroups, is the sampling watch): the mean cost of
  one sample of those idle sessions, from the worker's own histogram.

The last line is one JSON object whose `ratios` are on / off (above 1: the
sandbox costs that much more). Results also go to
bench/results/sandbox_cost.json. Needs root (podman).

    python bench/sandbox_cost.py [--runs 12] [--idle 3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import statistics
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import yaml
from playwright.sync_api import sync_playwright

from common import ROOT, free_port, percentile, time_to_first_page, write_results
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.procfs import pss_bytes

TAG = "localhost/sandbox-worker:bench"
PROFILE = ROOT / "deploy" / "k8s" / "components" / "seccomp" / "sandbox-worker.json"
STATEFULSET = ROOT / "deploy" / "k8s" / "base" / "statefulset.yaml"
FLAVOURS = {"chromium": pb.CHROMIUM, "headless-shell": pb.HEADLESS_SHELL}
MiB = 1024 * 1024


def build() -> float:
    began = time.monotonic()
    subprocess.run(["bash", str(ROOT / "deploy" / "image.sh"), TAG], check=True, timeout=280)
    return time.monotonic() - began


@contextlib.contextmanager
def worker(scratch: Path, sandbox: str) -> Iterator[tuple[str, str, str]]:
    """The image as the prod overlay runs it; yields the container's name,
    its gRPC address and its metrics URL."""
    pod = yaml.safe_load(STATEFULSET.read_text())["spec"]["template"]["spec"]
    user = pod["securityContext"]["runAsUser"]
    shm = next(v for v in pod["volumes"] if v["name"] == "dshm")["emptyDir"]["sizeLimit"]
    volumes = []
    for path in ("/tmp", "/var/lib/sandbox-worker"):
        host = scratch / f"{sandbox}{path.replace('/', '-')}"
        host.mkdir()
        shutil.chown(host, user, user)
        volumes += ["-v", f"{host}:{path}"]
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    grpc_port, automation, metrics = free_port(), free_port(), free_port()
    name = f"sandbox-bench-{sandbox}-{os.getpid()}"
    env = {
        "SANDBOX_BROWSER_SANDBOX": sandbox,
        "SANDBOX_RUNTIME_DIR": "/tmp/sw",
        "SANDBOX_MAX_SESSIONS": "8",
        "SANDBOX_GRPC_LISTEN": f"127.0.0.1:{grpc_port}",
        "SANDBOX_AUTOMATION_LISTEN": f"127.0.0.1:{automation}",
        "SANDBOX_METRICS_LISTEN": f"127.0.0.1:{metrics}",
        "SANDBOX_SESSION_MEMORY_MB": "2048",
        "SANDBOX_HTTP_API_LISTEN": "",
        "SANDBOX_PUBLIC_AUTOMATION_URL": f"ws://127.0.0.1:{automation}",
    }
    argv = [
        "podman", "--runtime", "runc", "run", "-d", "--name", name,
        "--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", "nproc=32768:32768",
        "--network", "host", "--user", f"{user}:{user}", "--read-only",
        "--cap-drop", "ALL", "--security-opt", "no-new-privileges",
        "--security-opt", f"seccomp={PROFILE}", "--shm-size", shm.replace("Gi", "g"),
        "--init=false", *volumes,
        *(arg for key, value in env.items() for arg in ("-e", f"{key}={value}")),
        TAG, "serve",
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=60)
    try:
        address = f"127.0.0.1:{grpc_port}"
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(address) as channel:
            grpc.channel_ready_future(channel).result(timeout=max(1, deadline - time.monotonic()))
        yield name, address, f"http://127.0.0.1:{metrics}/metrics"
    finally:
        subprocess.run(["podman", "rm", "-f", "-t", "0", name], capture_output=True, timeout=60)


def host_pids(name: str) -> dict[int, str]:
    out = subprocess.run(
        ["podman", "top", name, "hpid", "args"], capture_output=True, text=True, timeout=30
    ).stdout
    return {int(p): args for p, args in (line.split(None, 1) for line in out.splitlines()[1:])}


def session_pss(name: str, session_id: str) -> int:
    """PSS of a session's browser and everything in its process group."""
    processes = host_pids(name)
    [leader] = [p for p, a in processes.items() if session_id in a and os.getpgid(p) == p]
    return sum(pss_bytes(p) for p in processes if os.getpgid(p) == leader)


def watch_cost(metrics: str) -> tuple[float, float]:
    """The memory watch's samples so far: (count, seconds in all)."""
    text = urllib.request.urlopen(metrics, timeout=10).read().decode()
    found = dict.fromkeys(("count", "sum"), 0.0)
    for line in text.splitlines():
        for key in found:
            if line.startswith(f"sandbox_session_memory_sample_seconds_{key} "):
                found[key] = float(line.split()[1])
    return found["count"], found["sum"]


def idle(
    playwright: Any, stub: Any, worker: tuple[str, str, str], browser_id: str, count: int
) -> tuple[list[float], float]:
    """PSS per session (MiB) of `count` sessions, each holding a small page,
    and the watch's mean ms per sample of them."""
    name, _, metrics = worker
    held, sizes, sample_ms = [], [], 0.0
    try:
        for _ in range(count):
            session = stub.StartBrowserSession(
                pb.StartBrowserSessionRequest(browser_identifier=browser_id)
            )
            stream = session.streams.automation_stream
            client = playwright.chromium.connect_over_cdp(
                stream.stream_endpoint, headers={"Authorization": f"Bearer {stream.token}"}
            )
            page = client.contexts[0].new_page()
            page.set_content("<title>idle</title><p>one small page")
            held.append((session.session_id, client))
        before = watch_cost(metrics)
        time.sleep(3)  # settle: startup allocations returned
        after = watch_cost(metrics)
        sample_ms = (after[1] - before[1]) / max(1.0, after[0] - before[0]) * 1000
        sizes = [session_pss(name, sid) / MiB for sid, _ in held]
    finally:
        for sid, client in held:
            client.close()
            stub.StopBrowserSession(
                pb.StopBrowserSessionRequest(browser_identifier=browser_id, session_id=sid)
            )
    return sizes, sample_ms


def stats(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values), 1),
        "p95_ms": round(percentile(values, 95), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=12)
    parser.add_argument("--idle", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "sandbox_cost",
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "image_build_s": round(build(), 1),
        "ratios": {},
    }
    sides = ("on", "off")
    with contextlib.ExitStack() as stack, sync_playwright() as playwright:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="sbxsc-")))
        workers = {side: stack.enter_context(worker(scratch, side)) for side in sides}
        stubs = {
            side: pb_grpc.BrowsersStub(stack.enter_context(grpc.insecure_channel(address)))
            for side, (_, address, _) in workers.items()
        }
        sessions = {
            side: pb_grpc.BrowserSessionsStub(stack.enter_context(grpc.insecure_channel(address)))
            for side, (_, address, _) in workers.items()
        }
        for flavour, value in FLAVOURS.items():
            browsers = {
                side: stubs[side]
                .CreateBrowser(pb.CreateBrowserRequest(name=f"cost_{side}_{value}", flavour=value))
                .browser_id
                for side in sides
            }
            times: dict[str, dict[str, list[float]]] = {
                side: {"total": [], "start": []} for side in sides
            }
            for run in range(args.runs):
                for side in sides if run % 2 == 0 else sides[::-1]:
                    got = time_to_first_page(sessions[side], playwright, browsers[side])
                    times[side]["total"].append(got["total"])
                    times[side]["start"].append(got["start"])
            memory = {
                side: idle(playwright, sessions[side], workers[side], browsers[side], args.idle)
                for side in sides
            }
            results[flavour] = {
                side: {
                    "first_page": stats(times[side]["total"]),
                    "start": stats(times[side]["start"]),
                    "pss_mib_per_session": round(statistics.mean(memory[side][0]), 1),
                    "memory_watch_ms_per_sample": round(memory[side][1], 2),
                }
                for side in sides
            }
            on, off = results[flavour]["on"], results[flavour]["off"]
            results["ratios"][flavour] = {
                "first_page_median": round(
                    on["first_page"]["median_ms"] / off["first_page"]["median_ms"], 3
                ),
                "start_median": round(on["start"]["median_ms"] / off["start"]["median_ms"], 3),
                "pss": round(on["pss_mib_per_session"] / off["pss_mib_per_session"], 3),
            }
    write_results("sandbox_cost", results)


if __name__ == "__main__":
    main()
