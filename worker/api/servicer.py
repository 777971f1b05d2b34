"""The gRPC layer: proto messages in, domain calls, proto messages out.

Nothing here decides anything about sessions. Errors are mapped in one place
(`_rpc`): a WorkerError becomes its own status code and message; anything
else becomes INTERNAL with a generic message and a logged traceback, so no
stack, secret or upstream text reaches a caller.
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import structlog
from google.protobuf.timestamp_pb2 import Timestamp

from worker import __version__
from worker.api import validation
from worker.api.automation import endpoint_path, live_view_path
from worker.errors import Internal, InvalidArgument, WorkerError
from worker.metrics import Metrics
from worker.network.routing import ProxyConfig
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc
from worker.sessions.manager import ARN_PREFIX, SessionManager
from worker.sessions.model import (
    DEFAULT_BROWSER_ID,
    BrowserConfig,
    SessionRecord,
    StartRequest,
    Viewport,
)
from worker.sessions.session import Session

log = structlog.get_logger(__name__)

R = TypeVar("R")
FLAVOURS: dict[int, str] = {pb.CHROMIUM: "chromium", pb.HEADLESS_SHELL: "headless-shell"}
FLAVOUR_PB: dict[str, Any] = {name: value for value, name in FLAVOURS.items()}


class InProcessContext:
    """What the hosted HTTP API passes for a gRPC context when it calls a
    servicer in-process: its request id, and no status codes: a domain error
    reaches the HTTP edge as itself, field and reason kept apart."""

    def __init__(self, request_id: str) -> None:
        self._metadata = (("x-request-id", request_id),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def _rpc(
    handler: Callable[[Any, Any, Any], Awaitable[R]],
) -> Callable[[Any, Any, Any], Awaitable[R]]:
    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Any) -> R:
        metadata = dict(context.invocation_metadata() or ())
        request_id = str(metadata.get("x-request-id", "")) or secrets.token_hex(8)
        structlog.contextvars.bind_contextvars(request_id=request_id, rpc=handler.__name__)
        metrics: Metrics = self._manager.metrics
        started, code = time.perf_counter(), "OK"
        try:
            return await handler(self, request, context)
        except WorkerError as err:
            code = err.code.name
            log.info("rpc.refused", code=code, detail=err.message)
            await _refuse(context, err)
        except Exception:
            code = "INTERNAL"
            log.exception("rpc.internal_error")
            await _refuse(context, Internal())
        finally:
            structlog.contextvars.unbind_contextvars("request_id", "rpc")
            metrics.rpc_requests.labels(handler.__name__, code).inc()
            metrics.rpc_seconds.labels(handler.__name__).observe(time.perf_counter() - started)
        raise AssertionError("unreachable: a refusal raises")

    return wrapper


async def _refuse(context: Any, error: WorkerError) -> None:
    if isinstance(context, InProcessContext):
        raise error from None
    await context.abort(error.code, error.message)


def timestamp(seconds: float) -> Timestamp:
    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def flavour_name(value: int) -> str:
    if value == pb.BROWSER_FLAVOUR_UNSPECIFIED:
        return "chromium"
    if value not in FLAVOURS:
        raise InvalidArgument("flavour", "must be CHROMIUM or HEADLESS_SHELL")
    return FLAVOURS[value]


def certificates_to_pb(arns: Sequence[str]) -> list[pb.Certificate]:
    return [
        pb.Certificate(
            location=pb.CertificateLocation(
                secrets_manager=pb.SecretsManagerLocation(secret_arn=arn)
            )
        )
        for arn in arns
    ]


def certificate_arns(field: str, certificates: Any) -> tuple[str, ...]:
    return validation.certificate_arns(
        field, [c.location.secrets_manager.secret_arn for c in certificates]
    )


def proxy_from_pb(message: Any, present: bool) -> ProxyConfig | None:
    proxies = [
        (
            p.external_proxy.server,
            p.external_proxy.port,
            list(p.external_proxy.domain_patterns),
            p.external_proxy.credentials.basic_auth.secret_arn,
        )
        for p in message.proxies
    ]
    return validation.proxy_configuration(proxies, list(message.bypass.domain_patterns), present)


def proxy_to_pb(config: ProxyConfig) -> pb.ProxyConfiguration:
    """The session's routing as given: secret references, never credentials."""
    return pb.ProxyConfiguration(
        proxies=[
            pb.Proxy(
                external_proxy=pb.ExternalProxy(
                    server=p.server,
                    port=p.port,
                    domain_patterns=p.domain_patterns,
                    credentials=pb.ProxyCredentials(
                        basic_auth=pb.BasicAuth(secret_arn=p.secret_ref)
                    )
                    if p.secret_ref
                    else None,
                )
            )
            for p in config.proxies
        ],
        bypass=pb.ProxyBypass(domain_patterns=config.bypass) if config.bypass else None,
    )


def browser_to_pb(browser: BrowserConfig) -> pb.Browser:
    return pb.Browser(
        browser_id=browser.browser_id,
        browser_arn=ARN_PREFIX + browser.browser_id,
        name=browser.name,
        description=browser.description,
        flavour=FLAVOUR_PB[browser.flavour],
        recording=pb.RecordingConfig(
            enabled=browser.recording.enabled,
            s3_location=pb.S3Location(
                bucket=browser.recording.bucket, prefix=browser.recording.prefix
            ),
        ),
        certificates=certificates_to_pb(browser.certificate_arns),
        status=pb.BROWSER_READY,
        created_at=timestamp(browser.created_at),
        last_updated_at=timestamp(browser.updated_at),
        built_in=browser.built_in,
        execution_role_arn=browser.recording.role_arn,
    )


