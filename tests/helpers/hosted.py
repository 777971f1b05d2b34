"""Stock boto3 clients of the hosted API (`bedrock-agentcore`,
`bedrock-agentcore-control`) pointed at a test worker's HTTP front end,
signing with SigV4, their calls run in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig
from playwright.async_api import async_playwright

KEY_ID, SECRET = "AKIASANDBOXTEST00001", "worker-test-secret-key"


def keys_file(directory: Path) -> Path:
    """The worker's http_api_keys_file holding the tests' key."""
    path = directory / "http-keys.json"
    path.write_text(json.dumps({KEY_ID: SECRET}))
    return path


class Threaded:
    """A boto3 client whose calls run in a thread: the worker under test
    shares this event loop, and a blocking call would stall it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.exceptions = client.exceptions

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        async def call(**params: Any) -> Any:
            return await asyncio.to_thread(method, **params)

        return call


def client(front: Any, service: str, secret: str = SECRET) -> Any:
    """A client of a worker's or a gateway's HTTP API (`front.server.http_api_port`)."""
    return Threaded(
        boto3.Session().client(
            service,
            endpoint_url=f"http://127.0.0.1:{front.server.http_api_port}",
            region_name="us-east-1",
            aws_access_key_id=KEY_ID,
            aws_secret_access_key=secret,
            config=BotoConfig(retries={"max_attempts": 1}),
        )
    )


@contextlib.asynccontextmanager
async def first_page(started: dict[str, Any]) -> AsyncIterator[Any]:
    """A new page in a started session: from the HTTP API's answer (the token
    in the endpoint) or the CLI's (the token beside it)."""
    stream = started["streams"]["automationStream"]
    token = stream.get("token")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with async_playwright() as playwright:
        browser = await playwright.chromium.connect_over_cdp(
            stream["streamEndpoint"], headers=headers
        )
        yield await browser.contexts[0].new_page()
        await browser.close()
