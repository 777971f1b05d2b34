"""The session manager: browsers, the live-session registry, capacity, drain.

It owns which sessions exist and how many may run; a `Session` owns its own
lifecycle. Capacity counts starting sessions too, so a burst of starts cannot
overshoot it. Start is shielded from its caller: a client that goes away mid
start never leaves a half-started browser behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import structlog

from certstore import validate as certstore_validate
from certstore.nssdb import NSSStores
from certstore.validate import CACertificate, CertificateError
from worker import ids
from worker.browser import reaper, users
from worker.browser.cgroups import Cgroups, Limits
from worker.config import Config, ConfigError
from worker.errors import (
    AlreadyExists,
    BrowserStartError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
    WorkerError,
)
from worker.metrics import LiveSession, Metrics, State
from worker.network import netns
from worker.network.control import RelayControl
from worker.network.routing import ProxyConfig
from worker.sessions import secret_resolver, session_recording
from worker.sessions.model import (
    DEFAULT_BROWSER_ID,
    DISABLED,
    START_FAILED,
    STOPPED,
    TERMINATED,
    WORKER_RESTARTED,
    WORKER_SHUTDOWN,
    BrowserConfig,
    Recording,
    SessionRecord,
    StartRequest,
    Viewport,
)
from worker.sessions.pool import WarmPool
from worker.sessions.secret_resolver import SecretResolver
from worker.sessions.session import Session, remove_tree, sweep
from worker.sessions.store import Store

log = structlog.get_logger(__name__)

ARN_PREFIX = "arn:aws:bedrock-agentcore:local:000000000000:browser/"


def sandbox_plan(config: Config) -> users.Plan:
    """Chromium's sandbox, and a uid per browser when the daemon is root."""
    try:
        # Live and pooled browsers are bounded by max_sessions; closing ones
        # keep their uid until their sweep is done, hence the headroom.
        plan = users.plan(
            config.browser_sandbox, config.browser_uid_base, 2 * config.max_sessions + 16
        )
    except users.SandboxUnavailable as exc:
        raise ConfigError(f"browser_sandbox: 'on', but {exc}") from None
    if plan.chromium_sandbox:
        log.info("worker.browser_sandbox", users="per browser" if plan.uids else "daemon's")
    else:
        log.warning("worker.browser_sandbox_off", reason=plan.reason)
    return plan


def session_cgroups(config: Config) -> Cgroups | None:
    wanted = Limits(config.session_memory_mb * 1024 * 1024, config.session_cpus)
    if not wanted.memory_bytes and not wanted.cpus:
        return None  # not asked for: nothing to say
    name = config.session_tmp_root.name  # one worker's, per state directory
    found = Cgroups.discover(name, wanted)
    if isinstance(found, str):
        log.warning("worker.session_limits_off", reason=found)
        return None
    log.info(
        "worker.session_limits",
        cgroup_version=found.version,
        memory_mb=config.session_memory_mb,
        cpus=config.session_cpus,
    )
    return found


