"""Browsers (tool-level configuration): CRUD, persistence, refusals."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

from helpers.workers import RunningWorker, make_config, running_worker
from worker.pb import sandbox_pb2 as pb


async def test_the_built_in_browser_exists_without_being_created(worker: RunningWorker) -> None:
    browser = await worker.browsers.GetBrowser(pb.GetBrowserRequest(browser_id="aws.browser.v1"))
    assert browser.built_in and browser.flavour == pb.CHROMIUM
    listed = await worker.browsers.ListBrowsers(pb.ListBrowsersRequest())
    assert [b.browser_id for b in listed.browsers] == ["aws.browser.v1"]


async def test_created_browsers_survive_a_restart(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    async with running_worker(config) as worker:
        created = await worker.browsers.CreateBrowser(
            pb.CreateBrowserRequest(name="lean", flavour=pb.HEADLESS_SHELL, description="fast")
        )
        assert created.browser_id.startswith("lean-") and created.status == pb.BROWSER_READY
        assert created.browser_arn.endswith("browser/" + created.browser_id)
    async with running_worker(config) as worker:
        again = await worker.browsers.GetBrowser(
            pb.GetBrowserRequest(browser_id=created.browser_id)
        )
        assert (again.name, again.flavour, again.description) == ("lean", pb.HEADLESS_SHELL, "fast")


async def test_a_duplicate_name_is_already_exists(worker: RunningWorker) -> None:
    await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="dup"))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="dup"))
    assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert info.value.details().startswith("name:")


async def test_list_browsers_pages_through_every_browser(worker: RunningWorker) -> None:
    for n in range(5):
        await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name=f"b{n}"))
    seen: list[str] = []
    token = ""
    for _ in range(10):
        page = await worker.browsers.ListBrowsers(
            pb.ListBrowsersRequest(max_results=2, next_token=token)
        )
        seen += [b.name for b in page.browsers]
        token = page.next_token
        if not token:
            break
    assert seen == ["default", "b0", "b1", "b2", "b3", "b4"]


async def test_delete_removes_a_browser_but_never_the_built_in_one(worker: RunningWorker) -> None:
    created = await worker.browsers.CreateBrowser(pb.CreateBrowserRequest(name="gone"))
    deleted = await worker.browsers.DeleteBrowser(
        pb.DeleteBrowserRequest(browser_id=created.browser_id)
    )
    assert deleted.status == pb.BROWSER_DELETED
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.browsers.GetBrowser(pb.GetBrowserRequest(browser_id=created.browser_id))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await worker.browsers.DeleteBrowser(pb.DeleteBrowserRequest(browser_id="aws.browser.v1"))
    assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_recording_settings_and_execution_role_are_stored_on_the_browser(
    worker: RunningWorker,
) -> None:
    role = "arn:aws:iam::123456789012:role/recorder"
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(
            name="rec",
            recording=pb.RecordingConfig(
                enabled=True, s3_location=pb.S3Location(bucket="recordings", prefix="/a/b/")
            ),
            execution_role_arn=role,
        )
    )
    got = await worker.browsers.GetBrowser(pb.GetBrowserRequest(browser_id=created.browser_id))
    assert got.recording.enabled and got.recording.s3_location.prefix == "a/b"
    assert got.execution_role_arn == role
