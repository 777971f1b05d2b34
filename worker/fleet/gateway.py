"""`sandbox-worker gateway`: one endpoint for a fleet. Stateless: it keeps
nothing a peer gateway lacks (everything is in the shared store), so any
number run side by side and losing one loses nothing.

Start, in order: the store (migrated), the directory of workers, the stream
relay (its port makes the public endpoint URL), gRPC, the hosted HTTP API,
metrics with /readyz following the store, then a refresh every half second
that keeps placement current and closes the relayed clients of lost
workers, and a purge every `session_purge_interval_s` of what the fleet
no longer needs. Stop: NOT_SERVING, the timers, then the front doors, the
relay, the channels to workers, the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from worker import ids
from worker.api import sigv4, validation
from worker.api.hosted import HostedAPI
from worker.api.servicer import add_to_server
from worker.config import Config, ConfigError
from worker.errors import Unavailable
from worker.fleet.directory import REFRESH_S, Directory
from worker.fleet.forward import Forwarder
from worker.fleet.link import fleet_key
from worker.fleet.metrics import FleetState, GatewayMetrics
from worker.fleet.relay import StreamRelay, Target
from worker.fleet.servicers import (
    Fleet,
    FleetBrowsers,
    FleetProfiles,
    FleetServicers,
    FleetSessions,
    FleetStatus,
)
from worker.lifetime import Every, loop_answers, run_until_signalled
from worker.listen import bind_grpc, split_host_port, url_host
from worker.sessions.postgres_store import PostgresStore

log = structlog.get_logger(__name__)


class GatewayServer:
    def __init__(self, config: Config) -> None:
        if not config.store_url:
            raise ConfigError("store_url: a gateway needs the fleet's store (postgresql://...)")
        self.config = config
        self.gateway_id = "g" + ids.new_worker_id()[1:]
        self.metrics = GatewayMetrics()
        self.grpc_port = self.http_api_port = self.automation_port = self.metrics_port = 0
        self.fleet: Fleet | None = None
        self._store: PostgresStore | None = None
        self._relay: StreamRelay | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http_api: HostedAPI | None = None
        self._forward: Forwarder | None = None
        self._health = health.aio.HealthServicer()
        self._refresher: asyncio.Task[None] | None = None
        self._purger: Every | None = None
        self._stopped = False

    async def start(self) -> None:
        config = self.config
        try:
            self._store = await PostgresStore.open(config.store_url, config.store_timeout_s)
        except Unavailable as exc:
            raise ConfigError(f"store_url: {exc.reason}") from None
        self._forward = Forwarder(fleet_key(self._store.page_key), self.metrics)
        directory = Directory(self._store, config.worker_lost_after_s)
        await directory.refresh()
        self._relay = StreamRelay(self._owner_of, sigv4.access_keys(config) or {}, self.metrics)
        host, port = split_host_port(config.automation_listen, "automation_listen")
        self.automation_port = await self._relay.start(host, port)
        public = config.public_automation_url or f"ws://{url_host(host)}:{self.automation_port}"
        self.fleet = Fleet(config, self._store, directory, self._forward, self.metrics, public)
        servicers = FleetServicers(
            FleetBrowsers(self.fleet),
            FleetSessions(self.fleet),
            FleetProfiles(self.fleet),
            FleetStatus(self.fleet, self.gateway_id),
        )
        await self._serve_grpc(servicers)
        if config.http_api_listen:
            self._http_api = HostedAPI(servicers, sigv4.access_keys(config))
            host, port = split_host_port(config.http_api_listen, "http_api_listen")
            self.http_api_port = await self._http_api.start(host, port)
        if config.metrics_listen:
            self._serve_metrics(directory)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._refresher = asyncio.ensure_future(self._refresh(directory))
        self._purger = Every(
            config.session_purge_interval_s, lambda: self._purge(directory), "gateway.purge_failed"
        )
        self._purger.start()
        self._write_ready_file(public)
        log.info(
            "gateway.ready",
            gateway_id=self.gateway_id,
            grpc_port=self.grpc_port,
            automation_url=public,
            store=self._store.where,
            workers=len(directory.fresh()),
        )

    async def _owner_of(self, session_id: str) -> Target:
        """The relay's lookup: a session's worker if it is reachable,
        whether the session is known at all, and its token's digest."""
        assert self.fleet is not None
        if not validation.SESSION_ID.fullmatch(session_id):
            # No session has it, and the store is not asked (a NUL byte in
            # a query's text is an error of psycopg's).
            return Target(None, False, "")
        try:
            found = await self.fleet.store.stream_target(session_id)
        except Unavailable:
            return Target(None, True, "")
        if found is None:
            return Target(None, False, "")
        worker_id, digest = found
        return Target(self.fleet.owner(worker_id), True, digest)

    def _serve_metrics(self, directory: Directory) -> None:
        loop = asyncio.get_running_loop()

        async def state() -> FleetState:
            assert self._relay is not None
            return FleetState(
                store_up=directory.reachable,
                workers=tuple(directory.workers.values()),
                lost_after_s=directory.lost_after_s,
                starting=sum(directory.pending.values()),
                relayed=self._relay.relayed,
            )

        def snapshot() -> FleetState:
            # Scrapes run on prometheus-client's thread; the directory and
            # the relay are read on the event loop, which owns them.
            return asyncio.run_coroutine_threadsafe(state(), loop).result(10)

        self.metrics.watch(snapshot)
        host, port = split_host_port(self.config.metrics_listen, "metrics_listen")

        def ready() -> bool:
            return directory.reachable  # without its store a gateway takes no traffic

        self.metrics_port = self.metrics.serve(host, port, loop_answers(loop), ready)

    async def _serve_grpc(self, servicers: FleetServicers) -> None:
        server = grpc.aio.server()
        add_to_server(
            server, servicers.browsers, servicers.sessions, servicers.profiles, servicers.status
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        self.grpc_port = bind_grpc(server, self.config)
        await server.start()
        self._grpc = server

    async def _refresh(self, directory: Directory) -> None:
        """Placement's view every half second; the store's reachability is
        the gateway's readiness."""
        serving = True
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                lost = await directory.refresh()
            except Unavailable:
                lost = []
            except Exception:
                log.exception("gateway.refresh_failed")
                continue
            if directory.reachable != serving:
                serving = directory.reachable
                log.warning("gateway.store", reachable=serving)
                status = health_pb2.HealthCheckResponse
                await self._set_health(status.SERVING if serving else status.NOT_SERVING)
            for found in lost:
                self.metrics.workers_lost.inc()
                self.metrics.sessions_lost.inc(found.sessions)
                if self._relay is not None:
                    closed = self._relay.drop(found.worker_id)
                    log.info("gateway.clients_closed", worker_id=found.worker_id, clients=closed)
            await self._forget_unlisted(directory)

    async def _purge(self, directory: Directory) -> None:
        """Delete what the fleet no longer needs from the store (any
        gateway may: deleting twice is harmless). On a timer of its own, so
        a long first purge of an old store never holds up placement's view;
        skipped while the store is out of reach."""
        assert self._store is not None
        if not directory.reachable:
            return
        config = self.config
        gone = await self._store.forget(config.session_retention_s, config.worker_forget_after_s)
        if gone.sessions or gone.claims or gone.workers:
            log.info(
                "gateway.store_purged",
                sessions=gone.sessions,
                client_tokens=gone.claims,
                workers=gone.workers,
            )

    async def _forget_unlisted(self, directory: Directory) -> None:
        """Close the connections to workers the store no longer lists."""
        assert self._forward is not None
        listed = {a for w in directory.workers.values() for a in (w.link, w.grpc) if a}
        await self._forward.forget(listed)

    async def _set_health(self, status: int) -> None:
        await self._health.set("", status)

    def _write_ready_file(self, public: str) -> None:
        if self.config.ready_file is None:
            return
        body = {
            "grpc": f"127.0.0.1:{self.grpc_port}",
            "grpc_port": self.grpc_port,
            "automation_port": self.automation_port,
            "automation_url": public,
            "http_api_port": self.http_api_port,
            "metrics_port": self.metrics_port,
            "pid": os.getpid(),
            "gateway_id": self.gateway_id,
        }
        tmp = self.config.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(self.config.ready_file)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        if self._refresher is not None:
            self._refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._refresher
        if self._purger is not None:
            await self._purger.stop()
        if self._http_api is not None:
            await self._http_api.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._relay is not None:
            await self._relay.stop()
        if self._forward is not None:
            await self._forward.close()
        await asyncio.to_thread(self.metrics.stop)
        if self._store is not None:
            await self._store.close()
        log.info("gateway.stopped", gateway_id=self.gateway_id)


async def serve(config: Config) -> None:
    """Run a gateway until SIGTERM or SIGINT."""
    await run_until_signalled(GatewayServer(config))
