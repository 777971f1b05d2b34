"""The service layer: a real worker (gRPC server, HTTP API, automation
endpoint, relay, store) whose browsers are `helpers.fake_browser`, so the
manager's and the servicers' logic runs in seconds. Here `worker` is that
worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from helpers import fake_browser
from helpers.workers import RunningWorker, make_config, running_worker
from worker.config import Config


@pytest.fixture(scope="session")
def fake_binary(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("fake-browser") / "chromium"
    path.write_text(fake_browser.script())
    path.chmod(0o755)
    return path


def fake_config(tmp_path: Path, binary: Path, **fields: object) -> Config:
    """A worker's settings with both flavours played by the fake browser."""
    return make_config(
        tmp_path,
        chromium_path=str(binary),
        headless_shell_path=str(binary),
        browser_sandbox="off",
        **fields,
    )


@pytest_asyncio.fixture
async def worker(tmp_path: Path, fake_binary: Path) -> AsyncIterator[RunningWorker]:
    async with running_worker(fake_config(tmp_path, fake_binary)) as running:
        yield running
