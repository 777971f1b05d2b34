"""The hosted API over HTTP, driven by stock boto3 clients
(`bedrock-agentcore`, `bedrock-agentcore-control`) with SigV4 signatures,
and Playwright on the endpoint the API returns."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import boto3
import pytest
import pytest_asyncio
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from helpers.hosted import KEY_ID, SECRET, Threaded, client
from helpers.upstreams import HOST_OVERRIDES, PROXY_PASSWORD, PROXY_USER, Proxy, TLSOrigin
from helpers.workers import RunningWorker, make_config, running_worker

pytestmark = pytest.mark.integration


@pytest_asyncio.fixture
async def api(tmp_path: Path, tls_origin: TLSOrigin) -> AsyncIterator[RunningWorker]:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    creds = json.dumps({"username": PROXY_USER, "password": PROXY_PASSWORD})
    (secrets / "squid-credentials").write_text(creds)
    (secrets / "origin-ca").write_text(tls_origin.ca.cert_pem.bytes().decode())
    keys = tmp_path / "http-keys.json"
    keys.write_text(json.dumps({KEY_ID: SECRET}))
    config = make_config(
        tmp_path, host_overrides=HOST_OVERRIDES, secrets_dir=secrets, http_api_keys_file=keys
    )
    async with running_worker(config) as running:
        yield running


async def test_stock_boto3_clients_run_a_session_end_to_end(
    api: RunningWorker, tls_origin: TLSOrigin, squid: Proxy
) -> None:
    from playwright.async_api import async_playwright

    control = client(api, "bedrock-agentcore-control")
    data = client(api, "bedrock-agentcore")
    created = await control.create_browser(
        name="from_boto3",
        description="made by boto3",
        networkConfiguration={"networkMode": "PUBLIC"},
    )
    browser_id = created["browserId"]
    assert created["status"] == "READY" and browser_id.startswith("from_boto3-")
    assert (await control.get_browser(browserId=browser_id))["description"] == "made by boto3"
    listed = (await control.list_browsers(maxResults=10))["browserSummaries"]
    assert browser_id in {b["browserId"] for b in listed}

    started = await data.start_browser_session(
        browserIdentifier=browser_id,
        name="boto3-session",
        viewPort={"width": 1024, "height": 700},
        proxyConfiguration={
            "proxies": [
                {
                    "externalProxy": {
                        "server": "127.0.0.1",
                        "port": squid.port,
                        "credentials": {"basicAuth": {"secretArn": "file:squid-credentials"}},
                    }
                }
            ]
        },
        certificates=[{"location": {"secretsManager": {"secretArn": "file:origin-ca"}}}],
    )
    session_id = started["sessionId"]
    live_view = started["streams"]["liveViewStream"]["streamEndpoint"]
    assert live_view.startswith("http://") and "/live-view?token=" in live_view
    endpoint = started["streams"]["automationStream"]["streamEndpoint"]
    got = await data.get_browser_session(browserIdentifier=browser_id, sessionId=session_id)
    assert got["status"] == "READY" and got["viewPort"] == {"width": 1024, "height": 700}
    proxy = got["proxyConfiguration"]["proxies"][0]["externalProxy"]
    assert proxy["credentials"]["basicAuth"]["secretArn"] == "file:squid-credentials"
    assert PROXY_PASSWORD not in json.dumps(got, default=str)
    assert "token=" not in got["streams"]["automationStream"]["streamEndpoint"]
    items = (await data.list_browser_sessions(browserIdentifier=browser_id, status="READY"))[
        "items"
    ]
    assert [i["sessionId"] for i in items] == [session_id]

    url = tls_origin.url("secure.company.test", "/through-boto3")
    async with async_playwright() as p:
        browser = await p.chromium.connect_over_cdp(endpoint, timeout=20000)
        page = await browser.contexts[0].new_page()
        answer = await page.goto(url)
        assert answer is not None and answer.status == 200  # the CA is trusted
        assert await page.title() == "secure.company.test"
        await browser.close()

    disabled = await data.update_browser_stream(
        browserIdentifier=browser_id,
        sessionId=session_id,
        streamUpdate={"automationStreamUpdate": {"streamStatus": "DISABLED"}},
    )
    assert disabled["streams"]["automationStream"]["streamStatus"] == "DISABLED"
    stopped = await data.stop_browser_session(browserIdentifier=browser_id, sessionId=session_id)
    assert stopped["sessionId"] == session_id
    ended = await data.get_browser_session(browserIdentifier=browser_id, sessionId=session_id)
    assert ended["status"] == "TERMINATED"
    # squid logs a tunnel when it closes: after the session ended.
    tunnel = f"CONNECT secure.company.test:{tls_origin.server.port}"
    assert any(f" {PROXY_USER} " in line for line in squid.wait_lines(tunnel))
    deleted = await control.delete_browser(browserId=browser_id)
    assert deleted["status"] == "DELETED"


async def test_bad_input_and_unknown_sessions_raise_the_modelled_exceptions(
    api: RunningWorker,
) -> None:
    data = client(api, "bedrock-agentcore")
    control = client(api, "bedrock-agentcore-control")
    with pytest.raises(data.exceptions.ValidationException) as bad:
        await data.start_browser_session(
            browserIdentifier="aws.browser.v1", viewPort={"width": 5000, "height": 700}
        )
    assert bad.value.response["Error"]["Message"].startswith("viewPort.width:")
    assert bad.value.response["fieldList"][0]["name"] == "viewPort.width"
    with pytest.raises(data.exceptions.ResourceNotFoundException):
        await data.get_browser_session(
            browserIdentifier="aws.browser.v1", sessionId="01NOSUCHSESSION"
        )
    with pytest.raises(control.exceptions.ResourceNotFoundException):
        await control.get_browser(browserId="nothere-0123456789")
    with pytest.raises(control.exceptions.ValidationException):
        await control.create_browser(name="vpc", networkConfiguration={"networkMode": "VPC"})
    await control.create_browser(name="twice", networkConfiguration={"networkMode": "PUBLIC"})
    with pytest.raises(control.exceptions.ConflictException):
        await control.create_browser(name="twice", networkConfiguration={"networkMode": "PUBLIC"})


async def test_a_request_with_a_wrong_signature_is_refused(api: RunningWorker) -> None:
    forged = client(api, "bedrock-agentcore", secret="not-the-secret")
    with pytest.raises(ClientError) as refused:
        await forged.list_browser_sessions(browserIdentifier="aws.browser.v1")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert refused.value.response["Error"]["Code"] == "AccessDeniedException"
    assert api.server.manager is not None and api.server.manager.in_use == 0


async def test_with_auth_off_unsigned_requests_are_served(tmp_path: Path) -> None:
    from botocore import UNSIGNED

    config = make_config(tmp_path, http_api_auth="none")
    async with running_worker(config) as worker:
        unsigned = Threaded(
            boto3.Session().client(
                "bedrock-agentcore",
                endpoint_url=f"http://127.0.0.1:{worker.server.http_api_port}",
                region_name="us-east-1",
                config=BotoConfig(signature_version=UNSIGNED),
            )
        )
        listed = await unsigned.list_browser_sessions(browserIdentifier="aws.browser.v1")
    assert listed["items"] == []
