"""Browser profiles: named, saved cookies and local storage that a session
can start with (the hosted API's CreateBrowserProfile, SaveBrowserSession
Profile, profileConfiguration).

A save replaces the whole stored state (no merge); a session reads the
state once, at its start, so later saves do not reach running sessions, and
two sessions may start from one profile (the last save wins). The state is
sealed (profile_vault) before it reaches the store and is never logged or
recorded; its size is bounded by `profile_max_mb`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from worker import ids
from worker.config import Config
from worker.errors import AlreadyExists, NotFound, ResourceExhausted, Unavailable
from worker.sessions.model import ProfileRecord
from worker.sessions.profile_vault import Vault, VaultError
from worker.sessions.shared_store import SharedStore


class ProfileCatalog:
    def __init__(self, config: Config, store: SharedStore) -> None:
        self._store = store
        self._vault = Vault.load(config.profile_key_file, config.state_dir)
        self._max_bytes = config.profile_max_mb * 1024 * 1024

    async def create(self, name: str, description: str) -> ProfileRecord:
        if await self._store.profile_name_taken(name):
            raise AlreadyExists("name", f"a browser profile named '{name}' already exists")
        now = time.time()
        profile = ProfileRecord(ids.new_browser_id(name), name, description, now, now)
        await self._store.put_profile(profile)
        return profile

    async def get(self, profile_id: str) -> ProfileRecord:
        profile = await self._store.get_profile(profile_id)
        if profile is None:
            raise NotFound("profile_id", f"no browser profile '{profile_id}'")
        return profile

    async def list(self, name: str, limit: int, after: str) -> tuple[list[ProfileRecord], str]:
        """A page of profiles, and the id the next page starts after ("": none)."""
        found = await self._store.list_profiles(name, limit + 1, after)
        page = found[:limit]
        return page, page[-1].profile_id if len(found) > limit else ""

    async def delete(self, profile_id: str) -> ProfileRecord:
        """Gone with its state. Running sessions keep what they started with."""
        profile = await self.get(profile_id)
        await self._store.delete_profile(profile_id)
        return dataclasses.replace(profile, status="DELETED", updated_at=time.time())

    async def save(
        self, profile_id: str, state: dict[str, Any], session_id: str, browser_id: str
    ) -> ProfileRecord:
        profile = await self.get(profile_id)
        data = json.dumps(state, separators=(",", ":")).encode()
        if len(data) > self._max_bytes:
            raise ResourceExhausted(
                "profile_identifier",
                f"the session's state is {len(data) / 2**20:.1f} MiB, over the"
                f" {self._max_bytes >> 20} MiB a profile holds (profile_max_mb)",
            )
        now = time.time()
        saved = dataclasses.replace(
            profile,
            updated_at=now,
            saved_at=now,
            saved_session_id=session_id,
            saved_browser_id=browser_id,
            saved_bytes=len(data),
        )
        await self._store.put_profile_state(saved, self._vault.seal(data, profile_id))
        return saved

    async def state(self, profile_id: str) -> dict[str, Any]:
        """The profile's saved state ({} before its first save)."""
        await self.get(profile_id)
        sealed = await self._store.get_profile_state(profile_id)
        if sealed is None:
            return {}
        try:
            return dict(json.loads(self._vault.open(sealed, profile_id)))
        except VaultError as exc:
            raise Unavailable("profile_configuration.profile_identifier", str(exc)) from None
