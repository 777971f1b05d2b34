"""The session manager: browsers, the live-session registry, capacity, drain.

It owns which sessions exist and how many may run; a `Session` owns its own
lifecycle and reports its end by the one event the manager subscribes to.
Capacity counts starting sessions too, so a burst of starts cannot
overshoot it. Start is shielded from its caller: a client that goes away mid
start never leaves a half-started browser behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any

import structlog

from certstore.validate import CACertificate
from worker import ids
from worker.browser.cgroups import Cgroups
from worker.browser.users import Plan
from worker.cdp.actions import Action, Result
from worker.config import Config
from worker.errors import (
    AlreadyExists,
    BrowserStartError,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unavailable,
    WorkerError,
)
from worker.metrics import LiveSession, Metrics, State
from worker.network.control import RelayControl
from worker.sessions import recovery, session_recording, start_addons, start_secrets
from worker.sessions.browsers import BrowserCatalog
from worker.sessions.host import HostServices
from worker.sessions.memory_budget import MemoryBudget
from worker.sessions.model import (
    DISABLED,
    START_FAILED,
    STARTING,
    STOPPED,
    WORKER_RESTARTED,
    WORKER_SHUTDOWN,
    BrowserConfig,
    PolicyFile,
    ProfileRecord,
    RecordingConfig,
    SessionRecord,
    Started,
    StartRequest,
)
from worker.sessions.pool import PooledBrowser, WarmPool
from worker.sessions.profiles import ProfileCatalog
from worker.sessions.registry import Registry
from worker.sessions.retention import Retention
from worker.sessions.session import Session
from worker.sessions.shared_store import LocalShared, SessionIndex, SharedStore
from worker.sessions.store import Store

log = structlog.get_logger(__name__)

ARN_PREFIX = "arn:aws:bedrock-agentcore:local:000000000000:browser/"
# A sweep kills twice (each bounded by kill_timeout_s) and removes two trees.
SWEEP_WAIT_KILL_TIMEOUTS = 3


class SessionManager:
    def __init__(
        self,
        config: Config,
        store: Store,
        relay: RelayControl | None = None,
        metrics: Metrics | None = None,
        shared: SharedStore | None = None,
        index: SessionIndex | None = None,
    ) -> None:
        self.config = config
        self.store = store  # this worker's own sessions, for recovery
        self._index = index  # a fleet's: where each session runs
        shared = shared or LocalShared(store)  # browsers and profiles
        self.host = HostServices.build(config, store, relay, metrics or Metrics())
        self.registry = Registry(config.max_sessions)
        self.draining = False
        self._starts: dict[tuple[str, str], asyncio.Task[Session]] = {}
        self.pool = WarmPool(
            config.warm_pool_sizes(), self.host, self.registry, config.start_timeout_s
        )
        self.browsers = BrowserCatalog(config, shared, self.registry)
        self.profiles = ProfileCatalog(config, shared)
        self.retention = Retention(config, store)
        # Without a cgroup per session, a memory limit is held by sampling.
        self.memory_budget = (
            MemoryBudget(config, self.host.metrics, lambda: list(self.live.values()))
            if config.session_memory_mb and self.host.cgroups is None
            else None
        )

    # What other parts (metrics, the servicers, tests) read of the host.
    @property
    def metrics(self) -> Metrics:
        return self.host.metrics

    @property
    def relay(self) -> RelayControl | None:
        return self.host.relay

    @property
    def sandbox(self) -> Plan:
        return self.host.sandbox

    @property
    def cgroups(self) -> Cgroups | None:
        return self.host.cgroups

    @property
    def live(self) -> dict[str, Session]:
        return self.registry.live

    @property
    def in_use(self) -> int:
        return len(self.live)

    # -------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Reap what a killed earlier run left, pick up its spooled
        recordings, then start filling the pool."""
        self.recover()
        # Uploaded and finished in the background; the ones it was still
        # writing are marked incomplete.
        spooled = await self.host.recorder.recover(WORKER_RESTARTED)
        if spooled:
            log.warning("worker.recordings_recovered", sessions=spooled)
        self.pool.start()
        self.retention.start()
        if self.memory_budget is not None:
            self.memory_budget.start()

    async def stop(self, drain_timeout: float) -> None:
        """Drain, then release what the sessions shared: their cgroups, and
        the recorder (after the sessions: their last batches are spooled)."""
        await self.drain(drain_timeout)
        await self.retention.stop()
        if self.memory_budget is not None:
            await self.memory_budget.stop()  # after the drain: sessions ran till then
        if self.cgroups is not None:
            self.cgroups.close()  # every session's cgroup is gone
        flushed = await self.host.recorder.stop(self.config.recording_flush_timeout_s)
        if not flushed:
            log.warning("worker.recordings_spooled", detail="uploads resume at next start")

    def recover(self) -> int:
        """Reap what a killed earlier run left: browsers, directories, rows."""
        killed = recovery.reap(self.config, self.store, self.cgroups)
        self.metrics.orphans_reaped.inc(killed)
        return killed

    # -------------------------------------------------------------- browsers

    async def create_browser(
        self,
        name: str,
        description: str,
        flavour: str,
        recording: RecordingConfig,
        certificate_arns: tuple[str, ...],
        policies: tuple[PolicyFile, ...] = (),
    ) -> BrowserConfig:
        """A new browser. Its CAs and policy files are read and checked now,
        so that one none of its sessions could use is refused here, not at
        every Start."""
        if policies and self.host.policies_refused:
            raise FailedPrecondition(
                "enterprise_policies",
                f"this worker cannot give a browser policies of its own: "
                f"{self.host.policies_refused}",
            )
        await asyncio.gather(
            start_secrets.read_certificates(self.host.secrets, "certificates", certificate_arns),
            start_addons.read_policies(self.host, "enterprise_policies", policies),
        )
        return await self.browsers.create(
            name, description, flavour, recording, certificate_arns, policies
        )

    # -------------------------------------------------------------- sessions

    async def start_session(self, request: StartRequest) -> Started:
        """Start a session; a repeated clientToken returns the first one,
        live or ended."""
        requested_at = time.perf_counter()
        if self.draining:
            raise Unavailable("", "the worker is draining and takes no new sessions")
        browser = await self.browsers.get(request.browser_id)
        if request.client_token:
            earlier = await self._earlier_start(request)
            if earlier is not None:
                return earlier
        self._check_capacity()
        # Secrets are read before anything starts: a bad one leaves nothing.
        proxy_auth: list[str] = []
        certificates: list[CACertificate] = []
        if request.proxy or request.certificate_arns or browser.certificate_arns:
            secrets = self.host.secrets
            proxy_auth, certificates = await asyncio.gather(
                start_secrets.proxy_authorizations(secrets, request.proxy),
                start_secrets.certificates(secrets, browser, request),
            )
        profile = await self._profile_state(request.profile_id)
        addons = None
        if start_addons.wanted(browser, request):
            addons = await start_addons.read(self.host, browser, request)
        # A pooled browser was launched without extensions or policies.
        pooled = self.pool.take(browser.flavour) if addons is None else None
        if pooled is not None:
            session = self._claim(pooled, request, browser)
            bring_up = self._take_over(session, browser, certificates, proxy_auth)
        else:
            self._check_capacity(make_room=True)  # again: others may have started
            session = self._new_session(request, browser, proxy_auth, certificates, addons)
            bring_up = self._bring_up(session)
        session.profile_state = profile
        session.requested_at = requested_at
        if self._index is not None:
            bring_up = self._indexed(session, bring_up, self._index)
        task = asyncio.ensure_future(bring_up)
        key = (request.browser_id, request.client_token)
        if request.client_token:
            self._starts[key] = task
            task.add_done_callback(lambda _t: self._starts.pop(key, None))
        try:
            started = await asyncio.shield(task)
        except asyncio.CancelledError:
            if not request.client_token:
                # Nobody can ever learn this session's token: end it as soon
                # as it is up, instead of leaving it to run until its timeout.
                task.add_done_callback(lambda _t: session.close_soon(STOPPED))
            raise
        finally:
            # A failed start's error, raised here from the task that holds
            # it, has this frame in its traceback: without the task among
            # this frame's locals, no cycle keeps the failed session.
            del task
        return Started(started.record, started.token)

    async def _indexed(
        self, session: Session, bring_up: Awaitable[Session], index: SessionIndex
    ) -> Session:
        """The fleet learns where the session runs while it comes up (the
        store's write overlaps the browser's work), and before anyone is told
        of it: a session no gateway could route to is closed, not left to
        run unreachable until its timeout."""
        entered = asyncio.ensure_future(index.session_started(session.record, session.token))
        try:
            started = await bring_up
        finally:
            # A failed start leaves at most a row without a record, which
            # List skips and Get answers from this worker.
            with contextlib.suppress(Exception):
                await asyncio.shield(entered)
        error = entered.exception()
        if error is None:
            return started
        await started.close(START_FAILED)
        try:
            raise error
        finally:
            # The error's traceback holds this frame: without these locals
            # (the task that holds the error, the session), no cycle keeps
            # the closed session for the cycle collector to find.
            del error, entered, started

    async def _profile_state(self, profile_id: str) -> dict[str, Any] | None:
        if not profile_id:
            return None
        try:
            return await self.profiles.state(profile_id)
        except NotFound:
            raise NotFound(
                "profile_configuration.profile_identifier", f"no browser profile '{profile_id}'"
            ) from None

    async def save_profile(
        self, profile_id: str, browser_id: str, session_id: str
    ) -> ProfileRecord:
        """SaveBrowserSessionProfile: the live session's state replaces the
        profile's."""
        await self.profiles.get(profile_id)
        self.find(browser_id, session_id)
        live = self.live.get(session_id)
        if live is None:
            raise FailedPrecondition("session_id", f"session '{session_id}' is not READY")
        state = await live.capture_profile()
        saved = await self.profiles.save(profile_id, state, session_id, browser_id)
        live.log.info(
            "session.profile_saved",
            profile_id=profile_id,
            cookies=len(state["cookies"]),
            origins=len(state["localStorage"]),
            bytes=saved.saved_bytes,
        )
        return saved

    def _check_capacity(self, make_room: bool = False) -> None:
        if self.in_use >= self.config.max_sessions:
            raise ResourceExhausted(
                "capacity", f"all {self.config.max_sessions} sessions of this worker are in use"
            )
        # Pooled browsers hold capacity only until a cold start needs it.
        if make_room and not self.registry.fits(self.pool.count):
            self.pool.evict_one()

    def _register(self, session: Session) -> None:
        """Count the session from now on; forget it the moment it ends."""
        self.registry.add(session)
        session.subscribe(self._ended)

    def _ended(self, session: Session) -> None:
        self.registry.remove(session)
        self.pool.wake()  # a slot is free: the pool may refill

    def _claim(
        self, pooled: PooledBrowser, request: StartRequest, browser: BrowserConfig
    ) -> Session:
        """Any request can use a pooled browser of its flavour: its proxy
        routing, CAs and viewport are applied by `_take_over`."""
        session = pooled.claim(self._record(request, browser, pooled.session_id), ids.new_token())
        self._register(session)
        return session

    async def _take_over(
        self,
        session: Session,
        browser: BrowserConfig,
        certificates: list[CACertificate],
        proxy_auth: list[str],
    ) -> Session:
        try:
            recording = None
            if browser.recording.enabled:
                recording = session_recording.start(self.host.recorder, browser, session.record)
            await session.take_over(certificates, proxy_auth, recording)
        except BaseException as exc:
            await session.close(START_FAILED)
            if isinstance(exc, asyncio.CancelledError | WorkerError):
                raise
            raise BrowserStartError("", f"the browser did not start: {exc}") from None
        self.metrics.sessions_started.labels(session.record.flavour, "warm").inc()
        session.log.info("session.started", flavour=session.record.flavour, warm=True)
        return session

    async def _earlier_start(self, request: StartRequest) -> Started | None:
        key = (request.browser_id, request.client_token)
        in_flight = self._starts.get(key)
        if in_flight is not None:
            session = await asyncio.shield(in_flight)
            _check_same_request(session.record, request)
            return Started(session.record, session.token)
        record = self.store.find_by_client_token(request.browser_id, request.client_token)
        if record is None:
            return None
        _check_same_request(record, request)
        live = self.live.get(record.session_id)
        return Started(live.record, live.token) if live else Started(record, "")

    def _new_session(
        self,
        request: StartRequest,
        browser: BrowserConfig,
        proxy_auth: list[str],
        certificates: list[CACertificate],
        addons: start_addons.Addons | None,
    ) -> Session:
        record = self._record(request, browser, ids.new_session_id())
        recording = None
        if browser.recording.enabled:
            recording = session_recording.start(self.host.recorder, browser, record)
        session = Session(
            record,
            ids.new_token(),
            self.host,
            proxy_auth=proxy_auth,
            certificates=certificates,
            recording=recording,
            addons=addons,
        )
        self._register(session)
        self.store.put_session(record)
        return session

    def _record(
        self, request: StartRequest, browser: BrowserConfig, session_id: str
    ) -> SessionRecord:
        now = time.time()
        return SessionRecord(
            session_id=session_id,
            browser_id=browser.browser_id,
            name=request.name,
            flavour=browser.flavour,
            timeout_s=request.timeout_s,
            viewport=request.viewport,
            created_at=now,
            updated_at=now,
            client_token=request.client_token,
            request_fingerprint=request.fingerprint(),
            session_dir=str(self.config.sessions_dir / session_id),
            proxy=request.proxy.to_dict() if request.proxy else None,
            certificate_arns=[*browser.certificate_arns, *request.certificate_arns],
            trace_id=request.trace_id,
            trace_parent=request.trace_parent,
            extensions=[e.to_dict() for e in request.extensions],
            policies=[p.to_dict() for p in request.policies],
            profile_id=request.profile_id,
        )

    async def _bring_up(self, session: Session) -> Session:
        started = time.perf_counter()
        try:
            # Fails here only when the process cannot be spawned (posix_spawn
            # reports exec errors); later failures end the session itself.
            await session.start()
        except BaseException as exc:
            await session.close(START_FAILED)
            if isinstance(exc, asyncio.CancelledError | WorkerError):
                raise
            session.log.warning("session.start_failed", error=str(exc))
            raise BrowserStartError("", f"the browser did not start: {exc}") from None
        self.metrics.sessions_started.labels(session.record.flavour, "cold").inc()
        session.log.info(
            "session.started",
            flavour=session.record.flavour,
            spawn_ms=round((time.perf_counter() - started) * 1000, 1),
        )
        return session

    def find(self, browser_id: str, session_id: str) -> SessionRecord:
        live = self.live.get(session_id)
        record = live.record if live else self.store.get_session(session_id)
        if record is None or record.browser_id != browser_id:
            raise NotFound("session_id", f"no session '{session_id}' of browser '{browser_id}'")
        return record

    async def list_sessions(
        self, browser_id: str, status: str | None, limit: int, before: str
    ) -> tuple[list[SessionRecord], str]:
        await self.browsers.get(browser_id)
        rows = self.store.list_sessions(browser_id, status, limit + 1, before)
        page = rows[:limit]
        return page, page[-1].session_id if len(rows) > limit else ""

    async def stop_session(self, browser_id: str, session_id: str) -> SessionRecord:
        record = self.find(browser_id, session_id)
        live = self.live.get(session_id)
        if live is not None:
            await live.stop(STOPPED)
        return record

    def update_stream(self, browser_id: str, session_id: str, status: str) -> SessionRecord:
        """Turn a session's automation stream ENABLED or DISABLED (checked at
        the edge); DISABLED closes its clients."""
        record = self.find(browser_id, session_id)
        live = self.live.get(session_id)
        if live is None:
            raise FailedPrecondition("session_id", f"session '{session_id}' has ended")
        record.stream_status = status
        record.updated_at = time.time()
        self.store.put_session(record)
        if status == DISABLED and live.mux is not None:
            live.mux.close_all(1008, "automation stream disabled")
        live.log.info("session.stream_updated", stream_status=status)
        return record

    async def invoke(self, browser_id: str, session_id: str, action: Action) -> Result:
        """One InvokeBrowser action on a live session (checked at the edge)."""
        self.find(browser_id, session_id)
        live = self.live.get(session_id)
        if live is None:
            raise NotFound("session_id", f"session '{session_id}' has ended")
        result = await live.invoke(action)
        live.log.info("session.invoked", action=action.kind, ok=result.ok)
        return result

    def stream_session(self, browser_id: str, session_id: str) -> Session | None:
        """The live session an automation client asks for, if any."""
        session = self.live.get(session_id)
        if session is None or session.record.browser_id != browser_id or session.mux is None:
            return None
        return session

    def room(self) -> dict[str, Any]:
        """What a fleet's placement reads of this worker."""
        return {
            "capacity": self.config.max_sessions,
            "in_use": self.in_use,
            "starting": sum(1 for s in self.live.values() if s.record.status == STARTING),
            "warm": {flavour: len(idle) for flavour, idle in self.pool.idle.items()},
            "draining": self.draining,
            "default_flavour": self.config.default_flavour,  # the built-in browser's
        }

    async def state(self) -> State:
        """What a metrics scrape reports (taken on the event loop)."""
        sessions = tuple(
            LiveSession(
                s.session_id,
                s.record.browser_id,
                s.record.flavour,
                s.record.pid,
                len(s.mux.clients) if s.mux else 0,
            )
            for s in list(self.live.values())
        )
        relay = self.relay
        return State(
            capacity=self.config.max_sessions,
            draining=self.draining,
            pooled=self.pool.count,
            sessions=sessions,
            proxy=await relay.traffic() if relay is not None else {},
            relay_restarts=relay.restarts if relay is not None else 0,
            spool_bytes=self.host.recorder.meter.used,
            uploads_pending=self.host.recorder.uploader.pending,
        )

    # -------------------------------------------------------------- shutdown

    async def drain(self, timeout: float) -> None:
        """Refuse new sessions, wait for running ones, then stop the rest."""
        self.draining = True
        log.info("worker.draining", sessions=self.in_use, timeout_s=timeout)
        await self.pool.close()  # pooled browsers are nobody's session yet
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.registry.idle.wait(), timeout)
        await self.close_all(WORKER_SHUTDOWN)

    async def close_all(self, reason: str) -> None:
        await self.pool.close()
        sessions = list(self.live.values())
        results = await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, BaseException):
                session.log.error("session.close_failed", error=repr(result))
        # Sessions that ended before (a Stop answers before their directories
        # are gone) may still be sweeping: a daemon that exits now would
        # leave their directories behind.
        await self.registry.wait_closed(SWEEP_WAIT_KILL_TIMEOUTS * self.config.kill_timeout_s)


def _check_same_request(record: SessionRecord, request: StartRequest) -> None:
    if record.request_fingerprint != request.fingerprint():
        raise AlreadyExists("client_token", "already used with a different request")
