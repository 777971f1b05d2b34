"""Chromium extensions on StartBrowserSession: ZIPs read from S3
(moto_server) with the worker's credentials, checked, unpacked per session
and loaded in full Chromium; a bad one fails the Start naming the field and
leaves nothing behind."""

from __future__ import annotations

import json
import os
from pathlib import Path

import grpc
import pytest
from botocore.exceptions import ClientError
from playwright.async_api import Error as PlaywrightError

from helpers.addons import MARKER_SCRIPT, extension_pb, manifest, marker_extension, put, zip_of
from helpers.daemon import cli, daemon
from helpers.hosted import client, first_page, keys_file
from helpers.upstreams import SecretsManager
from helpers.workers import (
    browser_root,
    connected_page,
    make_config,
    running_worker,
    worker_processes,
)
from worker.pb import sandbox_pb2 as pb

pytestmark = pytest.mark.integration

BUILT_IN = "aws.browser.v1"


async def test_an_extension_from_s3_changes_the_pages_a_playwright_client_sees(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    location = put(moto, bucket, "extensions/marker.zip", marker_extension())
    config = make_config(tmp_path, http_api_keys_file=keys_file(tmp_path))
    async with running_worker(config) as worker:
        data = client(worker, "bedrock-agentcore")
        started = await data.start_browser_session(
            browserIdentifier=BUILT_IN, extensions=[{"location": {"s3": location}}]
        )
        plain = await data.start_browser_session(browserIdentifier=BUILT_IN)
        try:
            got = await data.get_browser_session(
                browserIdentifier=BUILT_IN, sessionId=started["sessionId"]
            )
            async with first_page(started) as page:
                await page.goto(f"{web}/index.html")
                marked = await page.evaluate("document.documentElement.dataset.marked")
                title = await page.title()
            async with first_page(plain) as page:
                await page.goto(f"{web}/index.html")
                unmarked = await page.evaluate("document.documentElement.dataset.marked")
        finally:
            for s in (started, plain):
                await data.stop_browser_session(
                    browserIdentifier=BUILT_IN, sessionId=s["sessionId"]
                )
    assert marked == "yes" and title == "marked: sandbox test page"
    assert unmarked is None
    assert got["extensions"] == [{"location": {"s3": location}}]


BAD = {
    "not a zip": (b"PK\x03\x04 but not really a zip", "is not a ZIP file"),
    "no manifest": (zip_of({"folder/manifest.json": json.dumps(manifest())}), "no manifest.json"),
    "manifest v2": (
        zip_of({"manifest.json": json.dumps(manifest(manifest_version=2)), "mark.js": ""}),
        "only manifest_version 3",
    ),
    "escaping path": (
        zip_of({"manifest.json": json.dumps(manifest()), "../../evil.js": "x"}),
        "a path outside the extension's folder",
    ),
    "too large": (os.urandom(10 * 1024 * 1024 + 1), "the limit is 10485760"),
}


async def test_a_bad_extension_fails_the_start_naming_the_field_and_leaves_nothing(
    tmp_path: Path, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    async with running_worker(make_config(tmp_path)) as worker:
        good = put(moto, bucket, "good.zip", marker_extension())
        cases = {
            name: (put(moto, bucket, f"{name}.zip", data), why) for name, (data, why) in BAD.items()
        }
        cases["missing"] = ({"bucket": bucket, "prefix": "nowhere.zip"}, "does not exist")
        for name, (location, why) in cases.items():
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await worker.start(extensions=[extension_pb(good), extension_pb(location)])
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert refused.value.details().startswith("extensions[1].location.s3: "), name
            assert why in refused.value.details(), name
        listed = await worker.sessions.ListBrowserSessions(pb.ListBrowserSessionsRequest())
        leftovers = list(browser_root(worker.config.state_dir).glob("*"))
        sessions_dir = list(worker.config.sessions_dir.glob("*"))
        assert not listed.items and not leftovers and not sessions_dir
        assert not worker_processes(worker.config.state_dir)


async def test_the_headless_shell_refuses_extensions_before_reading_them(
    tmp_path: Path, moto: SecretsManager
) -> None:
    location = {"bucket": moto.bucket(), "prefix": "never-read.zip"}
    async with running_worker(make_config(tmp_path)) as worker:
        shell = await worker.browsers.CreateBrowser(
            pb.CreateBrowserRequest(name="lean", flavour=pb.HEADLESS_SHELL)
        )
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await worker.start(
                browser_identifier=shell.browser_id, extensions=[extension_pb(location)]
            )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "headless shell cannot load extensions" in refused.value.details()


async def test_an_extension_is_downloaded_once_again_when_changed_and_never_pooled(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    location = put(moto, bucket, "marker.zip", marker_extension())
    # A pooled browser has no extensions: these sessions must start cold.
    async with running_worker(make_config(tmp_path, warm_pool=("chromium=1",))) as worker:
        cache = worker.config.state_dir / "s3-cache"
        for _ in range(2):
            started = await worker.start(extensions=[extension_pb(location)])
            await worker.stop(started.session_id)
        assert len(list(cache.iterdir())) == 1
        changed = {"manifest.json": json.dumps(manifest(version="2.0")), "mark.js": MARKER_SCRIPT}
        put(moto, bucket, "marker.zip", zip_of(changed))  # a new ETag
        started = await worker.start(extensions=[extension_pb(location)])
        try:
            async with connected_page(started) as page:
                await page.goto(f"{web}/index.html")
                assert await page.title() == "marked: sandbox test page"
        finally:
            await worker.stop(started.session_id)
        assert len(list(cache.iterdir())) == 2


async def test_boto3_is_told_which_extension_field_is_wrong(
    tmp_path: Path, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    config = make_config(tmp_path, http_api_keys_file=keys_file(tmp_path))
    async with running_worker(config) as worker:
        data = client(worker, "bedrock-agentcore")
        with pytest.raises(ClientError) as refused:
            await data.start_browser_session(
                browserIdentifier=BUILT_IN,
                extensions=[{"location": {"s3": {"bucket": bucket, "prefix": "gone.zip"}}}],
            )
    error = refused.value.response["Error"]
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert error["Code"] == "ValidationException"
    assert error["Message"].startswith("extensions[0].location.s3: ")
    assert "does not exist" in error["Message"]


async def test_the_cli_starts_a_session_of_a_governed_browser_with_an_extension(
    tmp_path: Path, web: str, moto: SecretsManager
) -> None:
    bucket = moto.bucket()
    put(moto, bucket, "marker.zip", marker_extension())
    put(moto, bucket, "block.json", json.dumps({"URLBlocklist": ["*/second.html"]}).encode())
    with daemon(tmp_path / "state") as (_, info):
        target = info["grpc"]
        policy = f"managed=s3://{bucket}/block.json"
        browser = cli(target, "browser", "create", "governed", "--policy", policy)["browserId"]
        started = cli(
            target,
            "session",
            "start",
            "--browser",
            browser,
            "--extension",
            f"s3://{bucket}/marker.zip",
        )
        async with first_page(started) as page:
            await page.goto(f"{web}/index.html")
            title = await page.title()
            with pytest.raises(PlaywrightError) as blocked:
                await page.goto(f"{web}/second.html")
        shown = cli(target, "session", "get", started["sessionId"], "--browser", browser)
        cli(target, "session", "stop", started["sessionId"], "--browser", browser)
    assert title == "marked: sandbox test page"
    assert "ERR_BLOCKED_BY_ADMINISTRATOR" in str(blocked.value)
    assert shown["extensions"][0]["location"]["s3"] == {"bucket": bucket, "prefix": "marker.zip"}
