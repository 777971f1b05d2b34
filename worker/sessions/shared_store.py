"""Records that every process of a fleet shares: browsers and browser
profiles (their sealed states too). One worker alone keeps them in its
SQLite state file (`LocalShared`, the embedded default); a fleet keeps them
in PostgreSQL (`postgres_store`), chosen by SANDBOX_STORE_URL.

Every call is a coroutine: a store across the network must never stall the
event loop that relays CDP, and a store that is down answers UNAVAILABLE
instead of hanging a call.
"""

from __future__ import annotations

import sqlite3
from typing import Protocol

from worker.errors import AlreadyExists
from worker.sessions.model import BrowserConfig, ProfileRecord, SessionRecord
from worker.sessions.store import Store


class SessionIndex(Protocol):
    """Where a fleet learns which worker runs a session: gateways route
    each call and stream by it. A lone worker has none."""

    async def session_started(self, record: SessionRecord, token: str) -> None: ...


class SharedStore(Protocol):
    created_at: float  # when the shared state was first made

    async def put_browser(self, browser: BrowserConfig) -> None: ...
    async def get_browser(self, browser_id: str) -> BrowserConfig | None: ...
    async def browser_name_taken(self, name: str) -> bool: ...
    async def list_browsers(self, limit: int, after: str) -> list[BrowserConfig]: ...
    async def delete_browser(self, browser_id: str) -> None: ...
    async def put_profile(self, profile: ProfileRecord) -> None: ...
    async def get_profile(self, profile_id: str) -> ProfileRecord | None: ...
    async def profile_name_taken(self, name: str) -> bool: ...
    async def list_profiles(self, name: str, limit: int, after: str) -> list[ProfileRecord]: ...
    async def put_profile_state(self, profile: ProfileRecord, sealed: bytes) -> None: ...
    async def get_profile_state(self, profile_id: str) -> bytes | None: ...
    async def delete_profile(self, profile_id: str) -> None: ...


def name_taken(kind: str, name: str) -> AlreadyExists:
    return AlreadyExists("name", f"a {kind} named '{name}' already exists")


class LocalShared:
    """The worker's own state file: SQLite calls well under a millisecond,
    made on the loop (see store.py)."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.created_at = store.created_at

    async def put_browser(self, browser: BrowserConfig) -> None:
        try:
            self._store.put_browser(browser)
        except sqlite3.IntegrityError:
            raise name_taken("browser", browser.name) from None

    async def get_browser(self, browser_id: str) -> BrowserConfig | None:
        return self._store.get_browser(browser_id)

    async def browser_name_taken(self, name: str) -> bool:
        return self._store.browser_name_taken(name)

    async def list_browsers(self, limit: int, after: str) -> list[BrowserConfig]:
        return self._store.list_browsers(limit, after)

    async def delete_browser(self, browser_id: str) -> None:
        self._store.delete_browser(browser_id)

    async def put_profile(self, profile: ProfileRecord) -> None:
        try:
            self._store.put_profile(profile)
        except sqlite3.IntegrityError:
            raise name_taken("browser profile", profile.name) from None

    async def get_profile(self, profile_id: str) -> ProfileRecord | None:
        return self._store.get_profile(profile_id)

    async def profile_name_taken(self, name: str) -> bool:
        return self._store.profile_name_taken(name)

    async def list_profiles(self, name: str, limit: int, after: str) -> list[ProfileRecord]:
        return self._store.list_profiles(name, limit, after)

    async def put_profile_state(self, profile: ProfileRecord, sealed: bytes) -> None:
        self._store.put_profile_state(profile, sealed)

    async def get_profile_state(self, profile_id: str) -> bytes | None:
        return self._store.get_profile_state(profile_id)

    async def delete_profile(self, profile_id: str) -> None:
        self._store.delete_profile(profile_id)
