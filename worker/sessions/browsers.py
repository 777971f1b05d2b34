"""Browsers (the hosted API's "tools"): configuration every session of a
browser shares, kept in the store so they survive restarts. The built-in
browser exists without being created and cannot be deleted; a browser with
running sessions cannot be deleted either."""

from __future__ import annotations

import time

import structlog

from worker import ids
from worker.config import Config
from worker.errors import AlreadyExists, FailedPrecondition, NotFound
from worker.sessions.model import DEFAULT_BROWSER_ID, BrowserConfig, PolicyFile, RecordingConfig
from worker.sessions.registry import Registry
from worker.sessions.shared_store import SharedStore

log = structlog.get_logger(__name__)


class BrowserCatalog:
    def __init__(self, config: Config, store: SharedStore, registry: Registry) -> None:
        self._store = store
        self._registry = registry  # read only: which sessions run
        self._builtin = BrowserConfig(
            browser_id=DEFAULT_BROWSER_ID,
            name="default",
            description="The built-in browser: exists without CreateBrowser.",
            flavour=config.default_flavour,
            recording=RecordingConfig(),
            certificate_arns=(),
            # When this worker's state was made: the built-in browser has
            # existed since, and it never changes.
            created_at=store.created_at,
            updated_at=store.created_at,
            built_in=True,
        )

    async def get(self, browser_id: str) -> BrowserConfig:
        if browser_id == DEFAULT_BROWSER_ID:
            return self._builtin
        browser = await self._store.get_browser(browser_id)
        if browser is None:
            raise NotFound("browser_identifier", f"no browser '{browser_id}'")
        return browser

    async def create(
        self,
        name: str,
        description: str,
        flavour: str,
        recording: RecordingConfig,
        certificate_arns: tuple[str, ...],
        policies: tuple[PolicyFile, ...] = (),
    ) -> BrowserConfig:
        if name == self._builtin.name or await self._store.browser_name_taken(name):
            raise AlreadyExists("name", f"a browser named '{name}' already exists")
        now = time.time()
        browser = BrowserConfig(
            browser_id=ids.new_browser_id(name),
            name=name,
            description=description,
            flavour=flavour,
            recording=recording,
            certificate_arns=certificate_arns,
            created_at=now,
            updated_at=now,
            policies=policies,
        )
        await self._store.put_browser(browser)
        log.info("browser.created", browser_id=browser.browser_id, flavour=flavour)
        return browser

    async def list(
        self, limit: int, after: str, kind: str | None = None
    ) -> tuple[list[BrowserConfig], str]:
        """The built-in browser first (SYSTEM), then created ones (CUSTOM)
        by id; returns the page and the id it ends at, if more follow."""
        head = [self._builtin] if not after and kind != "CUSTOM" else []
        rows = (
            []
            if kind == "SYSTEM"
            else await self._store.list_browsers(limit + 1 - len(head), after)
        )
        page = (head + rows)[:limit]
        more = len(head) + len(rows) > limit
        return page, page[-1].browser_id if more and page else ""

    async def delete(self, browser_id: str) -> BrowserConfig:
        browser = await self.get(browser_id)
        if browser.built_in:
            raise FailedPrecondition("browser_id", "the built-in browser cannot be deleted")
        live = self._registry.live.values()
        running = sum(1 for s in live if s.record.browser_id == browser_id)
        if running:
            raise FailedPrecondition(
                "browser_id", f"{running} session(s) of this browser are running; stop them first"
            )
        await self._store.delete_browser(browser_id)
        log.info("browser.deleted", browser_id=browser_id)
        return browser
