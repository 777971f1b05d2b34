"""The gateway's cost: three workers behind one gateway, against the same
three workers addressed directly by a client that knows where each session
is (the best a user could do by hand), in one run, interleaved.

- Start latency: StartBrowserSession through the gateway and straight to a
  worker (round robin), alternating, each session stopped at once and the
  worker's clean-up let finish; the added cost is the median of the paired
  differences, with a 95% bootstrap interval: a Start's own time (a spawn)
  varies by milliseconds, so one run's median moves by a few tenths.
- CDP round trip: one session, two websocket clients on it, one through the
  gateway's relay and one on the worker's own endpoint, calling
  Target.getTargets in turn.
- Sessions per minute at concurrency 2, 4 and 8: the load generator's
  scenario (Start, connect, open a tab, load a page, read its title, Stop),
  through the gateway and direct (each client keeps to one worker), for
  the same time each, in eight slices taken A B B A A B B A (which way
  goes first alternates between concurrencies), so that whatever else the
  shared machine does in those minutes falls on both ways alike.

On two cores the workers' browsers compete with each other and with the
gateway: the headless shell is used for every session, and the ratios, not
the absolute times, are what a run says. A PostgreSQL is started in a
temporary directory (worker.cli.local_postgres).

Prints one JSON object on its last line and writes bench/results/fleet.json.

    python bench/fleet.py [--starts 300] [--calls 400] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import grpc

from common import daemon, free_port, gateway, write_results
from worker.api.automation import endpoint_path
from worker.cli import loadtest
from worker.cli.cdp_client import AsyncCDP
from worker.cli.local_postgres import local_postgres
from worker.cli.loopback import serving_bytes
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

WORKERS = 3
CAPACITY = 3  # per worker: concurrency 8 fits in the fleet's 9
# After a Stop, before the next Start: a worker's close (browser killed,
# directories swept, cgroup removed) took 3-6 ms in 20 tries here, so every
# Start begins with nothing of the last one left, and on idle processes.
SETTLE_S = 0.1
RESAMPLES = 2000  # for the interval of the median added Start time
SLICES = 8  # per concurrency, both ways together


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--starts", type=int, default=300)
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, local_postgres(free_port()) as pg:
        scratch = Path(tmp)
        env = {"SANDBOX_STORE_URL": pg.url, "SANDBOX_HEARTBEAT_INTERVAL_S": "0.5"}
        flags = ("--max-sessions", str(CAPACITY), "--default-flavour", "headless-shell")
        with contextlib.ExitStack() as stack:
            workers = [
                stack.enter_context(daemon(scratch, *flags, env=env)) for _ in range(WORKERS)
            ]
            front = stack.enter_context(gateway(scratch, env))
            results = asyncio.run(measure(workers, front, args))
    results["machine"] = {"cpus": os.cpu_count(), "python": platform.python_version()}
    write_results("fleet", results)


async def measure(
    workers: list[dict[str, Any]], front: dict[str, Any], args: Any
) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(w["grpc"]) for w in [front, *workers]]
    try:
        via, *direct = [pb_grpc.BrowserSessionsStub(c) for c in channels]
        await _until_placeable(channels[0])
        starts = await start_latency(via, direct, args.starts)
        rtt = await round_trip(via, workers, front, args.calls)
        throughput = {}
        with serving_bytes(loadtest.PAGE) as url:
            for n, concurrency in enumerate((2, 4, 8)):
                throughput[str(concurrency)] = await sessions_per_minute(
                    via, direct, concurrency, args.seconds, url + "/", gateway_first=n % 2 == 0
                )
    finally:
        for channel in channels:
            await channel.close()
    return {
        "benchmark": "fleet",
        "workers": WORKERS,
        "flavour": "headless-shell",
        "start": starts,
        "cdp_round_trip": rtt,
        "sessions_per_minute": throughput,
        "goals": {
            "start_added_ms_p50": 1.0,
            "round_trip_added_ms_p50": 0.3,
            "sessions_per_minute_ratio": 0.95,
        },
    }


async def _until_placeable(channel: grpc.aio.Channel) -> None:
    status = pb_grpc.WorkerStub(channel)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        seen = await status.GetWorkerStatus(pb.GetWorkerStatusRequest())
        if seen.capacity == WORKERS * CAPACITY:
            return
        await asyncio.sleep(0.2)
    raise RuntimeError("the gateway did not see every worker")


async def _timed_start(stub: Any) -> float:
    began = time.perf_counter()
    started = await stub.StartBrowserSession(pb.StartBrowserSessionRequest())
    took = (time.perf_counter() - began) * 1000
    await stub.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=started.session_id))
    # The worker cleans up after Stop answers: the next Start, either way,
    # begins once that is done rather than beside it.
    await asyncio.sleep(SETTLE_S)
    return took


async def start_latency(via: Any, direct: list[Any], rounds: int) -> dict[str, float]:
    through, straight, added = [], [], []
    for n in range(rounds):
        pair = [via, direct[n % len(direct)]]
        if n % 2:
            pair.reverse()
        times = dict(zip(("first", "second"), [await _timed_start(s) for s in pair], strict=True))
        g, d = (
            (times["first"], times["second"]) if n % 2 == 0 else (times["second"], times["first"])
        )
        through.append(g)
        straight.append(d)
        added.append(g - d)
    low, high = _median_interval(added)
    return {
        "pairs": rounds,
        "gateway_ms_p50": round(statistics.median(through), 2),
        "direct_ms_p50": round(statistics.median(straight), 2),
        "added_ms_p50": round(statistics.median(added), 2),
        "added_ms_p50_ci95": [round(low, 2), round(high, 2)],
    }


def _median_interval(sample: list[float]) -> tuple[float, float]:
    """A 95% percentile-bootstrap interval for the sample's median (the
    resampling is seeded: a run's printed interval can be recomputed)."""
    pick = random.Random(0)
    medians = sorted(
        statistics.median(pick.choices(sample, k=len(sample))) for _ in range(RESAMPLES)
    )
    return medians[int(RESAMPLES * 0.025)], medians[int(RESAMPLES * 0.975) - 1]


