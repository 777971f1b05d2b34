"""Every invalid field is refused with INVALID_ARGUMENT naming it, before any
browser starts (a real gRPC server and channel)."""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from helpers.workers import RunningWorker
from worker.pb import sandbox_pb2 as pb

TOKEN = "a" * 40

START_CASES: list[tuple[dict[str, Any], str]] = [
    ({"name": "x" * 101}, "name"),
    ({"name": "bad\nname"}, "name"),
    ({"session_timeout_seconds": 28801}, "session_timeout_seconds"),
    ({"session_timeout_seconds": -1}, "session_timeout_seconds"),
    ({"view_port": pb.ViewPort(width=319, height=600)}, "view_port.width"),
    ({"view_port": pb.ViewPort(width=3841, height=600)}, "view_port.width"),
    ({"view_port": pb.ViewPort(width=800, height=239)}, "view_port.height"),
    ({"view_port": pb.ViewPort(width=800, height=2161)}, "view_port.height"),
    ({"view_port": pb.ViewPort()}, "view_port.width"),
    ({"client_token": "short"}, "client_token"),
    ({"client_token": "x" * 257}, "client_token"),
    ({"client_token": "has space" + "x" * 30}, "client_token"),
    ({"browser_identifier": "no/slashes"}, "browser_identifier"),
]


@pytest.mark.parametrize(("fields", "field"), START_CASES)
async def test_start_refuses_each_invalid_field_by_name(
    worker: RunningWorker, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.start(**fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field + ":")
    assert worker.server.manager is not None and worker.server.manager.in_use == 0


BROWSER_CASES: list[tuple[dict[str, Any], str]] = [
    ({"name": ""}, "name"),
    ({"name": "1starts_with_digit"}, "name"),
    ({"name": "has-dash"}, "name"),
    ({"name": "x" * 49}, "name"),
    ({"name": "ok", "description": "d" * 4097}, "description"),
    ({"name": "ok", "flavour": 9}, "flavour"),
    (
        {"name": "ok", "recording": pb.RecordingConfig(enabled=True)},
        "recording.s3_location.bucket",
    ),
    ({"name": "ok", "execution_role_arn": "arn:aws:iam::12:user/x"}, "execution_role_arn"),
    (
        {
            "name": "ok",
            "recording": pb.RecordingConfig(
                enabled=True, s3_location=pb.S3Location(bucket="Bad_Bucket")
            ),
        },
        "recording.s3_location.bucket",
    ),
    (
        {
            "name": "ok",
            "certificates": [
                pb.Certificate(
                    location=pb.CertificateLocation(
                        secrets_manager=pb.SecretsManagerLocation(secret_arn="not-an-arn")
                    )
                )
            ],
        },
        "certificates[0].location.secrets_manager.secret_arn",
    ),
    ({"name": "ok", "certificates": [pb.Certificate()] * 11}, "certificates"),
]


@pytest.mark.parametrize(("fields", "field"), BROWSER_CASES)
async def test_create_browser_refuses_each_invalid_field_by_name(
    worker: RunningWorker, fields: dict[str, Any], field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(**fields))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field + ":"), info.value.details()


@pytest.mark.parametrize(
    ("call", "request_", "field"),
    [
        ("GetBrowserSession", pb.GetBrowserSessionRequest(session_id=""), "session_id"),
        ("GetBrowserSession", pb.GetBrowserSessionRequest(session_id="a-b"), "session_id"),
        ("StopBrowserSession", pb.StopBrowserSessionRequest(session_id="x" * 41), "session_id"),
        ("ListBrowserSessions", pb.ListBrowserSessionsRequest(max_results=101), "max_results"),
        ("ListBrowserSessions", pb.ListBrowserSessionsRequest(max_results=-1), "max_results"),
        ("ListBrowserSessions", pb.ListBrowserSessionsRequest(next_token="!!"), "next_token"),
        ("ListBrowserSessions", pb.ListBrowserSessionsRequest(status=7), "status"),
        (
            "UpdateBrowserStream",
            pb.UpdateBrowserStreamRequest(session_id="ABC"),
            "stream_update.automation_stream_update.stream_status",
        ),
    ],
)
async def test_session_calls_refuse_invalid_fields_by_name(
    worker: RunningWorker, call: str, request_: Any, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(worker.sessions, call)(request_)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details().startswith(field + ":")


async def test_unknown_session_and_browser_are_not_found(worker: RunningWorker) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.get("01NOSUCHSESSION")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "session_id" in info.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.start(browser_identifier="nobody-0123456789")
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert "browser_identifier" in info.value.details()
