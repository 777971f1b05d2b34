"""The daemon's handle on the proxy relay process (`worker.network.relay`).

It starts the relay with the worker, opens and closes one listener per
proxied session, and keeps what it needs to rebuild them: if the relay dies,
it is started again and every live session gets its listener back on the
same port, so browsers keep their `--proxy-server` and never fall back to a
direct connection in between (they see connection errors instead).

Credentials travel to the relay over its stdin pipe only: never argv, never
the environment, never a log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import structlog

import worker
from worker.errors import Unavailable
from worker.network.routing import ProxyConfig

log = structlog.get_logger(__name__)

# The relay imports `worker.network.relay` from the same tree as the daemon.
PACKAGE_ROOT = str(Path(worker.__file__).resolve().parent.parent)
RESTART_BACKOFF_S = 1.0  # a relay that keeps dying is restarted at most this often


class RelayControl:
    def __init__(self, host_overrides: dict[str, str], call_timeout_s: float = 10.0) -> None:
        self._host_overrides = host_overrides
        self._call_timeout_s = call_timeout_s
        self._process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._seq = 0
        self._listeners: dict[str, dict[str, Any]] = {}  # what to replay on restart
        self._stopping = False
        self._restarting: asyncio.Task[None] | None = None
        self._last_start = 0.0
        self.restarts = 0
        # Traffic of ended sessions by (upstream, counter), for metrics.
        self._ended: dict[tuple[str, str], int] = {}

    @property
    def pid(self) -> int:
        return self._process.pid if self._process else 0

    async def start(self) -> None:
        """Spawn the relay; requests queue in its pipe until it is up."""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": PACKAGE_ROOT,
            "LANG": os.environ.get("LANG", "C.UTF-8"),
        }
        self._last_start = time.monotonic()
        self._process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.network.relay",
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env=env,
            # Its own session: a Ctrl-C at the daemon's terminal must not take
            # the relay down while sessions drain. It exits on stdin EOF.
            start_new_session=True,
        )
        self._reader = asyncio.ensure_future(self._read(self._process))
        self._send({"op": "configure", "host_overrides": self._host_overrides})

    async def stop(self) -> None:
        self._stopping = True
        if self._restarting is not None:
            await self._restarting
        process = self._process
        if process is None:
            return
        if process.stdin is not None:
            process.stdin.close()
        try:
            await asyncio.wait_for(process.wait(), 3.0)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
        if self._reader is not None:
            await self._reader

    # -- listeners

    async def open(
        self, session_id: str, config: ProxyConfig, auth: list[str], netns: str = ""
    ) -> int:
        """A listener for one session; returns its port on 127.0.0.1 (inside
        the network namespace at `netns`, when given)."""
        body: dict[str, Any] = {
            "op": "open",
            "session": session_id,
            "config": config.to_dict(),
            "auth": auth,
            "netns": netns,
        }
        port = int((await self._call(body))["port"])
        self._listeners[session_id] = {**body, "port": port}
        return port

    async def update(self, session_id: str, config: ProxyConfig, auth: list[str]) -> None:
        """Route an open listener anew, keeping its port."""
        body = {**self._listeners[session_id], "config": config.to_dict(), "auth": auth}
        await self._call({**body, "op": "update", "session": session_id})
        self._listeners[session_id] = body

    async def close(self, session_id: str) -> dict[str, dict[str, int]]:
        """Close a session's listener; returns its traffic by route. The
        listener stays known until the relay's answer, and its counters move
        to the ended totals in the same step, so a scrape meanwhile never
        misses them (the relay answers in the order it was asked)."""
        body = self._listeners.get(session_id)
        if body is None:
            return {}
        try:
            stats: dict[str, dict[str, int]] = (
                await self._call({"op": "close", "session": session_id})
            ).get("stats", {})
        except Unavailable:
            self._listeners.pop(session_id, None)
            return {}
        self._listeners.pop(session_id, None)
        _add(self._ended, body["config"], stats)
        return stats

    async def traffic(self) -> dict[tuple[str, str], int]:
        """Every session's traffic so far, by (upstream, counter)."""
        live: dict[str, Any] = {}
        if self._listeners:
            try:
                live = (await self._call({"op": "stats"})).get("all", {})
            except Unavailable:
                live = {}
        # After the answer: a close answered before it is in the totals now.
        totals = dict(self._ended)
        for session_id, stats in live.items():
            body = self._listeners.get(session_id)
            if body is not None:
                _add(totals, body["config"], stats)
        return totals

    async def stats(self, session_id: str) -> dict[str, dict[str, int]]:
        answer = await self._call({"op": "stats", "session": session_id})
        return dict(answer.get("stats", {}))

    # -- the pipe

    def _send(self, body: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise Unavailable("proxy relay", "not running")
        self._seq += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._seq] = future
        process.stdin.write(json.dumps({"seq": self._seq, **body}).encode() + b"\n")
        return future

    async def _call(self, body: dict[str, Any]) -> dict[str, Any]:
        future = self._send(body)
        try:
            answer = await asyncio.wait_for(future, self._call_timeout_s)
        except (TimeoutError, ConnectionError) as exc:
            raise Unavailable("proxy relay", f"no answer ({type(exc).__name__})") from None
        if "error" in answer:
            raise Unavailable("proxy relay", str(answer["error"]))
        return answer

    async def _read(self, process: asyncio.subprocess.Process) -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            answer = json.loads(line)
            future = self._pending.pop(answer.get("seq") or 0, None)
            if future is not None and not future.done():
                future.set_result(answer)
        code = await process.wait()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionError("relay exited"))
        self._pending.clear()
        if not self._stopping:
            log.error("relay.exited", exit_code=code, sessions=len(self._listeners))
            self._restarting = asyncio.ensure_future(self._restart())

    async def _restart(self) -> None:
        await asyncio.sleep(max(0.0, self._last_start + RESTART_BACKOFF_S - time.monotonic()))
        if self._stopping:
            return
        self.restarts += 1
        await self.start()
        replays = [self._call(body) for body in self._listeners.values()]
        results = await asyncio.gather(*replays, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        log.warning("relay.restarted", pid=self.pid, listeners=len(replays), failed=len(failed))


def _add(
    totals: dict[tuple[str, str], int], config: dict[str, Any], stats: dict[str, dict[str, int]]
) -> None:
    """Fold one session's per-route counters into totals by upstream."""
    proxies = config["proxies"]
    for route, counts in stats.items():
        upstream = "direct"
        if route != "direct":
            proxy = proxies[int(route)]
            upstream = f"{proxy['server']}:{proxy['port']}"
        for name, value in counts.items():
            totals[(upstream, name)] = totals.get((upstream, name), 0) + value