class SessionManager:
    def __init__(
        self,
        config: Config,
        store: Store,
        relay: RelayControl | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.relay = relay
        self.metrics = metrics or Metrics()
        self.secrets = SecretResolver(config.secrets_dir, config.secret_timeout_s)
        self.trust = NSSStores(config.state_dir / "nss-cache")
        self.recorder = session_recording.recorder(config, self.metrics)
        self.sandbox = sandbox_plan(config)
        if config.network_isolation == "namespace" and (why := netns.probe()):
            raise ConfigError(f"network_isolation: 'namespace', but {why}")
        self.cgroups = session_cgroups(config)
        self.live: dict[str, Session] = {}
        self.draining = False
        self._idle = asyncio.Event()
        self._idle.set()
        self._starts: dict[tuple[str, str], asyncio.Task[Session]] = {}
        self.pool = WarmPool(
            config.warm_pool_sizes(),
            self._pooled_browser,
            lambda: len(self.live) + self.pool.count < config.max_sessions,
            config.start_timeout_s,
        )
        self._builtin = BrowserConfig(
            browser_id=DEFAULT_BROWSER_ID,
            name="default",
            description="The built-in browser: exists without CreateBrowser.",
            flavour=config.default_flavour,
            recording=Recording(),
            certificate_arns=(),
            created_at=0.0,
            updated_at=0.0,
            built_in=True,
        )

    @property
    def in_use(self) -> int:
        return len(self.live)

    # -------------------------------------------------------------- recovery

    def recover(self) -> int:
        """Reap what a killed earlier run left: browsers, directories, rows."""
        sessions_dir = self.config.sessions_dir
        sessions_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp_root = self.config.session_tmp_root
        # Browsers name their profile (under the runtime root); helpers may
        # name either tree.
        if self.cgroups is not None:
            self.cgroups.remove_all()  # kills what runs inside them
        killed = reaper.kill_referencing(tmp_root) + reaper.kill_referencing(sessions_dir)
        self.metrics.orphans_reaped.inc(killed)
        leftover = [p for p in sessions_dir.iterdir() if p.is_dir()]
        tmp_root.mkdir(mode=0o711, parents=True, exist_ok=True)
        tmp_root.chmod(0o711)  # whatever an earlier version or the umask made
        for path in leftover:
            sweep(path, tmp_root / path.name, self.config.kill_timeout_s)
        if tmp_root.is_dir():
            for path in tmp_root.iterdir():
                remove_tree(path)
        stale = self.store.unfinished_sessions()
        now = time.time()
        for record in stale:
            record.status = TERMINATED
            record.termination_reason = WORKER_RESTARTED
            record.updated_at = now
            self.store.put_session(record)
        purged = self.store.purge_terminated(now - self.config.session_retention_s)
        if killed or leftover or stale or purged:
            log.warning(
                "worker.recovered",
                processes_killed=killed,
                directories_removed=len(leftover),
                sessions_terminated=len(stale),
                sessions_purged=purged,
            )
        return killed

    # -------------------------------------------------------------- browsers

    def get_browser(self, browser_id: str) -> BrowserConfig:
        if browser_id == DEFAULT_BROWSER_ID:
            return self._builtin
        browser = self.store.get_browser(browser_id)
        if browser is None:
            raise NotFound("browser_identifier", f"no browser '{browser_id}'")
        return browser

    def create_browser(
        self,
        name: str,
        description: str,
        flavour: str,
        recording: Recording,
        certificate_arns: tuple[str, ...],
    ) -> BrowserConfig:
        if name == self._builtin.name or self.store.browser_name_taken(name):
            raise AlreadyExists("name", f"a browser named '{name}' already exists")
        now = time.time()
        browser = BrowserConfig(
            browser_id=ids.new_browser_id(name),
            name=name,
            description=description,
            flavour=flavour,
            recording=recording,
            certificate_arns=certificate_arns,
            created_at=now,
            updated_at=now,
        )
        self.store.put_browser(browser)
        log.info("browser.created", browser_id=browser.browser_id, flavour=flavour)
        return browser

    def list_browsers(self, limit: int, after: str) -> tuple[list[BrowserConfig], str]:
        """The built-in browser first, then created ones by id."""
        head = [self._builtin] if not after else []
        rows = self.store.list_browsers(limit + 1 - len(head), after)
        page = (head + rows)[:limit]
        more = len(head) + len(rows) > limit
        return page, page[-1].browser_id if more and page else ""

    def delete_browser(self, browser_id: str) -> BrowserConfig:
        browser = self.get_browser(browser_id)
        if browser.built_in:
            raise FailedPrecondition("browser_id", "the built-in browser cannot be deleted")
        running = sum(1 for s in self.live.values() if s.record.browser_id == browser_id)
        if running:
            raise FailedPrecondition(
                "browser_id", f"{running} session(s) of this browser are running; stop them first"
            )
        self.store.delete_browser(browser_id)
        log.info("browser.deleted", browser_id=browser_id)
        return browser

    # -------------------------------------------------------------- sessions

    async def start_session(self, request: StartRequest) -> Session | SessionRecord:
        """Start a session; a repeated clientToken returns the first one.

        Returns the live Session, or the stored record when the clientToken
        names a session that has ended since.
        """
        requested_at = time.perf_counter()
        if self.draining:
            raise Unavailable("", "the worker is draining and takes no new sessions")
        browser = self.get_browser(request.browser_id)
        if request.client_token:
            earlier = await self._earlier_start(request)
            if earlier is not None:
                return earlier
        self._check_capacity()
        # Secrets are read before anything starts: a bad one leaves nothing.
        proxy_auth: list[str] = []
        certificates: list[CACertificate] = []
        if request.proxy or request.certificate_arns or browser.certificate_arns:
            proxy_auth, certificates = await asyncio.gather(
                self._proxy_auth(request.proxy), self._certificates(browser, request)
            )
        pooled = self._take_pooled(request, browser)
        if pooled is not None:
            session = pooled
            bring_up = self._claim(pooled, request, browser, certificates, proxy_auth)
        else:
            self._check_capacity(make_room=True)  # again: others may have started
            session = self._new_session(request, browser, proxy_auth, certificates)
            bring_up = self._bring_up(session)
        session.requested_at = requested_at
        task = asyncio.ensure_future(bring_up)
        key = (request.browser_id, request.client_token)
        if request.client_token:
            self._starts[key] = task
            task.add_done_callback(lambda _t: self._starts.pop(key, None))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not request.client_token:
                # Nobody can ever learn this session's token: end it as soon
                # as it is up, instead of leaving it to run until its timeout.
                task.add_done_callback(lambda _t: session.close_soon(STOPPED))
            raise

    def _check_capacity(self, make_room: bool = False) -> None:
        if self.in_use >= self.config.max_sessions:
            raise ResourceExhausted(
                "capacity", f"all {self.config.max_sessions} sessions of this worker are in use"
            )
        # Pooled browsers hold capacity only until a cold start needs it.
        if make_room and self.in_use + self.pool.count >= self.config.max_sessions:
            self.pool.evict_one()

    # -------------------------------------------------------------- warm pool

    def _take_pooled(self, request: StartRequest, browser: BrowserConfig) -> Session | None:
        """A pooled browser of the browser's flavour, if one is idle. Any
        request can use it: its proxy routing, CAs and viewport are applied
        when it is claimed."""
        return self.pool.take(browser.flavour)

    async def _pooled_browser(self, flavour: str) -> Session:
        session_id = ids.new_session_id()
        now = time.time()
        record = SessionRecord(
            session_id=session_id,
            browser_id="",
            name="",
            flavour=flavour,
            timeout_s=0,
            viewport=Viewport(
                self.config.default_viewport_width, self.config.default_viewport_height
            ),
            created_at=now,
            updated_at=now,
            session_dir=str(self.config.sessions_dir / session_id),
        )
        session = Session(
            record,
            "",
            self.config,
            _no_record,
            self.pool.discard,
            relay=self.relay,
            trust=self.trust,
            metrics=self.metrics,
            pooled=True,
            sandbox=self.sandbox,
            cgroups=self.cgroups,
        )
        try:
            await session.launch()
        except BaseException:
            await session.close(START_FAILED)
            raise
        return session

    async def _claim(
        self,
        session: Session,
        request: StartRequest,
        browser: BrowserConfig,
        certificates: list[CACertificate],
        proxy_auth: list[str],
    ) -> Session:
        record = self._record(request, browser, session.session_id)
        self.live[session.session_id] = session
        self._idle.clear()
        try:
            recording = None
            if browser.recording.enabled:
                recording = session_recording.start(self.recorder, browser, record)
            await session.claim(
                record,
                ids.new_token(),
                certificates,
                proxy_auth,
                self.store.put_session,
                self._evict,
                recording,
            )
        except BaseException as exc:
            await session.close(START_FAILED)
            if isinstance(exc, asyncio.CancelledError | WorkerError):
                raise
            raise BrowserStartError("", f"the browser did not start: {exc}") from None
        self.metrics.sessions_started.labels(record.flavour, "warm").inc()
        session.log.info("session.started", flavour=record.flavour, warm=True)
        return session

    async def _proxy_auth(self, proxy: ProxyConfig | None) -> list[str]:
        """Each proxy's Proxy-Authorization value ("" without credentials)."""
        if proxy is None:
            return []

        async def resolve(index: int, ref: str) -> str:
            if not ref:
                return ""
            field = (
                f"proxy_configuration.proxies[{index}].external_proxy"
                ".credentials.basic_auth.secret_arn"
            )
            text = await self.secrets.fetch(field, ref)
            return secret_resolver.basic_credentials(field, ref, text)

        return list(
            await asyncio.gather(*(resolve(i, p.secret_ref) for i, p in enumerate(proxy.proxies)))
        )

    async def _earlier_start(self, request: StartRequest) -> Session | SessionRecord | None:
        key = (request.browser_id, request.client_token)
        in_flight = self._starts.get(key)
        if in_flight is not None:
            session = await asyncio.shield(in_flight)
            _check_same_request(session.record, request)
            return session
        record = self.store.find_by_client_token(request.browser_id, request.client_token)
        if record is None:
            return None
        _check_same_request(record, request)
        return self.live.get(record.session_id, record)

    async def _certificates(
        self, browser: BrowserConfig, request: StartRequest
    ) -> list[CACertificate]:
        """The browser's CAs, then the session's, each read and checked."""
        refs = [
            (f"{prefix}certificates[{i}].location.secrets_manager.secret_arn", arn)
            for prefix, arns in (
                ("browser.", browser.certificate_arns),
                ("", request.certificate_arns),
            )
            for i, arn in enumerate(arns)
        ]
        texts = await asyncio.gather(*(self.secrets.fetch(field, ref) for field, ref in refs))
        checked: list[CACertificate] = []
        for (field, ref), text in zip(refs, texts, strict=True):
            try:
                checked += certstore_validate.parse(text)
            except CertificateError as err:
                raise InvalidArgument(field, f"secret '{ref}' {err.reason}") from None
        return checked

    def _new_session(
        self,
        request: StartRequest,
        browser: BrowserConfig,
        proxy_auth: list[str],
        certificates: list[CACertificate],
    ) -> Session:
        session_id = ids.new_session_id()
        record = self._record(request, browser, session_id)
        recording = None
        if browser.recording.enabled:
            recording = session_recording.start(self.recorder, browser, record)
        session = Session(
            record,
            ids.new_token(),
            self.config,
            self.store.put_session,
            self._evict,
            self.relay,
            proxy_auth,
            self.trust,
            certificates,
            self.metrics,
            recording=recording,
            sandbox=self.sandbox,
            cgroups=self.cgroups,
        )
        self.live[session_id] = session
        self._idle.clear()
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

    def _evict(self, session: Session) -> None:
        self.live.pop(session.session_id, None)
        if not self.live:
            self._idle.set()
        self.pool.wake()  # a slot is free: the pool may refill

    def find(self, browser_id: str, session_id: str) -> SessionRecord:
        live = self.live.get(session_id)
        record = live.record if live else self.store.get_session(session_id)
        if record is None or record.browser_id != browser_id:
            raise NotFound("session_id", f"no session '{session_id}' of browser '{browser_id}'")
        return record

    def list_sessions(
        self, browser_id: str, status: str | None, limit: int, before: str
    ) -> tuple[list[SessionRecord], str]:
        self.get_browser(browser_id)
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
        record = self.find(browser_id, session_id)
        live = self.live.get(session_id)
        if live is None:
            raise FailedPrecondition("session_id", f"session '{session_id}' has ended")
        if status not in ("ENABLED", "DISABLED"):
            raise InvalidArgument(
                "stream_update.automation_stream_update.stream_status",
                "must be ENABLED or DISABLED",
            )
        record.stream_status = status
        record.updated_at = time.time()
        self.store.put_session(record)
        if status == DISABLED and live.mux is not None:
            live.mux.close_all(1008, "automation stream disabled")
        live.log.info("session.stream_updated", stream_status=status)
        return record

    def stream_session(self, browser_id: str, session_id: str) -> Session | None:
        """The live session an automation client asks for, if any."""
        session = self.live.get(session_id)
        if session is None or session.record.browser_id != browser_id or session.mux is None:
            return None
        return session

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
        proxy = await self.relay.traffic() if self.relay is not None else {}
        return State(
            capacity=self.config.max_sessions,
            draining=self.draining,
            pooled=self.pool.count,
            sessions=sessions,
            proxy=proxy,
            relay_restarts=self.relay.restarts if self.relay is not None else 0,
            spool_bytes=self.recorder.meter.used,
            uploads_pending=self.recorder.uploader.pending,
        )

    # -------------------------------------------------------------- shutdown

    async def drain(self, timeout: float) -> None:
        """Refuse new sessions, wait for running ones, then stop the rest."""
        self.draining = True
        log.info("worker.draining", sessions=self.in_use, timeout_s=timeout)
        await self.pool.close()  # pooled browsers are nobody's session yet
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._idle.wait(), timeout)
        await self.close_all(WORKER_SHUTDOWN)

    async def close_all(self, reason: str) -> None:
        await self.pool.close()
        sessions = list(self.live.values())
        results = await asyncio.gather(*(s.close(reason) for s in sessions), return_exceptions=True)
        for session, result in zip(sessions, results, strict=True):
            if isinstance(result, BaseException):
                session.log.error("session.close_failed", error=repr(result))


def _no_record(_record: SessionRecord) -> None:
    """A pooled browser has no session to persist until one claims it."""


def _check_same_request(record: SessionRecord, request: StartRequest) -> None:
    if record.request_fingerprint != request.fingerprint():
        raise AlreadyExists("client_token", "already used with a different request")
