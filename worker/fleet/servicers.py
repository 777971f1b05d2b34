"""The gateway's gRPC services: the worker's API, answered for the whole
fleet. Get and List read the shared store; a Start is placed on a worker;
everything about one session goes to the worker that holds it; browsers and
profiles, shared in the store, go to any worker. Answers carry the gateway's
endpoint URLs (or the worker's own, with `gateway_direct_endpoints`), and a
worker's refusals come back exactly as the worker gave them.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import structlog

from worker import __version__
from worker.api import convert, validation
from worker.api.automation import endpoint_path, live_view_path
from worker.api.paging import PageTokens
from worker.api.rpc import rpc
from worker.config import Config
from worker.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
    Unavailable,
)
from worker.fleet.directory import Directory
from worker.fleet.forward import Forwarder, WorkerUnreachable
from worker.fleet.metrics import GatewayMetrics
from worker.fleet.placement import WorkerView
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.sessions.model import DEFAULT_BROWSER_ID, TERMINATED, SessionRecord
from worker.sessions.postgres_store import PostgresStore

# Workers a Start tries before the fleet is called full.
MAX_PLACEMENT_TRIES = 3
CALL_TIMEOUT_S = 60.0


@dataclasses.dataclass
class Fleet:
    """What the gateway's servicers share."""

    config: Config
    store: PostgresStore
    directory: Directory
    forward: Forwarder
    metrics: GatewayMetrics
    endpoint_base: str  # ws://gateway:port, for automation endpoints
    tokens: PageTokens = dataclasses.field(init=False)

    def __post_init__(self) -> None:
        self.tokens = PageTokens(self.store.page_key)  # valid at every gateway

    @property
    def page_base(self) -> str:
        return re.sub(r"^ws", "http", self.endpoint_base)

    def any_worker(self) -> WorkerView:
        """A worker for calls any of them answers (browsers, profiles)."""
        fresh = sorted(self.directory.fresh(), key=lambda w: (w.draining, w.in_use))
        if not fresh:
            raise Unavailable("", "no worker of the fleet is reachable")
        return fresh[0]

    async def on_any_worker(self, service: str, method: str, request: Any) -> Any:
        """A call about browsers or profiles (kept in the store): any
        worker answers it."""
        return await self.forward.call(
            self.any_worker(), service, method, request, CALL_TIMEOUT_S, _request_id()
        )

    def owner(self, worker_id: str) -> WorkerView | None:
        view = self.directory.workers.get(worker_id)
        return view if view is not None and view.fresh(self.directory.lost_after_s) else None

    def public(self, session: pb.BrowserSession, owner: WorkerView | None) -> pb.BrowserSession:
        """A session answer with this fleet's endpoints."""
        base = self.endpoint_base
        if self.config.gateway_direct_endpoints and owner is not None:
            base = owner.automation
        page = re.sub(r"^ws", "http", base)
        ids = (session.browser_identifier, session.session_id)
        session.streams.automation_stream.stream_endpoint = base + endpoint_path(*ids)
        session.streams.live_view_stream.stream_endpoint = page + live_view_path(*ids)
        return session

    def record_to_pb(self, record: SessionRecord, owner: WorkerView | None) -> pb.BrowserSession:
        message = convert.session_to_pb(record, "", self.endpoint_base, self.page_base)
        return self.public(message, owner)


class _Served:
    _fleet: Fleet

    @property
    def metrics(self) -> GatewayMetrics:
        return self._fleet.metrics


def _request_id() -> str:
    """The id this call is logged under here (the caller's x-request-id,
    or one the gateway made): the worker logs the forwarded call under it."""
    return str(structlog.contextvars.get_contextvars().get("request_id", ""))


