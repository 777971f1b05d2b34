"""One call from a gateway to a worker, over the fleet link and over gRPC,
in one run: a child process serves GetWorkerStatus both ways (the link's
LinkServer and a grpc.aio server, over the same servicer), and this process
calls it with the gateway's own clients (WorkerLink, a grpc.aio channel),
alternating, back to back and after pauses of 10 and 100 ms.

The pauses are there because a gateway between Starts is often idle: on a
virtual machine a process (and its vCPU) woken from idle answers later than
one that is busy, and each process a call passes through pays that again.

Prints one JSON object on its last line and writes bench/results/fleet_link.json.

    python bench/fleet_link.py [--calls 600]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import secrets
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from common import ROOT, free_port, write_results
from worker.api.rpc import rpc
from worker.cli.groups import stop_group
from worker.fleet.link import methods
from worker.fleet.link_client import WorkerLink
from worker.fleet.link_server import LinkServer
from worker.metrics import Metrics
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

PAUSES_MS = (0, 10, 100)


class Status(pb_grpc.WorkerServicer):
    def __init__(self) -> None:
        self.metrics = Metrics()

    @rpc
    async def GetWorkerStatus(self, request: Any, context: Any) -> pb.WorkerStatus:
        return pb.WorkerStatus(capacity=3, worker_id="w-bench")


async def serve(link_port: int, grpc_port: int, key: bytes) -> None:
    """The worker's side, until killed."""
    status = Status()
    link = LinkServer({"Worker": status}, key)
    await link.start("127.0.0.1", link_port)
    server = grpc.aio.server()
    pb_grpc.add_WorkerServicer_to_server(status, server)
    server.add_insecure_port(f"127.0.0.1:{grpc_port}")
    await server.start()
    await asyncio.Event().wait()


async def measure(link_port: int, grpc_port: int, key: bytes, calls: int) -> dict[str, Any]:
    method = methods()["Worker/GetWorkerStatus"]
    link = WorkerLink(f"127.0.0.1:{link_port}", key)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
    stub = pb_grpc.WorkerStub(channel)
    request = pb.GetWorkerStatusRequest()

    async def over_link() -> None:
        await link.call(method, request, 5, "bench")

    async def over_grpc() -> None:
        await stub.GetWorkerStatus(request, timeout=5)

    try:
        for call in (over_link, over_grpc):  # connect and warm both
            for _ in range(50):
                await call()
        results = {}
        for pause in PAUSES_MS:
            n = calls if pause == 0 else max(50, calls // (4 if pause < 50 else 12))
            results[f"after_{pause}ms"] = await _alternating(over_link, over_grpc, n, pause)
    finally:
        await link.close()
        await channel.close()
    return results


async def _alternating(
    link: Callable[[], Awaitable[None]],
    grpc_call: Callable[[], Awaitable[None]],
    n: int,
    pause_ms: int,
) -> dict[str, float]:
    times: dict[str, list[float]] = {"link": [], "grpc": []}
    for i in range(n):
        order = (("link", link), ("grpc", grpc_call))[:: 1 if i % 2 else -1]
        for name, call in order:
            if pause_ms:
                await asyncio.sleep(pause_ms / 1000)
            began = time.perf_counter()
            await call()
            times[name].append((time.perf_counter() - began) * 1000)
    link_ms, grpc_ms = (statistics.median(times[k]) for k in ("link", "grpc"))
    return {
        "calls": n,
        "link_ms_p50": round(link_ms, 3),
        "grpc_ms_p50": round(grpc_ms, 3),
        "link_saves_ms": round(grpc_ms - link_ms, 3),
        "grpc_over_link": round(grpc_ms / link_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=600)
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    key = bytes.fromhex(os.environ.get("BENCH_LINK_KEY", "")) or secrets.token_bytes(32)
    if args.serve:
        asyncio.run(serve(*args.serve, key))
        return
    link_port, grpc_port = free_port(), free_port()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(link_port), str(grpc_port)],
        cwd=ROOT, env={**os.environ, "BENCH_LINK_KEY": key.hex()}, start_new_session=True,
    )  # fmt: skip
    try:
        _wait_for(link_port, grpc_port, child)
        results = asyncio.run(measure(link_port, grpc_port, key, args.calls))
    finally:
        stop_group(child, 10)
    write_results(
        "fleet_link",
        {
            "benchmark": "fleet_link",
            **results,
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        },
    )


def _wait_for(link_port: int, grpc_port: int, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    for port in (link_port, grpc_port):
        while True:
            if child.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the serving process did not start")
            try:
                socket.create_connection(("127.0.0.1", port), 0.5).close()
                break
            except OSError:
                time.sleep(0.05)


if __name__ == "__main__":
    main()
