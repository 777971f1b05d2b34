"""browser-use, the agent framework, starts reliably on our sessions.

It runs in a venv of its own (`deploy/run.sh test` builds it from
tests/clients/browser_use/requirements.txt: its exact pins would clash with
ours), as a child process that drives one session per line it reads. Full
Chromium used to fail 2 starts in 7 with "Target ... not found": browser-use
initialised the browser's own UI targets, which clients no longer see."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helpers.upstreams import HOST_OVERRIDES, Origin, unique_path
from helpers.workers import ROOT, RunningWorker, make_config, running_worker
from worker.pb import sandbox_pb2 as pb

STARTS = 20  # per flavour
DRIVER = ROOT / "tests" / "clients" / "browser_use" / "drive.py"


def browser_use_python() -> Path:
    """The browser-use venv's python: $BROWSER_USE_PYTHON, or the one
    deploy/run.sh builds inside the project's venv."""
    named = os.environ.get("BROWSER_USE_PYTHON")
    python = (
        Path(named) if named else Path(sys.prefix) / "clients" / "browser_use" / "bin" / "python"
    )
    if not python.exists():
        pytest.fail(f"no browser-use venv at {python}: `bash deploy/run.sh test` builds it")
    return python


class Driver:
    """The browser-use child process: one request line in, one answer out."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def drive(self, started: pb.StartBrowserSessionResponse, url: str) -> dict[str, object]:
        stream = started.streams.automation_stream
        request = {"endpoint": stream.stream_endpoint, "token": stream.token, "url": url}
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 90)
        assert line, "the browser-use driver exited"
        answer: dict[str, object] = json.loads(line)
        return answer


@pytest_asyncio.fixture
async def driver(tmp_path: Path) -> AsyncIterator[Driver]:
    home = tmp_path / "home"
    home.mkdir()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),  # browser-use keeps its config and profiles here
        "ANONYMIZED_TELEMETRY": "false",  # no requests of its own either
        "BROWSER_USE_CLOUD_SYNC": "false",
        "BROWSER_USE_LOGGING_LEVEL": "warning",
    }
    with (tmp_path / "driver.log").open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            str(browser_use_python()),
            str(DRIVER),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=log,
            env=env,
            start_new_session=True,
        )
        try:
            yield Driver(process)
        finally:
            if process.stdin is not None:
                process.stdin.close()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                os.killpg(process.pid, 9)
                await process.wait()


@pytest_asyncio.fixture
async def worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    config = make_config(tmp_path, host_overrides=HOST_OVERRIDES, max_sessions=2)
    async with running_worker(config) as running:
        yield running


@pytest.mark.timeout(600)
@pytest.mark.parametrize("flavour", [pb.CHROMIUM, pb.HEADLESS_SHELL], ids=["chromium", "shell"])
async def test_browser_use_starts_every_time(
    worker: RunningWorker, driver: Driver, origin: Origin, flavour: int
) -> None:
    created = await worker.browsers.CreateBrowser(
        pb.CreateBrowserRequest(name="agent", flavour=flavour)
    )
    answers, urls = [], []
    for i in range(STARTS):
        started = await worker.start(browser_identifier=created.browser_id)
        path = unique_path(f"bu{i}")
        urls.append(origin.url("web.example.test", path))
        try:
            answers.append(await driver.drive(started, urls[-1]))
        finally:
            await worker.stop(started.session_id, created.browser_id)
        assert origin.requests_for(path), answers[-1]
    failed = [a for a in answers if not a["ok"]]
    assert not failed, failed
    # browser-use's agent tab is the page it navigated, in every session,
    # and it was shown pages only: never the browser's UI (which it used to
    # attach to and initialise, and trip over when one went away).
    assert [a["url"] for a in answers] == urls
    assert {t for a in answers for t in a["target_types"]} == {"page"}
