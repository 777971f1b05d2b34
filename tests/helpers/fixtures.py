"""Fixtures every layer may ask for by name: an in-process worker with real
browsers, and a loopback origin serving tests/pages."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio

from helpers.workers import RunningWorker, make_config, running_worker
from worker.cli.loopback import serving_directory

PAGES = Path(__file__).resolve().parent.parent / "pages"


@pytest_asyncio.fixture
async def worker(tmp_path: Path) -> AsyncIterator[RunningWorker]:
    async with running_worker(make_config(tmp_path)) as running:
        yield running


@pytest.fixture(scope="session")
def web() -> Iterator[str]:
    """A loopback origin serving tests/pages; yields its base URL."""
    with serving_directory(PAGES) as url:
        yield url
