"""The worker's lifecycle, top to bottom: start, serve, drain, stop.

Start, each part in the order the next one needs it: lock the state
directory (one worker per directory, so two workers never reap each other's
browsers) and open the store, start the proxy relay, start the session
manager (it reaps what a killed earlier run left and starts the pool), serve
metrics, the automation endpoint, gRPC and the HTTP API, then report SERVING.

Stop (SIGTERM or SIGINT only set an event; this sequence does the work):
1. health NOT_SERVING, so orchestrators and probes stop sending sessions;
2. the manager drains: it refuses new sessions, waits for running ones up
   to the deadline, closes the rest concurrently (one failure does not stop
   the others) and flushes their recordings;
3. the proxy relay, once no session listens on it;
4. the HTTP API, the automation endpoint and gRPC, then metrics;
5. the fleet's last heartbeat (draining, every record copied), then the
   stores, then the lock.

With a shared store (`store_url`), browsers and profiles live there and the
worker joins the fleet once it serves (worker.fleet.member).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import socket
from typing import IO, Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from worker import __version__, ids, tracing
from worker.api import sigv4
from worker.api.automation import AutomationServer
from worker.api.hosted import HostedAPI
from worker.api.paging import PageTokens
from worker.api.servicer import (
    BrowsersServicer,
    ProfilesServicer,
    Servicers,
    SessionsServicer,
    WorkerServicer,
    add_to_server,
)
from worker.config import Config, ConfigError
from worker.errors import Unavailable
from worker.fleet.link import fleet_key
from worker.fleet.link_server import LinkServer
from worker.fleet.member import FleetMember
from worker.lifetime import loop_answers, run_until_signalled
from worker.listen import bind_grpc, split_host_port, url_host
from worker.metrics import Metrics, State
from worker.network.control import RelayControl
from worker.pb import sandbox_pb2 as pb
from worker.sessions.manager import SessionManager
from worker.sessions.postgres_store import PostgresStore, WorkerIndex
from worker.sessions.store import Store

log = structlog.get_logger(__name__)

SERVICE_NAMES = [
    pb.DESCRIPTOR.services_by_name[name].full_name
    for name in ("Browsers", "BrowserSessions", "BrowserProfiles", "Worker")
]


class WorkerServer:
    def __init__(self, config: Config) -> None:
        # Absolute paths: the reaper matches browsers by the session
        # directory in their command line.
        state_dir = config.state_dir.resolve()
        self.config = dataclasses.replace(config, state_dir=state_dir)
        self.worker_id = ids.new_worker_id()
        self.grpc_port = 0
        self.automation_port = 0
        self.link_port = 0
        self._link: LinkServer | None = None
        self._status: WorkerServicer | None = None  # gRPC's, and the link's
        self.manager: SessionManager | None = None
        self._lock: IO[str] | None = None
        self._store: Store | None = None
        self._shared: PostgresStore | None = None  # a fleet's store
        self.member: FleetMember | None = None
        self._automation: AutomationServer | None = None
        self.relay: RelayControl | None = None
        self.metrics = Metrics()
        self.metrics_port = 0
        self.http_api_port = 0
        self._http_api: HostedAPI | None = None
        self._grpc: grpc.aio.Server | None = None
        self._health = health.aio.HealthServicer()
        self._stopped = False
        self._serving = False
        self._spans: Any = None  # the OTLP exporter's provider, when configured

    async def start(self) -> None:
        """Each part in the order the next one needs it."""
        self._open_state()
        if self.config.store_url:
            self._shared = await _open_shared(self.config)
        if self.config.otlp_endpoint:
            self._spans = tracing.install(self.config.otlp_endpoint, "sandbox-worker")
        # The relay runs from the start, so no proxied session waits for a
        # Python process to boot.
        self.relay = RelayControl(self.config.host_override_map())
        await self.relay.start()
        assert self._store is not None
        index = WorkerIndex(self._shared, self.worker_id) if self._shared else None
        self.manager = SessionManager(
            self.config, self._store, self.relay, self.metrics, shared=self._shared, index=index
        )
        await self.manager.start()
        self._serve_metrics()
        keys = sigv4.access_keys(self.config)  # SigV4, for the HTTP API and the websockets
        public = await self._serve_automation(self.manager, keys or {})
        servicers = await self._serve_grpc(self.manager, public)
        await self._serve_http_api(servicers, keys)
        await self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._serving = True
        if self._shared is not None:
            await self._join_fleet(self._shared, public, servicers)
        self._write_ready_file(public)
        log.info(
            "worker.ready",
            worker_id=self.worker_id,
            grpc_port=self.grpc_port,
            automation_url=public,
            capacity=self.config.max_sessions,
            metrics_port=self.metrics_port,
            state_dir=str(self.config.state_dir),
        )

    async def _join_fleet(self, store: PostgresStore, public: str, servicers: Servicers) -> None:
        assert self.manager is not None
        host = self.config.advertise_host or _advertised_host(self.config.grpc_listen)
        addresses = {
            "grpc": f"{host}:{self.grpc_port}",
            "automation": public
            if self.config.public_automation_url
            else f"ws://{host}:{self.automation_port}",
        }
        if self.config.link_listen != "off":
            await self._serve_link(store, servicers)
            addresses["link"] = f"{host}:{self.link_port}"
        self.member = FleetMember(store, self.manager, self.worker_id, addresses, __version__)
        try:
            await self.member.start()
        except Unavailable as exc:
            raise ConfigError(f"store_url: {exc.reason}") from None

    async def _serve_link(self, store: PostgresStore, servicers: Servicers) -> None:
        """The fleet link, answering with the servicers gRPC has."""
        assert self._status is not None
        listen = self.config.link_listen
        if not listen:  # the gRPC listener's host, any port
            listen = self.config.grpc_listen.rpartition(":")[0] + ":0"
        host, port = split_host_port(listen, "link_listen")
        by_service = {
            "Browsers": servicers.browsers,
            "BrowserSessions": servicers.sessions,
            "BrowserProfiles": servicers.profiles,
            "Worker": self._status,
        }
        self._link = LinkServer(by_service, fleet_key(store.page_key))
        try:
            self.link_port = await self._link.start(host, port)
        except OSError as exc:
            raise ConfigError(f"link_listen: cannot listen on {listen}: {exc.strerror}") from None

    def _open_state(self) -> None:
        state_dir = self.config.state_dir
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The state database, spool and local recordings inside are the
        # daemon's alone, whatever mode an existing directory was given.
        state_dir.chmod(0o700)
        self._lock = _lock_state_dir(self.config)
        self._store = Store(self.config.db_path)

    async def _serve_automation(self, manager: SessionManager, keys: dict[str, str]) -> str:
        """The automation and live-view endpoint; returns its public base URL."""
        self._automation = AutomationServer(manager, keys)
        host, port = split_host_port(self.config.automation_listen, "automation_listen")
        self.automation_port = await self._automation.start(host, port)
        return self.config.public_automation_url or f"ws://{url_host(host)}:{self.automation_port}"

    async def _serve_grpc(self, manager: SessionManager, public: str) -> Servicers:
        server = grpc.aio.server()
        tokens = PageTokens.for_state_dir(self.config.state_dir)
        servicers = Servicers(
            BrowsersServicer(manager, tokens),
            SessionsServicer(manager, public, tokens),
            ProfilesServicer(manager, tokens),
        )
        self._status = WorkerServicer(manager, self.worker_id)
        add_to_server(
            server, servicers.browsers, servicers.sessions, servicers.profiles, self._status
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            [*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME], server
        )
        self.grpc_port = bind_grpc(server, self.config)
        await server.start()
        self._grpc = server
        return servicers

    def _serve_metrics(self) -> None:
        if not self.config.metrics_listen:
            return
        manager, loop = self.manager, asyncio.get_running_loop()
        assert manager is not None

        def snapshot() -> State:
            # Scrapes run on prometheus-client's thread; the state is read
            # on the event loop, which owns it.
            return asyncio.run_coroutine_threadsafe(manager.state(), loop).result(10)

        def ready() -> bool:
            return self._serving and manager is not None and not manager.draining

        self.metrics.watch(snapshot)
        host, port = split_host_port(self.config.metrics_listen, "metrics_listen")
        self.metrics_port = self.metrics.serve(host, port, loop_answers(loop), ready)

    async def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            await self._health.set(name, status)

    async def _serve_http_api(self, servicers: Servicers, keys: dict[str, str] | None) -> None:
        """The hosted API over HTTP, on the same servicers as gRPC."""
        config = self.config
        if not config.http_api_listen:
            return
        if keys is not None and not keys:
            log.warning("http_api.no_keys", detail="every request will be refused")
        host, port = split_host_port(config.http_api_listen, "http_api_listen")
        self._http_api = HostedAPI(servicers, keys)
        self.http_api_port = await self._http_api.start(host, port)

    def _write_ready_file(self, public: str) -> None:
        if self.config.ready_file is None:
            return
        body = {
            "grpc": f"127.0.0.1:{self.grpc_port}",
            "grpc_port": self.grpc_port,
            "automation_port": self.automation_port,
            "automation_url": public,
            "pid": os.getpid(),
            "relay_pid": self.relay.pid if self.relay else 0,
            "metrics_port": self.metrics_port,
            "http_api_port": self.http_api_port,
            "worker_id": self.worker_id,
            "link_port": self.link_port,
        }
        tmp = self.config.ready_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(self.config.ready_file)

    async def stop(self, drain_timeout: float | None = None) -> None:
        """The shutdown sequence; idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._serving = False
        timeout = self.config.drain_timeout_s if drain_timeout is None else drain_timeout
        # 1. Probes and orchestrators stop sending sessions.
        await self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        # 2. Refuse new sessions, wait for running ones, close the rest,
        #    flush their recordings.
        if self.manager is not None:
            await self.manager.stop(timeout)
        # 3. The relay, after the sessions: their listeners are closed.
        if self.relay is not None:
            await self.relay.stop()
        with contextlib.suppress(OSError):  # the sessions' TMPDIR root, if empty
            self.config.session_tmp_root.rmdir()
        # 4. The front doors, then metrics.
        if self._http_api is not None:
            await self._http_api.stop()
        if self._automation is not None:
            await self._automation.stop()
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0)
        if self._link is not None:
            await self._link.stop()
        await asyncio.to_thread(self.metrics.stop)
        if self._spans is not None:
            await asyncio.to_thread(self._spans.shutdown)  # flushes what is left
        # 5. The fleet hears the last of this worker (every record copied),
        #    then the stores close, then the lock another worker may take.
        if self.member is not None:
            await self.member.stop()
        if self._shared is not None:
            await self._shared.close()
        if self._store is not None:
            self._store.close()
        if self._lock is not None:
            self._lock.close()
        log.info("worker.stopped", worker_id=self.worker_id)


async def _open_shared(config: Config) -> PostgresStore:
    try:
        return await PostgresStore.open(config.store_url, config.store_timeout_s)
    except Unavailable as exc:
        raise ConfigError(f"store_url: {exc.reason}") from None


def _advertised_host(listen: str) -> str:
    """How other machines reach a listener: its host, or this machine's
    name when it listens on every address."""
    host, _ = split_host_port(listen, "grpc_listen")
    return socket.getfqdn() if host in ("0.0.0.0", "::") else url_host(host)


def _lock_state_dir(config: Config) -> IO[str]:
    lock = open(config.state_dir / "worker.lock", "w")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise ConfigError(
            f"state_dir: {config.state_dir} is in use by another running worker"
        ) from None
    return lock


async def serve(config: Config) -> None:
    """Run a worker until SIGTERM or SIGINT, then shut it down in order."""
    await run_until_signalled(WorkerServer(config), "worker.signal")
