"""Hooks for the whole suite; fixtures and helpers live in tests/helpers.

Layers, as folders: unit (pure logic, no Chromium), service (a real gRPC
server whose browsers are a fake that speaks CDP), integration (real
Chromium, proxies, S3, clients) and soak (long runs: `--soak`, or the short
version CI runs)."""

from __future__ import annotations

import pytest

from helpers import faults
from worker import logs

pytest_plugins = ["helpers.fixtures", "helpers.upstreams"]


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--soak", action="store_true", help="run the soak layer at full length (10 minutes)"
    )


def pytest_configure(config: pytest.Config) -> None:
    logs.configure("json", "warning")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    faults.write_table()
