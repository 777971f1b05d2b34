"""Refusals over the hosted HTTP API keep the field they are about as data:
the error type, the field in the hosted JSON's spelling, and the reason."""

from __future__ import annotations

import asyncio
import datetime
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from service.conftest import fake_config

from helpers.workers import RunningWorker, running_worker

START = "/browsers/aws.browser.v1/sessions/start"
LIST = "/browsers/aws.browser.v1/sessions/list"
STOP = "/browsers/aws.browser.v1/sessions/stop?sessionId=01ABSENTSESSION0000000000"


@pytest_asyncio.fixture
async def open_worker(tmp_path: Path, fake_binary: Path) -> AsyncIterator[RunningWorker]:
    async with running_worker(fake_config(tmp_path, fake_binary, http_api_auth="none")) as w:
        yield w


async def call(
    worker: RunningWorker, method: str, path: str, body: Any = None
) -> tuple[int, str, Any]:
    """One request from a thread: the worker answers on this test's event loop."""
    return await asyncio.to_thread(_call, worker.server.http_api_port, method, path, body)


def _call(port: int, method: str, path: str, body: Any) -> tuple[int, str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, "", json.loads(answer.read())
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("x-amzn-ErrorType", ""), json.loads(err.read())


async def test_a_bad_field_is_a_validation_exception_naming_it(open_worker: RunningWorker) -> None:
    status, kind, body = await call(
        open_worker,
        "PUT",
        "/browsers/aws.browser.v1/sessions/start",
        {"viewPort": {"width": 10, "height": 720}},
    )
    assert (status, kind, body["reason"]) == (400, "ValidationException", "FieldValidationFailed")
    reason = "must be between 320 and 3840"
    assert body["fieldList"] == [{"name": "viewPort.width", "message": reason}]
    assert body["message"] == f"viewPort.width: {reason}"


async def test_an_unknown_session_is_not_found_in_the_hosted_spelling(
    open_worker: RunningWorker,
) -> None:
    status, kind, body = await call(
        open_worker,
        "GET",
        "/browsers/aws.browser.v1/sessions/get?sessionId=01ABCDEFGHJKMNPQRSTVWXYZ01",
    )
    assert (status, kind) == (404, "ResourceNotFoundException")
    assert body["message"].startswith("sessionId: no session '01ABCDEFGHJKMNPQRSTVWXYZ01'")
    assert "fieldList" not in body


async def test_a_duplicate_browser_name_is_a_conflict(open_worker: RunningWorker) -> None:
    create = {"name": "twice", "networkConfiguration": {"networkMode": "PUBLIC"}}
    assert (await call(open_worker, "PUT", "/browsers", create))[0] == 202
    status, kind, body = await call(open_worker, "PUT", "/browsers", create)
    assert (status, kind) == (409, "ConflictException")
    assert body["message"] == "name: a browser named 'twice' already exists"


async def test_hosted_operations_this_worker_lacks_are_named_as_unsupported(
    open_worker: RunningWorker,
) -> None:
    # Operations of the stock models this worker does not serve: refused by
    # name, never a 404 that reads like a missing resource.
    for method, path, name in (
        ("POST", "/runtimes/arn%3Aaws%3Aexample/invocations", "InvokeAgentRuntime"),
        ("PUT", "/code-interpreters", "CreateCodeInterpreter"),
        ("POST", "/memories/m1/events", "CreateEvent"),
    ):
        status, kind, body = await call(open_worker, method, path, {})
        assert (status, kind) == (400, "ValidationException"), (path, body)
        assert body["message"] == f"{name} is not supported by this worker"
    status, kind, body = await call(open_worker, "GET", "/no/such/route")
    assert (status, kind) == (404, "UnknownOperationException")
    assert body["message"] == "no operation of the hosted API is GET /no/such/route"
    # A refused field of a served operation names the field.
    status, kind, body = await call(
        open_worker,
        "PUT",
        "/browsers/aws.browser.v1/sessions/start",
        {"filesystemConfigurations": [{"s3": {"bucket": "b", "prefix": "files/"}}]},
    )
    assert (status, kind) == (400, "ValidationException")
    assert body["message"] == "filesystemConfigurations: is not supported by this worker"


async def test_a_signed_request_whose_host_does_not_parse_is_access_denied(
    tmp_path: Path, fake_binary: Path
) -> None:
    """Signed with a known key, but for a Host no URL can have (`[`): the
    signature cannot be checked, so it is refused as a bad one, not failed
    as the worker's own error."""
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps({"AKIDHOST": "a-secret"}))
    config = fake_config(tmp_path, fake_binary, http_api_keys_file=keys)
    async with running_worker(config) as worker:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        credential = f"AKIDHOST/{stamp[:8]}/us-east-1/bedrock-agentcore/aws4_request"
        reader, writer = await asyncio.open_connection("127.0.0.1", worker.server.http_api_port)
        try:
            writer.write(
                b"GET /browsers HTTP/1.1\r\nHost: [\r\nX-Amz-Date: " + stamp.encode() + b"\r\n"
                b"Authorization: AWS4-HMAC-SHA256 Credential=" + credential.encode() + b", "
                b"SignedHeaders=host;x-amz-date, Signature=00\r\nConnection: close\r\n\r\n"
            )
            answer = await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 403 ")
    assert b"x-amzn-ErrorType: AccessDeniedException" in head
    assert b"does not parse" in body


@pytest.mark.parametrize(
    ("path", "body", "field", "reason"),
    [
        (START, {"sessionTimeoutSeconds": "60"}, "sessionTimeoutSeconds", "must be an integer"),
        (START, {"sessionTimeoutSeconds": 60.5}, "sessionTimeoutSeconds", "must be an integer"),
        (START, {"viewPort": []}, "viewPort", "must be an object"),
        (START, {"viewPort": {"width": "800"}}, "viewPort.width", "must be an integer"),
        (START, {"name": 5}, "name", "must be a string"),
        (START, {"certificates": {}}, "certificates", "must be a list"),
        (START, {"certificates": [5]}, "certificates[0]", "must be an object"),
        (
            START,
            {"proxyConfiguration": {"proxies": "p"}},
            "proxyConfiguration.proxies",
            "must be a list",
        ),
        (LIST, {"status": "RUNNING"}, "status", "must be one of READY, TERMINATED, STARTING"),
        (LIST, {"maxResults": True}, "maxResults", "must be an integer"),
        (
            STOP,
            {"clientToken": 12345678901234567890123456789012345},
            "clientToken",
            "must be a string",
        ),
        ("/browser-profiles", {"name": ["p"]}, "name", "must be a string"),
    ],
)
async def test_a_value_of_the_wrong_json_type_is_refused_naming_its_path(
    open_worker: RunningWorker, path: str, body: dict[str, Any], field: str, reason: str
) -> None:
    method = "PUT" if path in (START, STOP) else "POST"
    status, kind, answer = await call(open_worker, method, path, body)
    assert (status, kind, answer["reason"]) == (400, "ValidationException", "FieldValidationFailed")
    assert answer["fieldList"] == [{"name": field, "message": reason}]
    manager = open_worker.server.manager
    assert manager is not None and not manager.live  # nothing was started


async def test_a_whole_number_written_as_a_float_is_still_an_integer(
    open_worker: RunningWorker,
) -> None:
    status, _, started = await call(open_worker, "PUT", START, {"sessionTimeoutSeconds": 60.0})
    assert status == 200
    await open_worker.stop(started["sessionId"])
