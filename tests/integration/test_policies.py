"""Chromium enterprise policies from S3 (moto_server): MANAGED and
RECOMMENDED files on CreateBrowser (every session of the browser) and on
StartBrowserSession (that session), each browser seeing them in a private
mount namespace while the host's /etc/chromium stays as it was."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest

from helpers.addons import policy_pb, put
from helpers.hosted import client, first_page, keys_file
from helpers.upstreams import SecretsManager
from helpers.workers import connected_page, make_config, running_worker
from worker.browser.policies import CHROMIUM_ETC
from worker.pb import sandbox_pb2 as pb

pytestmark = pytest.mark.integration


# chrome://policy's text, shadow roots included.
DEEP_TEXT = """() => {
  const parts = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) parts.push(node.textContent);
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document.body);
  return parts.join(" ");
}"""


def host_tree() -> dict[str, bytes]:
    """Every file under the host's /etc/chromium, with its content."""
    return {str(path): path.read_bytes() for path in CHROMIUM_ETC.rglob("*") if path.is_file()}


async def page_loads(started: object, url: str) -> str:
    """'loaded', or the navigation error Chromium gave."""
    async with connected_page(started) as page:
        try:
            await page.goto(url)
        except Exception as exc:  # Playwright's Error carries Chromium's net error
            return str(exc).splitlines()[0]
        return "loaded"


async def test_a_managed_policy_blocks_a_url_in_its_session_and_not_in_one_beside_it(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    before = host_tree()
    blocked = f"{web}/second.html"
    policy = json.dumps({"URLBlocklist": [blocked.split("://", 1)[1]]}).encode()
    location = put(moto, moto.bucket(), "policies/block.json", policy)
    async with running_worker(make_config(tmp_path)) as worker:
        strict = await worker.start(enterprise_policies=[policy_pb(location, "MANAGED")])
        free = await worker.start()
        try:
            in_strict = await page_loads(strict, blocked)
            other_page = await page_loads(strict, f"{web}/index.html")
            in_free = await page_loads(free, blocked)
            shown = await worker.get(strict.session_id)
        finally:
            await worker.stop(strict.session_id)
            await worker.stop(free.session_id)
    assert "ERR_BLOCKED_BY_ADMINISTRATOR" in in_strict
    assert other_page == "loaded" and in_free == "loaded"
    assert shown.enterprise_policies[0].location.s3.prefix == "policies/block.json"
    assert host_tree() == before


async def test_a_browser_s_policies_reach_every_session_and_a_session_adds_its_own(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    managed = put(
        moto, bucket, "block.json", json.dumps({"URLBlocklist": ["*/second.html"]}).encode()
    )
    # Recommended: a default the user may change; seen on chrome://policy.
    recommended = put(
        moto,
        bucket,
        "home.json",
        json.dumps({"HomepageLocation": "https://home.example.test/"}).encode(),
    )
    config = make_config(tmp_path, http_api_keys_file=keys_file(tmp_path))
    async with running_worker(config) as worker:
        control = client(worker, "bedrock-agentcore-control")
        data = client(worker, "bedrock-agentcore")
        created = await control.create_browser(
            name="governed",
            networkConfiguration={"networkMode": "PUBLIC"},
            enterprisePolicies=[{"location": {"s3": managed}, "type": "MANAGED"}],
        )
        browser_id = created["browserId"]
        shown = await control.get_browser(browserId=browser_id)
        started = await data.start_browser_session(
            browserIdentifier=browser_id,
            enterprisePolicies=[{"location": {"s3": recommended}, "type": "RECOMMENDED"}],
        )
        try:
            async with first_page(started) as page:
                response = None
                try:
                    response = await page.goto(f"{web}/second.html")
                except Exception as exc:
                    refused = str(exc)
                policies = await page.context.new_page()
                await policies.goto("chrome://policy")
                # The page's rows are custom elements: locators pierce their shadow roots.
                home = policies.get_by_text("HomepageLocation", exact=True).first
                await home.wait_for(timeout=10_000)
                listed = await policies.evaluate(DEEP_TEXT)
        finally:
            await data.stop_browser_session(
                browserIdentifier=browser_id, sessionId=started["sessionId"]
            )
    assert response is None and "ERR_BLOCKED_BY_ADMINISTRATOR" in refused
    assert shown["enterprisePolicies"] == [{"location": {"s3": managed}, "type": "MANAGED"}]
    # Values show only for policies that are set.
    assert "https://home.example.test/" in listed and "*/second.html" in listed
    assert "Recommended" in listed


async def test_a_bad_policy_file_is_refused_naming_its_field_and_nothing_starts(
    tmp_path: Path, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    good = put(moto, bucket, "good.json", b'{"URLBlocklist": ["*"]}')
    cases = {
        "not json": (
            put(moto, bucket, "a.json", b"URLBlocklist=*"),
            "MANAGED",
            "is not a JSON file",
        ),
        "a list": (put(moto, bucket, "b.json", b"[1, 2]"), "MANAGED", "must hold a JSON object"),
        "no type": (good, "POLICY_TYPE_UNSPECIFIED", "must be MANAGED or RECOMMENDED"),
        "not .json": (put(moto, bucket, "c.txt", b"{}"), "MANAGED", "must name a .json file"),
        "missing": ({"bucket": bucket, "prefix": "gone.json"}, "MANAGED", "does not exist"),
        "too large": (
            put(moto, bucket, "d.json", b"{" + b" " * (5 * 1024 * 1024) + b"}"),
            "MANAGED",
            "the limit is 5242880",
        ),
    }
    async with running_worker(make_config(tmp_path)) as worker:
        for name, (location, kind, why) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await worker.start(
                    enterprise_policies=[policy_pb(good, "MANAGED"), policy_pb(location, kind)]
                )
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert refused.value.details().startswith("enterprise_policies[1]"), name
            assert why in refused.value.details(), name
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await worker.start(enterprise_policies=[policy_pb(good, "MANAGED")] * 11)
        listed = await worker.sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest())
        left = list(worker.config.sessions_dir.glob("*"))
    assert "at most 10 policy files" in too_many.value.details()
    assert not listed.items and not left