async def round_trip(
    via: Any, workers: list[dict[str, Any]], front: dict[str, Any], calls: int
) -> dict[str, float]:
    started = await via.StartBrowserSession(pb.StartBrowserSessionRequest())
    stream = started.streams.automation_stream
    path = endpoint_path(started.browser_identifier, started.session_id)
    owner = await _owner(workers, started.session_id)
    through, straight = [], []
    try:
        async with (
            AsyncCDP.connect(stream.stream_endpoint, stream.token, 30) as relayed,
            AsyncCDP.connect(owner["automation_url"] + path, stream.token, 30) as own,
        ):
            for _ in range(20):  # warm both paths
                await relayed.call("Target.getTargets")
                await own.call("Target.getTargets")
            for n in range(calls):
                for client, into in ((relayed, through), (own, straight))[:: 1 if n % 2 else -1]:
                    began = time.perf_counter()
                    await client.call("Target.getTargets")
                    into.append((time.perf_counter() - began) * 1000)
    finally:
        await via.StopBrowserSession(pb.StopBrowserSessionRequest(session_id=started.session_id))
    g, d = statistics.median(through), statistics.median(straight)
    return {
        "gateway_ms_p50": round(g, 3),
        "direct_ms_p50": round(d, 3),
        "added_ms_p50": round(g - d, 3),
    }


async def _owner(workers: list[dict[str, Any]], session_id: str) -> dict[str, Any]:
    for worker in workers:
        async with grpc.aio.insecure_channel(worker["grpc"]) as channel:
            stub = pb_grpc.BrowserSessionsStub(channel)
            with contextlib.suppress(grpc.aio.AioRpcError):
                await stub.GetBrowserSession(pb.GetBrowserSessionRequest(session_id=session_id))
                return worker
    raise RuntimeError("no worker holds the session")


async def sessions_per_minute(
    via: Any, direct: list[Any], concurrency: int, seconds: float, url: str, gateway_first: bool
) -> dict[str, float]:
    """Each way for `seconds` in all, in SLICES slices taken A B B A A B B A,
    so that a drift in what else the machine runs falls on both alike."""
    clients = {
        "gateway": [via] * concurrency,
        "direct": [direct[i % len(direct)] for i in range(concurrency)],
    }
    first, second = ("gateway", "direct") if gateway_first else ("direct", "gateway")
    done = {"gateway": 0, "direct": 0}
    spent = {"gateway": 0.0, "direct": 0.0}
    for n in range(SLICES):
        name = first if n % 4 in (0, 3) else second
        finished, took = await _run_for(clients[name], seconds / SLICES, url)
        done[name] += finished
        spent[name] += took
    rates: dict[str, float] = {name: round(done[name] / spent[name] * 60, 1) for name in done}
    rates["ratio"] = round(rates["gateway"] / rates["direct"], 3) if rates["direct"] else 0.0
    return rates


async def _run_for(stubs: list[Any], seconds: float, url: str) -> tuple[int, float]:
    """Sessions the clients finished in about `seconds`, and the time taken
    (to the last one's end)."""
    options = loadtest.Options(target="", url=url, progress=False)
    began = time.monotonic()
    deadline = began + seconds
    done = 0

    async def client(stub: Any) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            outcome = await loadtest.scenario(stub, options, url, began)
            if outcome.error:
                await asyncio.sleep(loadtest.REFUSAL_BACKOFF_S)
            else:
                done += 1

    await asyncio.gather(*(client(s) for s in stubs))
    return done, time.monotonic() - began


if __name__ == "__main__":
    main()
