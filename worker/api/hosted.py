"""The HTTP front end: the hosted browser API's paths, JSON shapes, status
codes and errors, so `boto3.client("bedrock-agentcore", endpoint_url=...)`
and `boto3.client("bedrock-agentcore-control", endpoint_url=...)` work
against this worker unchanged.

There is one implementation: each operation becomes the gRPC request
message (the proto mirrors the hosted JSON names, so `ParseDict` maps
camelCase to fields) and goes through the same servicer as gRPC calls,
validation and errors included. Only the shapes of answers and errors are
translated here. botocore's service model is the contract; the tests use
stock boto3 clients.

Requests are checked with SigV4 against access keys the worker is given
(`http_api_keys_file`), unless `http_api_auth` is "none" (local use).
"""

from __future__ import annotations

import dataclasses
import json
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

import grpc
import structlog
from aiohttp import web
from google.protobuf.json_format import ParseDict, ParseError

from worker.api import hosted_catalog, hosted_json, sigv4
from worker.api import hosted_shapes as shapes
from worker.api.rpc import InProcessContext
from worker.errors import WorkerError
from worker.pb import sandbox_pb2 as pb

log = structlog.get_logger(__name__)

SERVICE = "bedrock-agentcore"  # both planes sign with this name
MAX_BODY = 1024 * 1024

# gRPC status -> (HTTP status, the hosted API's error code)
ERRORS: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "ValidationException"),
    grpc.StatusCode.NOT_FOUND: (404, "ResourceNotFoundException"),
    grpc.StatusCode.ALREADY_EXISTS: (409, "ConflictException"),
    grpc.StatusCode.FAILED_PRECONDITION: (409, "ConflictException"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (402, "ServiceQuotaExceededException"),
    grpc.StatusCode.UNAVAILABLE: (503, "ServiceUnavailableException"),
    grpc.StatusCode.INTERNAL: (500, "InternalServerException"),
}

# Hosted features this worker does not have: refused by name, not ignored.
UNSUPPORTED = (
    "filesystemConfigurations",
    "browserSigning",
)