class FleetSessions(pb_grpc.BrowserSessionsServicer, _Served):
    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    @rpc
    async def StartBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        fleet = self._fleet
        browser_id = validation.browser_id(request.browser_identifier or DEFAULT_BROWSER_ID)
        # Checked here, as the worker would: the claim below stores it.
        token = validation.client_token(request.client_token)
        if not fleet.directory.reachable:
            raise Unavailable("", f"the fleet's store at {fleet.store.where} is unavailable")
        order = fleet.directory.candidates(await self._flavour(browser_id))
        if token and order:
            order = await self._claimed_first(browser_id, token, order)
        last: Exception | None = None
        for worker in order[:MAX_PLACEMENT_TRIES]:
            try:
                with fleet.directory.starting(worker.worker_id):
                    answer = await fleet.forward.call(
                        worker, "sessions", "StartBrowserSession", request,
                        fleet.config.start_timeout_s + CALL_TIMEOUT_S, _request_id(),
                    )  # fmt: skip
            except (ResourceExhausted, Unavailable) as err:  # full, draining or gone
                last = err
                continue
            if token and worker.worker_id != order[0].worker_id:
                # The claimed worker was full: a repeat of this token must
                # find the session where it runs, not start another there.
                await fleet.store.move_claim(browser_id, token, worker.worker_id)
            return fleet.public(answer, worker)
        capacity, workers = fleet.directory.capacity()
        if not workers:
            raise Unavailable("", "no worker of the fleet is reachable")
        if isinstance(last, Unavailable) and not isinstance(last, WorkerUnreachable):
            raise last  # every worker tried said why (its store, S3, ...)
        raise ResourceExhausted(
            "capacity",
            f"all {capacity} sessions of the fleet's {workers} workers are in use",
        )

    async def _flavour(self, browser_id: str) -> str:
        if browser_id == DEFAULT_BROWSER_ID:
            fresh = self._fleet.directory.fresh()
            return fresh[0].default_flavour if fresh else "chromium"
        browser = await self._fleet.store.get_browser(browser_id)
        if browser is None:
            raise NotFound("browser_identifier", f"no browser '{browser_id}'")
        return browser.flavour

    async def _claimed_first(
        self, browser_id: str, token: str, order: list[WorkerView]
    ) -> list[WorkerView]:
        """A clientToken's Start goes to the worker the first claim chose
        (its own idempotency answers a repeat with the same session)."""
        fleet = self._fleet
        owner_id = await fleet.store.claim_start(browser_id, token, order[0].worker_id)
        owner = fleet.owner(owner_id)
        if owner is None:  # that worker is gone: the token moves on
            await fleet.store.move_claim(browser_id, token, order[0].worker_id)
            return order
        return [owner, *(w for w in order if w.worker_id != owner_id)]

    @rpc
    async def GetBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        browser_id, session_id = self._ids(request)
        record, owner_id = await self._find(browser_id, session_id)
        owner = self._fleet.owner(owner_id)
        if record is not None:
            return self._fleet.record_to_pb(record, owner)
        answer = await self._forward(owner, owner_id, "GetBrowserSession", request, context)
        return self._fleet.public(answer, owner)

    @rpc
    async def ListBrowserSessions(
        self, request: Any, context: Any
    ) -> pb.ListBrowserSessionsResponse:
        fleet = self._fleet
        limit = validation.max_results(request.max_results)
        browser_id = validation.browser_id(request.browser_identifier or DEFAULT_BROWSER_ID)
        listing = f"sessions of {browser_id}"  # a token serves its own listing only
        before = fleet.tokens.read(listing, request.next_token)
        if request.status not in (0, pb.READY, pb.TERMINATED):
            raise InvalidArgument("status", "must be READY or TERMINATED")
        await self._flavour(browser_id)  # NotFound for a browser that is not
        status = pb.SessionStatus.Name(request.status) if request.status else None
        rows = await fleet.store.list_sessions(browser_id, status, limit + 1, before)
        page = rows[:limit]
        last = page[-1].session_id if len(rows) > limit else ""
        return pb.ListBrowserSessionsResponse(
            items=[fleet.record_to_pb(r, None) for r in page],
            next_token=fleet.tokens.issue(listing, last),
        )

    @rpc
    async def StopBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        browser_id, session_id = self._ids(request)
        record, owner_id = await self._find(browser_id, session_id)
        owner = self._fleet.owner(owner_id)
        if owner is None and record is not None and record.status == TERMINATED:
            return self._fleet.record_to_pb(record, None)  # ended with its worker
        answer = await self._forward(owner, owner_id, "StopBrowserSession", request, context)
        return self._fleet.public(answer, owner)

    @rpc
    async def UpdateBrowserStream(self, request: Any, context: Any) -> pb.BrowserSession:
        answer, owner = await self._to_owner("UpdateBrowserStream", request, context)
        return self._fleet.public(answer, owner)

    @rpc
    async def InvokeBrowser(self, request: Any, context: Any) -> pb.InvokeBrowserResponse:
        answer, _ = await self._to_owner("InvokeBrowser", request, context)
        return answer  # type: ignore[no-any-return]

    @rpc
    async def SaveBrowserSessionProfile(
        self, request: Any, context: Any
    ) -> pb.SaveBrowserSessionProfileResponse:
        answer, _ = await self._to_owner("SaveBrowserSessionProfile", request, context)
        return answer  # type: ignore[no-any-return]

    async def _to_owner(
        self, method: str, request: Any, context: Any
    ) -> tuple[Any, WorkerView | None]:
        browser_id, session_id = self._ids(request)
        record, owner_id = await self._find(browser_id, session_id)
        owner = self._fleet.owner(owner_id)
        if owner is None and record is not None and record.status == TERMINATED:
            why = record.termination_reason or TERMINATED
            raise FailedPrecondition("session_id", f"session '{session_id}' ended ({why})")
        return await self._forward(owner, owner_id, method, request, context), owner

    async def _forward(
        self, owner: WorkerView | None, owner_id: str, method: str, request: Any, context: Any
    ) -> Any:
        if owner is None:
            raise Unavailable("session_id", f"the session's worker {owner_id} is not reachable")
        return await self._fleet.forward.call(
            owner, "sessions", method, request, CALL_TIMEOUT_S, _request_id()
        )

    @staticmethod
    def _ids(request: Any) -> tuple[str, str]:
        browser_id = validation.browser_id(request.browser_identifier or DEFAULT_BROWSER_ID)
        return browser_id, validation.session_id(request.session_id)

    async def _find(self, browser_id: str, session_id: str) -> tuple[SessionRecord | None, str]:
        found = await self._fleet.store.find_session(session_id)
        if found is None or (found[0] is not None and found[0].browser_id != browser_id):
            raise NotFound("session_id", f"no session '{session_id}' of browser '{browser_id}'")
        return found


