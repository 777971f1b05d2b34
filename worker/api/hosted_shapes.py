"""The hosted API's JSON shapes of answers, from the gRPC messages the
servicer returns, and the hosted spelling of field names (camelCase)."""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import urlencode

from google.protobuf.json_format import MessageToDict

from worker.pb import sandbox_pb2 as pb


def timestamp(ts: Any) -> str:
    return str(ts.ToJsonString())


def plain(message: Any) -> Any:
    return MessageToDict(message)


def session_json(s: Any, token: str = "") -> dict[str, Any]:
    endpoint = s.streams.automation_stream.stream_endpoint
    live_view = s.streams.live_view_stream.stream_endpoint
    if token:
        # boto3 drops members its model does not have: the only way to hand
        # a stock client the endpoint's token is inside the endpoint URL.
        endpoint += "?" + urlencode({"token": token})
        live_view += "?" + urlencode({"token": token})
    answer: dict[str, Any] = {
        "browserIdentifier": s.browser_identifier,
        "sessionId": s.session_id,
        "name": s.name,
        "createdAt": timestamp(s.created_at),
        "lastUpdatedAt": timestamp(s.last_updated_at),
        "viewPort": {"width": s.view_port.width, "height": s.view_port.height},
        "sessionTimeoutSeconds": s.session_timeout_seconds,
        "status": pb.SessionStatus.Name(s.status),
        "streams": {
            "automationStream": {
                "streamEndpoint": endpoint,
                "streamStatus": pb.StreamStatus.Name(s.streams.automation_stream.stream_status),
            },
            "liveViewStream": {"streamEndpoint": live_view},
        },
    }
    if s.HasField("proxy_configuration"):
        answer["proxyConfiguration"] = plain(s.proxy_configuration)
    if s.certificates:
        answer["certificates"] = [plain(c) for c in s.certificates]
    if s.session_replay_artifact:
        answer["sessionReplayArtifact"] = s.session_replay_artifact
    _add_objects(answer, s)
    if s.HasField("profile_configuration"):
        answer["profileConfiguration"] = plain(s.profile_configuration)
    return answer


def _add_objects(answer: dict[str, Any], message: Any) -> None:
    """Extensions and policy files as the hosted API spells them."""
    for name, values in (
        ("extensions", getattr(message, "extensions", ())),
        ("enterprisePolicies", message.enterprise_policies),
    ):
        if values:
            answer[name] = [plain(v) for v in values]


BROWSER_STATUS = {pb.BROWSER_READY: "READY", pb.BROWSER_DELETED: "DELETED"}


def browser_json(b: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "browserId": b.browser_id,
        "browserArn": b.browser_arn,
        "name": b.name,
        "description": b.description,
        "networkConfiguration": {"networkMode": "PUBLIC"},
        "recording": {
            "enabled": b.recording.enabled,
            "s3Location": {
                "bucket": b.recording.s3_location.bucket,
                "prefix": b.recording.s3_location.prefix,
            },
        },
        "status": BROWSER_STATUS.get(b.status, "READY"),
        "createdAt": timestamp(b.created_at),
        "lastUpdatedAt": timestamp(b.last_updated_at),
    }
    if b.execution_role_arn:
        answer["executionRoleArn"] = b.execution_role_arn
    if b.certificates:
        answer["certificates"] = [plain(c) for c in b.certificates]
    _add_objects(answer, b)
    return answer


def action_result(done: Any) -> dict[str, Any]:
    """InvokeBrowser's result: one member, named for the action."""
    result: dict[str, Any] = {"status": pb.ActionStatus.Name(done.status)}
    if done.error:
        result["error"] = done.error
    if done.data:
        result["data"] = base64.b64encode(done.data).decode()  # a JSON blob
    return {done.action: result}


def profile_json(p: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "profileId": p.profile_id,
        "profileArn": p.profile_arn,
        "name": p.name,
        "status": p.status,
        "createdAt": timestamp(p.created_at),
        "lastUpdatedAt": timestamp(p.last_updated_at),
    }
    if p.description:
        answer["description"] = p.description
    if p.HasField("last_saved_at"):
        answer["lastSavedAt"] = timestamp(p.last_saved_at)
        answer["lastSavedBrowserSessionId"] = p.last_saved_browser_session_id
        answer["lastSavedBrowserId"] = p.last_saved_browser_id
    return answer


def pick(answer: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    return {k: answer[k] for k in keys if k in answer}


def listing(name: str, items: list[dict[str, Any]], page: Any) -> dict[str, Any]:
    answer: dict[str, Any] = {name: items}
    if page.next_token:
        answer["nextToken"] = page.next_token
    return answer


def camel(field: str) -> str:
    """A proto field path (`view_port.width`) in the hosted JSON's terms."""
    parts = []
    for part in field.split("."):
        head, bracket, rest = part.partition("[")
        words = head.split("_")
        parts.append(words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:]) + bracket + rest)
    return ".".join(parts)