class Refused(Exception):
    """An answer other than success, in the hosted API's terms."""

    def __init__(
        self, status: int, code: str, message: str, field: str = "", reason: str = ""
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.field, self.reason = field, reason  # what a ValidationException's fieldList says

    @classmethod
    def invalid(cls, field: str, reason: str) -> Refused:
        return cls(400, "ValidationException", f"{field}: {reason}", field, reason)

    @classmethod
    def of(cls, error: WorkerError) -> Refused:
        """A domain error in the hosted API's terms: its field in their spelling."""
        status, name = ERRORS.get(error.code, (500, "InternalServerException"))
        field = shapes.camel(error.field)
        message = f"{field}: {error.reason}" if field else error.reason
        return cls(status, name, message, field if status == 400 else "", error.reason)


@dataclass
class Call:
    """One request, as an operation sees it."""

    path: dict[str, str]
    query: dict[str, str]
    body: dict[str, Any]
    context: InProcessContext
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
    reply_headers: dict[str, str] = dataclasses.field(default_factory=dict)  # the answer's


Operation = Callable[["HostedAPI", Call], Awaitable[tuple[int, dict[str, Any]]]]


class HostedAPI:
    def __init__(self, servicers: Any, keys: dict[str, str] | None) -> None:
        # The gRPC servicers, called in-process.
        self.browsers = servicers.browsers
        self.sessions = servicers.sessions
        self.profiles = servicers.profiles
        self._keys = keys  # None: no signature required
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        app = web.Application(client_max_size=MAX_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets  # type: ignore[attr-defined]
        self.port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        request_id = request.headers.get("x-amzn-requestid") or secrets.token_hex(8)
        try:
            body = await request.read()
            self._authenticate(request, body)
            operation, path = _route(request.method, request.path)
            call = Call(
                path,
                _query(request.query_string),
                _json(body),
                InProcessContext(request_id),
                request.headers,
            )
            status, answer = await operation(self, call)
            return _respond(status, answer, request_id, call.reply_headers)
        except Refused as refusal:
            return _error(refusal, request_id)
        except WorkerError as err:
            return _error(Refused.of(err), request_id)
        except web.HTTPRequestEntityTooLarge:
            return _error(Refused(413, "ValidationException", "the body is too large"), request_id)
        except Exception:
            log.exception("http_api.internal_error")
            return _error(Refused(500, "InternalServerException", "internal error"), request_id)

    def _authenticate(self, request: web.Request, body: bytes) -> None:
        if self._keys is None:
            return
        if not self._keys:
            raise Refused(
                403,
                "AccessDeniedException",
                "no access keys are configured on this worker (http_api_keys_file)",
            )
        url = f"http://{request.host}{request.raw_path}"
        try:
            sigv4.verify(request.method, url, request.headers, body, self._keys, SERVICE)
        except sigv4.SignatureError as err:
            log.info("http_api.unauthenticated", reason=str(err))
            raise Refused(403, "AccessDeniedException", str(err)) from None


# ---------------------------------------------------------------- requests


def _route(method: str, path: str) -> tuple[Operation, dict[str, str]]:
    for verb, pattern, operation in ROUTES:
        if verb == method and (match := pattern.fullmatch(path)):
            return operation, {k: unquote(v) for k, v in match.groupdict().items()}
    name = hosted_catalog.operation(method, path)
    if name:
        raise Refused(400, "ValidationException", f"{name} is not supported by this worker")
    raise Refused(
        404, "UnknownOperationException", f"no operation of the hosted API is {method} {path}"
    )


def _query(raw: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(raw, keep_blank_values=True).items()}


def _json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        raise Refused(400, "ValidationException", "the body is not JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "ValidationException", "the body must be a JSON object")
    return data


def _message(cls: Any, values: dict[str, Any]) -> Any:
    for name in UNSUPPORTED:
        if name in values:
            raise Refused.invalid(name, "is not supported by this worker")
    try:
        hosted_json.check(cls.DESCRIPTOR, values)
    except hosted_json.WrongType as err:
        raise Refused.invalid(err.path, err.reason) from None
    try:
        return ParseDict(values, cls(), ignore_unknown_fields=True)
    except ParseError as err:
        raise Refused(400, "ValidationException", _parse_error(str(err))) from None


def _int(query: dict[str, str], name: str) -> int | None:
    if name not in query:
        return None
    try:
        return int(query[name])
    except ValueError:
        raise Refused.invalid(name, "must be an integer") from None


# ---------------------------------------------------------------- answers


def _respond(
    status: int, answer: dict[str, Any], request_id: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(answer).encode(),
        content_type="application/json",
        headers={"x-amzn-RequestId": request_id, **(headers or {})},
    )


def _error(refusal: Refused, request_id: str) -> web.Response:
    body: dict[str, Any] = {"message": refusal.message}
    if refusal.code == "ValidationException":
        body["reason"] = "FieldValidationFailed" if refusal.field else "CannotParse"
        if refusal.field:
            body["fieldList"] = [{"name": refusal.field, "message": refusal.reason}]
    return web.Response(
        status=refusal.status,
        body=json.dumps(body).encode(),
        content_type="application/json",
        headers={"x-amzn-ErrorType": refusal.code, "x-amzn-RequestId": request_id},
    )


# ---------------------------------------------------------------- operations


def _trace_headers(call: Call) -> dict[str, str]:
    """The hosted API sends the trace context of Start, Stop and Save as headers."""
    found = {
        "traceId": call.headers.get("X-Amzn-Trace-Id", ""),
        "traceParent": call.headers.get("traceparent", ""),
    }
    return {k: v for k, v in found.items() if v}


async def start_session(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = {**call.body, "browserIdentifier": call.path["browser"], **_trace_headers(call)}
    request = _message(pb.StartBrowserSessionRequest, values)
    s = await api.sessions.StartBrowserSession(request, call.context)
    full = shapes.session_json(s, s.streams.automation_stream.token)
    return 200, shapes.pick(full, ("browserIdentifier", "sessionId", "createdAt", "streams"))


async def get_session(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    request = pb.GetBrowserSessionRequest(
        browser_identifier=call.path["browser"], session_id=call.query.get("sessionId", "")
    )
    return 200, shapes.session_json(await api.sessions.GetBrowserSession(request, call.context))


async def list_sessions(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = {**call.body, "browserIdentifier": call.path["browser"]}
    request = _message(pb.ListBrowserSessionsRequest, values)
    page = await api.sessions.ListBrowserSessions(request, call.context)
    keys = ("browserIdentifier", "sessionId", "name", "status", "createdAt", "lastUpdatedAt")
    return 200, shapes.listing(
        "items", [shapes.pick(shapes.session_json(s), keys) for s in page.items], page
    )


async def stop_session(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = {
        "clientToken": call.body.get("clientToken"),
        "browserIdentifier": call.path["browser"],
        "sessionId": call.query.get("sessionId", ""),
        **_trace_headers(call),
    }
    request = _message(pb.StopBrowserSessionRequest, values)
    s = await api.sessions.StopBrowserSession(request, call.context)
    full = shapes.session_json(s)
    return 200, shapes.pick(full, ("browserIdentifier", "sessionId", "lastUpdatedAt"))


async def update_stream(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = {
        **call.body,
        "browserIdentifier": call.path["browser"],
        "sessionId": call.query.get("sessionId", ""),
    }
    request = _message(pb.UpdateBrowserStreamRequest, values)
    s = await api.sessions.UpdateBrowserStream(request, call.context)
    full = shapes.session_json(s)
    answer = shapes.pick(full, ("browserIdentifier", "sessionId", "streams"))
    answer["updatedAt"] = full["lastUpdatedAt"]
    return 200, answer


async def invoke_browser(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = {
        **call.body,
        "browserIdentifier": call.path["browser"],
        # The hosted API carries this one operation's session id in a header.
        "sessionId": call.headers.get("x-amzn-browser-session-id", ""),
    }
    request = _message(pb.InvokeBrowserRequest, values)
    done = await api.sessions.InvokeBrowser(request, call.context)
    call.reply_headers["x-amzn-browser-session-id"] = done.session_id
    return 200, {"result": shapes.action_result(done)}


async def create_browser(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = dict(call.body)
    network = values.pop("networkConfiguration", None)
    mode = (network or {}).get("networkMode") if isinstance(network, dict) else None
    if mode != "PUBLIC":
        raise Refused.invalid(
            "networkConfiguration.networkMode", "must be PUBLIC (VPC mode is not supported)"
        )
    values.pop("tags", None)  # accepted, not kept
    request = _message(pb.CreateBrowserRequest, values)
    b = await api.browsers.CreateBrowser(request, call.context)
    full = shapes.browser_json(b)
    full["status"] = "READY"  # created synchronously: never CREATING
    return 202, shapes.pick(full, ("browserId", "browserArn", "createdAt", "status"))


async def get_browser(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    request = pb.GetBrowserRequest(browser_id=call.path["browser"])
    return 200, shapes.browser_json(await api.browsers.GetBrowser(request, call.context))


async def list_browsers(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    kind = call.query.get("type", "")
    if kind not in ("", "SYSTEM", "CUSTOM"):
        raise Refused.invalid("type", "must be SYSTEM or CUSTOM")
    request = pb.ListBrowsersRequest(
        max_results=_int(call.query, "maxResults") or 0,
        next_token=call.query.get("nextToken", ""),
        type=kind or None,
    )
    page = await api.browsers.ListBrowsers(request, call.context)
    keys = ("browserId", "browserArn", "name", "description", "status", "createdAt")
    summaries = [
        shapes.pick(shapes.browser_json(b), (*keys, "lastUpdatedAt")) for b in page.browsers
    ]
    return 200, shapes.listing("browserSummaries", summaries, page)


async def delete_browser(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    request = pb.DeleteBrowserRequest(
        browser_id=call.path["browser"], client_token=call.query.get("clientToken", "")
    )
    full = shapes.browser_json(await api.browsers.DeleteBrowser(request, call.context))
    return 202, shapes.pick(full, ("browserId", "status", "lastUpdatedAt"))


async def create_profile(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = dict(call.body)
    values.pop("tags", None)  # accepted, not kept
    request = _message(pb.CreateBrowserProfileRequest, values)
    full = shapes.profile_json(await api.profiles.CreateBrowserProfile(request, call.context))
    return 200, shapes.pick(full, ("profileId", "profileArn", "createdAt", "status"))


async def get_profile(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    request = pb.GetBrowserProfileRequest(profile_id=call.path["profile"])
    return 200, shapes.profile_json(await api.profiles.GetBrowserProfile(request, call.context))


async def list_profiles(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    request = pb.ListBrowserProfilesRequest(
        max_results=_int(call.query, "maxResults") or 0,
        next_token=call.query.get("nextToken", ""),
    )
    request.MergeFrom(_message(pb.ListBrowserProfilesRequest, {"name": call.body.get("name")}))
    page = await api.profiles.ListBrowserProfiles(request, call.context)
    items = [shapes.profile_json(p) for p in page.profile_summaries]
    return 200, shapes.listing("profileSummaries", items, page)


async def delete_profile(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    request = pb.DeleteBrowserProfileRequest(
        profile_id=call.path["profile"], client_token=call.query.get("clientToken", "")
    )
    full = shapes.profile_json(await api.profiles.DeleteBrowserProfile(request, call.context))
    keys = ("profileId", "profileArn", "status", "lastUpdatedAt", "lastSavedAt")
    return 200, shapes.pick(full, keys)


async def save_profile(api: HostedAPI, call: Call) -> tuple[int, dict[str, Any]]:
    values = {**call.body, "profileIdentifier": call.path["profile"], **_trace_headers(call)}
    request = _message(pb.SaveBrowserSessionProfileRequest, values)
    saved = await api.sessions.SaveBrowserSessionProfile(request, call.context)
    return 200, {
        "profileIdentifier": saved.profile_identifier,
        "browserIdentifier": saved.browser_identifier,
        "sessionId": saved.session_id,
        "lastUpdatedAt": shapes.timestamp(saved.last_updated_at),
    }


_SESSIONS = r"/browsers/(?P<browser>[^/]+)/sessions"
_PROFILE = r"/browser-profiles/(?P<profile>[^/]+)"
ROUTES: list[tuple[str, re.Pattern[str], Operation]] = [
    ("PUT", re.compile(_SESSIONS + "/start"), start_session),
    ("GET", re.compile(_SESSIONS + "/get"), get_session),
    ("POST", re.compile(_SESSIONS + "/list"), list_sessions),
    ("PUT", re.compile(_SESSIONS + "/stop"), stop_session),
    ("PUT", re.compile(_SESSIONS + "/streams/update"), update_stream),
    ("POST", re.compile(_SESSIONS + "/invoke"), invoke_browser),
    ("PUT", re.compile(_PROFILE + "/save"), save_profile),
    ("PUT", re.compile("/browser-profiles"), create_profile),
    ("POST", re.compile("/browser-profiles"), list_profiles),
    ("GET", re.compile(_PROFILE), get_profile),
    ("DELETE", re.compile(_PROFILE), delete_profile),
    ("PUT", re.compile("/browsers"), create_browser),
    ("POST", re.compile("/browsers"), list_browsers),
    ("GET", re.compile("/browsers/(?P<browser>[^/]+)"), get_browser),
    ("DELETE", re.compile("/browsers/(?P<browser>[^/]+)"), delete_browser),
]


# ---------------------------------------------------------------- names


def _parse_error(text: str) -> str:
    # protobuf's messages name the field and the JSON value; keep them short.
    return re.sub(r"\s+", " ", text)[:300]
