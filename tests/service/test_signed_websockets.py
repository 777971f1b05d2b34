"""Clients written for the hosted service sign the websocket handshake with
SigV4, by headers (the automation stream) or a presigned URL (the live
view), instead of sending the session's token. Both are accepted against
the HTTP API's keys; a signature opens only the session it was made for."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest_asyncio
import websockets
from botocore.auth import SigV4Auth, SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from service.conftest import fake_config
from websockets.asyncio.client import connect

from helpers.workers import RunningWorker, running_worker
from worker.cli.cdp_client import AsyncCDP

KEYS = {"AKIDSIGNED": "a-secret/with+chars"}
SERVICE = "bedrock-agentcore"


@pytest_asyncio.fixture
async def worker(tmp_path: Path, fake_binary: Path) -> AsyncIterator[RunningWorker]:
    keys = tmp_path / "keys.json"
    keys.write_text(json.dumps(KEYS))
    async with running_worker(fake_config(tmp_path, fake_binary, http_api_keys_file=keys)) as w:
        yield w


def signed_headers(url: str, secret: str = KEYS["AKIDSIGNED"]) -> dict[str, str]:
    """What the hosted SDK's generate_ws_headers sends: a signed GET of the
    endpoint with https in place of ws."""
    https = url.replace("ws://", "https://", 1)
    request = AWSRequest(method="GET", url=https, headers={"host": urlsplit(https).netloc})
    SigV4Auth(Credentials("AKIDSIGNED", secret), SERVICE, "us-west-2").add_auth(request)
    return {k: v for k, v in request.headers.items() if k.lower() != "host"}


def presigned(url: str, expires: int = 300) -> str:
    request = AWSRequest(method="GET", url=url, headers={"host": urlsplit(url).netloc})
    credentials = Credentials("AKIDSIGNED", KEYS["AKIDSIGNED"])
    SigV4QueryAuth(credentials, SERVICE, "us-west-2", expires=expires).add_auth(request)
    return str(request.url)


async def handshake_status(url: str, headers: dict[str, str] | None = None) -> int:
    try:
        async with connect(url, additional_headers=headers or {}):
            return 101
    except websockets.InvalidStatus as err:
        return int(err.response.status_code)


async def page_status(url: str) -> int:
    def get() -> int:
        try:
            with urllib.request.urlopen(url, timeout=10) as answer:
                return int(answer.status)
        except urllib.error.HTTPError as err:
            return int(err.code)

    return await asyncio.to_thread(get)


def streams(started: Any) -> tuple[str, str]:
    return (
        started.streams.automation_stream.stream_endpoint,
        started.streams.live_view_stream.stream_endpoint,
    )


async def test_a_signed_handshake_opens_its_own_session_and_no_other(
    worker: RunningWorker,
) -> None:
    mine, other = await worker.start(), await worker.start()
    url, _ = streams(mine)
    async with connect(url, additional_headers=signed_headers(url)) as ws:
        assert "product" in await AsyncCDP(ws).call("Browser.getVersion")
    other_url, _ = streams(other)
    assert await handshake_status(other_url, signed_headers(url)) == 403
    assert await handshake_status(url, signed_headers(url, secret="wrong")) == 403
    assert await handshake_status(url) == 401


async def test_a_presigned_live_view_opens_the_page_and_its_socket(
    worker: RunningWorker,
) -> None:
    started = await worker.start()
    _, live_view = streams(started)
    page = presigned(live_view)
    assert await page_status(page) == 200
    socket = page.replace("http://", "ws://", 1).replace("/live-view?", "/live-view/ws?", 1)
    assert await handshake_status(socket) == 101
    other = streams(await worker.start())[1]
    assert await page_status(presigned(live_view).replace(live_view, other)) == 403
    assert await page_status(presigned(live_view, expires=600)) == 403  # over 300 s


async def test_an_expired_presigned_url_is_refused(worker: RunningWorker) -> None:
    _, live_view = streams(await worker.start())
    page = presigned(live_view, expires=1)
    await asyncio.sleep(2.1)
    assert await page_status(page) == 403