class FleetBrowsers(pb_grpc.BrowsersServicer, _Served):
    """Browsers live in the shared store: any worker answers for them."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    @rpc
    async def CreateBrowser(self, request: Any, context: Any) -> pb.Browser:
        return await self._fleet.on_any_worker("browsers", "CreateBrowser", request)  # type: ignore[no-any-return]

    @rpc
    async def GetBrowser(self, request: Any, context: Any) -> pb.Browser:
        return await self._fleet.on_any_worker("browsers", "GetBrowser", request)  # type: ignore[no-any-return]

    @rpc
    async def ListBrowsers(self, request: Any, context: Any) -> pb.ListBrowsersResponse:
        return await self._fleet.on_any_worker("browsers", "ListBrowsers", request)  # type: ignore[no-any-return]

    @rpc
    async def DeleteBrowser(self, request: Any, context: Any) -> pb.Browser:
        browser_id = validation.browser_id(request.browser_id, "browser_id")
        running = await self._fleet.store.running_sessions_of(browser_id)
        if running:
            raise FailedPrecondition(
                "browser_id", f"{running} session(s) of this browser are running; stop them first"
            )
        return await self._fleet.on_any_worker("browsers", "DeleteBrowser", request)  # type: ignore[no-any-return]


class FleetProfiles(pb_grpc.BrowserProfilesServicer, _Served):
    """Profiles live in the shared store: any worker answers for them."""

    def __init__(self, fleet: Fleet) -> None:
        self._fleet = fleet

    @rpc
    async def CreateBrowserProfile(self, request: Any, context: Any) -> pb.BrowserProfile:
        return await self._fleet.on_any_worker("profiles", "CreateBrowserProfile", request)  # type: ignore[no-any-return]

    @rpc
    async def GetBrowserProfile(self, request: Any, context: Any) -> pb.BrowserProfile:
        return await self._fleet.on_any_worker("profiles", "GetBrowserProfile", request)  # type: ignore[no-any-return]

    @rpc
    async def ListBrowserProfiles(
        self, request: Any, context: Any
    ) -> pb.ListBrowserProfilesResponse:
        return await self._fleet.on_any_worker("profiles", "ListBrowserProfiles", request)  # type: ignore[no-any-return]

    @rpc
    async def DeleteBrowserProfile(self, request: Any, context: Any) -> pb.BrowserProfile:
        return await self._fleet.on_any_worker("profiles", "DeleteBrowserProfile", request)  # type: ignore[no-any-return]


class FleetStatus(pb_grpc.WorkerServicer, _Served):
    def __init__(self, fleet: Fleet, gateway_id: str) -> None:
        self._fleet = fleet
        self._gateway_id = gateway_id

    @rpc
    async def GetWorkerStatus(self, request: Any, context: Any) -> pb.WorkerStatus:
        """The fleet as one worker: its capacity and sessions in use."""
        fresh = [w for w in self._fleet.directory.fresh() if not w.draining]
        return pb.WorkerStatus(
            capacity=sum(w.capacity for w in fresh),
            sessions_in_use=sum(w.in_use for w in fresh),
            draining=False,
            version=__version__,
            flavours=[pb.CHROMIUM, pb.HEADLESS_SHELL],
            worker_id=self._gateway_id,
        )


@dataclasses.dataclass(frozen=True)
class FleetServicers:
    """What the gateway serves over gRPC and its HTTP API calls in-process."""

    browsers: FleetBrowsers
    sessions: FleetSessions
    profiles: FleetProfiles
    status: FleetStatus
