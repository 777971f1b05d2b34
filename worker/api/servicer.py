"""The gRPC layer: proto messages in, domain calls, proto messages out.

Nothing here decides anything about sessions. Errors are mapped in one place
(`rpc`, shared with the fleet gateway's servicers).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, TypeVar

import structlog

from worker import __version__, tracing
from worker.api import convert, invoke, validation
from worker.api.paging import PageTokens
from worker.api.rpc import rpc
from worker.errors import InvalidArgument
from worker.metrics import Metrics
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.sessions.manager import SessionManager
from worker.sessions.model import (
    DEFAULT_BROWSER_ID,
    SessionRecord,
    StartRequest,
    Viewport,
)

log = structlog.get_logger(__name__)

R = TypeVar("R")


class _Served:
    """What `rpc` reads of a servicer: the metrics its calls count in."""

    _manager: SessionManager

    @property
    def metrics(self) -> Metrics:
        return self._manager.metrics


class BrowsersServicer(pb_grpc.BrowsersServicer, _Served):
    def __init__(self, manager: SessionManager, tokens: PageTokens) -> None:
        self._manager = manager
        self._tokens = tokens

    @rpc
    async def CreateBrowser(self, request: Any, context: Any) -> pb.Browser:
        name = validation.browser_name(request.name)
        description = validation.description(request.description)
        flavour = convert.flavour_name(request.flavour)
        rec = request.recording
        recording = validation.recording(
            rec.enabled, rec.s3_location.bucket, rec.s3_location.prefix, request.execution_role_arn
        )
        arns = convert.certificate_arns("certificates", request.certificates)
        policies = convert.policies_from_pb("enterprise_policies", request.enterprise_policies)
        validation.client_token(request.client_token)
        browser = await self._manager.create_browser(
            name, description, flavour, recording, arns, policies
        )
        return convert.browser_to_pb(browser)

    @rpc
    async def GetBrowser(self, request: Any, context: Any) -> pb.Browser:
        browser_id = validation.browser_id(request.browser_id, "browser_id")
        return convert.browser_to_pb(await self._manager.browsers.get(browser_id))

    @rpc
    async def ListBrowsers(self, request: Any, context: Any) -> pb.ListBrowsersResponse:
        limit = validation.max_results(request.max_results)
        after = self._tokens.read("browsers", request.next_token)
        if request.type not in (0, pb.SYSTEM, pb.CUSTOM):
            raise InvalidArgument("type", "must be SYSTEM or CUSTOM")
        kind = pb.BrowserType.Name(request.type) if request.type else None
        browsers, last = await self._manager.browsers.list(limit, after, kind)
        return pb.ListBrowsersResponse(
            browsers=[convert.browser_to_pb(b) for b in browsers],
            next_token=self._tokens.issue("browsers", last),
        )

    @rpc
    async def DeleteBrowser(self, request: Any, context: Any) -> pb.Browser:
        browser_id = validation.browser_id(request.browser_id, "browser_id")
        validation.client_token(request.client_token)
        browser = convert.browser_to_pb(await self._manager.browsers.delete(browser_id))
        browser.status = pb.BROWSER_DELETED
        return browser


class ProfilesServicer(pb_grpc.BrowserProfilesServicer, _Served):
    def __init__(self, manager: SessionManager, tokens: PageTokens) -> None:
        self._manager = manager  # its metrics count each call
        self._profiles = manager.profiles
        self._tokens = tokens

    @rpc
    async def CreateBrowserProfile(self, request: Any, context: Any) -> pb.BrowserProfile:
        name = validation.browser_name(request.name)
        description = validation.description(request.description)
        validation.client_token(request.client_token)
        return convert.profile_to_pb(await self._profiles.create(name, description))

    @rpc
    async def GetBrowserProfile(self, request: Any, context: Any) -> pb.BrowserProfile:
        profile_id = validation.profile_id(request.profile_id, "profile_id")
        return convert.profile_to_pb(await self._profiles.get(profile_id))

    @rpc
    async def ListBrowserProfiles(
        self, request: Any, context: Any
    ) -> pb.ListBrowserProfilesResponse:
        limit = validation.max_results(request.max_results)
        name = validation.browser_name(request.name) if request.name else ""
        listing = f"profiles named {name}" if name else "profiles"
        after = self._tokens.read(listing, request.next_token)
        profiles, last = await self._profiles.list(name, limit, after)
        return pb.ListBrowserProfilesResponse(
            profile_summaries=[convert.profile_to_pb(p) for p in profiles],
            next_token=self._tokens.issue(listing, last),
        )

    @rpc
    async def DeleteBrowserProfile(self, request: Any, context: Any) -> pb.BrowserProfile:
        profile_id = validation.profile_id(request.profile_id, "profile_id")
        validation.client_token(request.client_token)
        return convert.profile_to_pb(await self._profiles.delete(profile_id))


class SessionsServicer(pb_grpc.BrowserSessionsServicer, _Served):
    def __init__(self, manager: SessionManager, endpoint_base: str, tokens: PageTokens) -> None:
        self._manager = manager
        self._tokens = tokens
        self._endpoint_base = endpoint_base.rstrip("/")
        # The live view is a web page on the same host and port.
        self._page_base = re.sub(r"^ws", "http", self._endpoint_base)

    def _to_pb(self, record: SessionRecord, token: str = "") -> pb.BrowserSession:
        return convert.session_to_pb(record, token, self._endpoint_base, self._page_base)

    @staticmethod
    def _browser(request: Any) -> str:
        return validation.browser_id(request.browser_identifier or DEFAULT_BROWSER_ID)

    @rpc
    async def StartBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        trace = validation.trace_context(request)
        config = self._manager.config
        default_viewport = Viewport(config.default_viewport_width, config.default_viewport_height)
        start = StartRequest(
            browser_id=self._browser(request),
            name=validation.session_name(request.name),
            timeout_s=validation.session_timeout(request.session_timeout_seconds),
            viewport=validation.viewport(
                request.view_port.width,
                request.view_port.height,
                default_viewport,
                request.HasField("view_port"),
            ),
            client_token=validation.client_token(request.client_token),
            proxy=convert.proxy_from_pb(
                request.proxy_configuration, request.HasField("proxy_configuration")
            ),
            certificate_arns=convert.certificate_arns("certificates", request.certificates),
            profile_id=self._profile(request),
            extensions=convert.extensions_from_pb(request.extensions),
            policies=convert.policies_from_pb("enterprise_policies", request.enterprise_policies),
            **trace.fields(),
        )
        with tracing.span("StartBrowserSession", trace, browser_id=start.browser_id) as span:
            started = await self._manager.start_session(start)
            span.set_attribute("session_id", started.record.session_id)
        return self._to_pb(started.record, started.token)

    @staticmethod
    def _profile(request: Any) -> str:
        if not request.HasField("profile_configuration"):
            return ""
        return validation.profile_id(
            request.profile_configuration.profile_identifier,
            "profile_configuration.profile_identifier",
        )

    @rpc
    async def SaveBrowserSessionProfile(
        self, request: Any, context: Any
    ) -> pb.SaveBrowserSessionProfileResponse:
        profile_id = validation.profile_id(request.profile_identifier, "profile_identifier")
        session_id = validation.session_id(request.session_id)
        validation.client_token(request.client_token)
        trace = validation.trace_context(request)
        browser_id = self._browser(request)
        with tracing.span(
            "SaveBrowserSessionProfile", trace, profile_id=profile_id, session_id=session_id
        ):
            saved = await self._manager.save_profile(profile_id, browser_id, session_id)
        return pb.SaveBrowserSessionProfileResponse(
            profile_identifier=profile_id,
            browser_identifier=browser_id,
            session_id=session_id,
            last_updated_at=convert.timestamp(saved.updated_at),
        )

    @rpc
    async def GetBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        session_id = validation.session_id(request.session_id)
        return self._to_pb(self._manager.find(self._browser(request), session_id))

    @rpc
    async def ListBrowserSessions(
        self, request: Any, context: Any
    ) -> pb.ListBrowserSessionsResponse:
        limit = validation.max_results(request.max_results)
        browser = self._browser(request)
        listing = f"sessions of {browser}"  # a token serves its own listing only
        before = self._tokens.read(listing, request.next_token)
        if request.status not in (0, pb.READY, pb.TERMINATED):
            raise InvalidArgument("status", "must be READY or TERMINATED")
        status = pb.SessionStatus.Name(request.status) if request.status else None
        records, last = await self._manager.list_sessions(browser, status, limit, before)
        return pb.ListBrowserSessionsResponse(
            items=[self._to_pb(r) for r in records], next_token=self._tokens.issue(listing, last)
        )

    @rpc
    async def StopBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        session_id = validation.session_id(request.session_id)
        validation.client_token(request.client_token)
        trace = validation.trace_context(request)
        browser_id = self._browser(request)
        with tracing.span(
            "StopBrowserSession", trace, browser_id=browser_id, session_id=session_id
        ):
            record = await self._manager.stop_session(browser_id, session_id)
        return self._to_pb(record)

    @rpc
    async def UpdateBrowserStream(self, request: Any, context: Any) -> pb.BrowserSession:
        session_id = validation.session_id(request.session_id)
        validation.client_token(request.client_token)
        value = request.stream_update.automation_stream_update.stream_status
        if value not in (pb.ENABLED, pb.DISABLED):
            raise InvalidArgument(
                "stream_update.automation_stream_update.stream_status",
                "must be ENABLED or DISABLED",
            )
        record = self._manager.update_stream(
            self._browser(request), session_id, pb.StreamStatus.Name(value)
        )
        return self._to_pb(record)

    @rpc
    async def InvokeBrowser(self, request: Any, context: Any) -> pb.InvokeBrowserResponse:
        session_id = validation.session_id(request.session_id)
        record = self._manager.find(self._browser(request), session_id)
        action = invoke.action(request, record.viewport)
        result = await self._manager.invoke(record.browser_id, session_id, action)
        return invoke.answer(session_id, action.kind, result)


class WorkerServicer(pb_grpc.WorkerServicer, _Served):
    def __init__(self, manager: SessionManager, worker_id: str) -> None:
        self._manager = manager
        self._worker_id = worker_id
        config = manager.config
        self._installed = [
            convert.FLAVOUR_PB[name]
            for name, path in (
                ("chromium", config.chromium_path),
                ("headless-shell", config.headless_shell_path),
            )
            if Path(path).exists()
        ]

    @rpc
    async def GetWorkerStatus(self, request: Any, context: Any) -> pb.WorkerStatus:
        return pb.WorkerStatus(
            capacity=self._manager.config.max_sessions,
            sessions_in_use=self._manager.in_use,
            draining=self._manager.draining,
            version=__version__,
            flavours=self._installed,
            worker_id=self._worker_id,
        )


@dataclasses.dataclass(frozen=True)
class Servicers:
    """What the gRPC server serves and the HTTP front end calls in-process."""

    browsers: BrowsersServicer
    sessions: SessionsServicer
    profiles: ProfilesServicer


def add_to_server(server: Any, browsers: Any, sessions: Any, profiles: Any, status: Any) -> None:
    """The four services, the worker's or the fleet gateway's."""
    pb_grpc.add_BrowsersServicer_to_server(browsers, server)
    pb_grpc.add_BrowserSessionsServicer_to_server(sessions, server)
    pb_grpc.add_BrowserProfilesServicer_to_server(profiles, server)
    pb_grpc.add_WorkerServicer_to_server(status, server)