class BrowsersServicer(pb_grpc.BrowsersServicer):
    def __init__(self, manager: SessionManager) -> None:
        self._manager = manager

    @_rpc
    async def CreateBrowser(self, request: Any, context: Any) -> pb.Browser:
        name = validation.browser_name(request.name)
        description = validation.description(request.description)
        flavour = flavour_name(request.flavour)
        rec = request.recording
        recording = validation.recording(
            rec.enabled, rec.s3_location.bucket, rec.s3_location.prefix, request.execution_role_arn
        )
        arns = certificate_arns("certificates", request.certificates)
        validation.client_token(request.client_token)
        browser = self._manager.create_browser(name, description, flavour, recording, arns)
        return browser_to_pb(browser)

    @_rpc
    async def GetBrowser(self, request: Any, context: Any) -> pb.Browser:
        browser_id = validation.browser_id(request.browser_id, "browser_id")
        return browser_to_pb(self._manager.get_browser(browser_id))

    @_rpc
    async def ListBrowsers(self, request: Any, context: Any) -> pb.ListBrowsersResponse:
        limit = validation.max_results(request.max_results)
        after = validation.next_token(request.next_token, validation.BROWSER_ID)
        browsers, next_token = self._manager.list_browsers(limit, after)
        return pb.ListBrowsersResponse(
            browsers=[browser_to_pb(b) for b in browsers], next_token=next_token
        )

    @_rpc
    async def DeleteBrowser(self, request: Any, context: Any) -> pb.Browser:
        browser_id = validation.browser_id(request.browser_id, "browser_id")
        validation.client_token(request.client_token)
        browser = browser_to_pb(self._manager.delete_browser(browser_id))
        browser.status = pb.BROWSER_DELETED
        return browser


class SessionsServicer(pb_grpc.BrowserSessionsServicer):
    def __init__(self, manager: SessionManager, endpoint_base: str) -> None:
        self._manager = manager
        self._endpoint_base = endpoint_base.rstrip("/")
        # The live view is a web page on the same host and port.
        self._page_base = re.sub(r"^ws", "http", self._endpoint_base)

    def _to_pb(self, record: SessionRecord, token: str = "") -> pb.BrowserSession:
        endpoint = self._endpoint_base + endpoint_path(record.browser_id, record.session_id)
        message = pb.BrowserSession(
            browser_identifier=record.browser_id,
            session_id=record.session_id,
            name=record.name,
            created_at=timestamp(record.created_at),
            last_updated_at=timestamp(record.updated_at),
            view_port=pb.ViewPort(width=record.viewport.width, height=record.viewport.height),
            session_timeout_seconds=record.timeout_s,
            status=record.status,
            termination_reason=record.termination_reason or None,
            streams=pb.Streams(
                automation_stream=pb.AutomationStream(
                    stream_endpoint=endpoint,
                    stream_status=record.stream_status,
                    token=token,
                ),
                live_view_stream=pb.LiveViewStream(
                    stream_endpoint=self._page_base
                    + live_view_path(record.browser_id, record.session_id)
                ),
            ),
            flavour=FLAVOUR_PB[record.flavour],
            certificates=certificates_to_pb(record.certificate_arns),
            session_replay_artifact=record.replay_artifact,
        )
        proxy = record.proxy_config
        if proxy is not None:
            message.proxy_configuration.CopyFrom(proxy_to_pb(proxy))
        return message

    @staticmethod
    def _browser(request: Any) -> str:
        return validation.browser_id(request.browser_identifier or DEFAULT_BROWSER_ID)

    @_rpc
    async def StartBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
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
            proxy=proxy_from_pb(
                request.proxy_configuration, request.HasField("proxy_configuration")
            ),
            certificate_arns=certificate_arns("certificates", request.certificates),
        )
        result = await self._manager.start_session(start)
        if isinstance(result, Session):
            return self._to_pb(result.record, result.token)
        return self._to_pb(result)

    @_rpc
    async def GetBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        session_id = validation.session_id(request.session_id)
        return self._to_pb(self._manager.find(self._browser(request), session_id))

    @_rpc
    async def ListBrowserSessions(
        self, request: Any, context: Any
    ) -> pb.ListBrowserSessionsResponse:
        limit = validation.max_results(request.max_results)
        before = validation.next_token(request.next_token, validation.SESSION_ID)
        if request.status not in (0, pb.READY, pb.TERMINATED):
            raise InvalidArgument("status", "must be READY or TERMINATED")
        status = pb.SessionStatus.Name(request.status) if request.status else None
        records, next_token = self._manager.list_sessions(
            self._browser(request), status, limit, before
        )
        return pb.ListBrowserSessionsResponse(
            items=[self._to_pb(r) for r in records], next_token=next_token
        )

    @_rpc
    async def StopBrowserSession(self, request: Any, context: Any) -> pb.BrowserSession:
        session_id = validation.session_id(request.session_id)
        validation.client_token(request.client_token)
        record = await self._manager.stop_session(self._browser(request), session_id)
        return self._to_pb(record)

    @_rpc
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


class WorkerServicer(pb_grpc.WorkerServicer):
    def __init__(self, manager: SessionManager, worker_id: str) -> None:
        self._manager = manager
        self._worker_id = worker_id
        config = manager.config
        self._installed = [
            FLAVOUR_PB[name]
            for name, path in (
                ("chromium", config.chromium_path),
                ("headless-shell", config.headless_shell_path),
            )
            if Path(path).exists()
        ]

    @_rpc
    async def GetWorkerStatus(self, request: Any, context: Any) -> pb.WorkerStatus:
        return pb.WorkerStatus(
            capacity=self._manager.config.max_sessions,
            sessions_in_use=self._manager.in_use,
            draining=self._manager.draining,
            version=__version__,
            flavours=self._installed,
            worker_id=self._worker_id,
        )
