"""The state file: browsers, sessions and browser profiles in one embedded
SQLite database.

Browsers persist so they survive restarts. Sessions persist so a worker that
was SIGKILLed can find the browsers it left running (pid and directory are
recorded before the browser is launched) and so ended sessions stay listable.
Writes are small and use WAL with synchronous=NORMAL: well under a
millisecond, cheap enough to run on the event loop.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from worker.sessions.model import (
    STARTING,
    TERMINATED,
    BrowserConfig,
    PolicyFile,
    ProfileRecord,
    RecordingConfig,
    SessionRecord,
    Viewport,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS browsers (
    browser_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    browser_id TEXT NOT NULL,
    status TEXT NOT NULL,
    client_token TEXT NOT NULL,
    updated_at REAL NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_by_browser ON sessions (browser_id, session_id);
CREATE INDEX IF NOT EXISTS sessions_by_token ON sessions (browser_id, client_token);
CREATE INDEX IF NOT EXISTS sessions_by_update ON sessions (updated_at);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS profiles (
    profile_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    state BLOB
);
"""


class Store:
    def __init__(self, path: Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._db.execute(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('created_at', ?)", (str(time.time()),)
        )
        row = self._db.execute("SELECT value FROM meta WHERE key = 'created_at'").fetchone()
        self.created_at = float(row[0])  # when this state was first made

    def close(self) -> None:
        self._db.close()

    # -- browsers

    def put_browser(self, browser: BrowserConfig) -> None:
        body = json.dumps(browser_to_dict(browser))
        self._db.execute(
            "INSERT INTO browsers (browser_id, name, body) VALUES (?, ?, ?)",
            (browser.browser_id, browser.name, body),
        )

    def get_browser(self, browser_id: str) -> BrowserConfig | None:
        row = self._db.execute(
            "SELECT body FROM browsers WHERE browser_id = ?", (browser_id,)
        ).fetchone()
        return browser_from_dict(json.loads(row[0])) if row else None

    def browser_name_taken(self, name: str) -> bool:
        row = self._db.execute("SELECT 1 FROM browsers WHERE name = ?", (name,)).fetchone()
        return row is not None

    def list_browsers(self, limit: int, after: str) -> list[BrowserConfig]:
        rows = self._db.execute(
            "SELECT body FROM browsers WHERE browser_id > ? ORDER BY browser_id LIMIT ?",
            (after, limit),
        ).fetchall()
        return [browser_from_dict(json.loads(r[0])) for r in rows]

    def delete_browser(self, browser_id: str) -> None:
        self._db.execute("DELETE FROM browsers WHERE browser_id = ?", (browser_id,))

    # -- browser profiles (the state is sealed by the caller)

    def put_profile(self, profile: ProfileRecord) -> None:
        """Insert or update a profile's description, keeping its state."""
        self._db.execute(
            "INSERT INTO profiles (profile_id, name, body) VALUES (?, ?, ?)"
            " ON CONFLICT (profile_id) DO UPDATE SET body = excluded.body",
            (profile.profile_id, profile.name, json.dumps(dataclasses.asdict(profile))),
        )

    def get_profile(self, profile_id: str) -> ProfileRecord | None:
        row = self._db.execute(
            "SELECT body FROM profiles WHERE profile_id = ?", (profile_id,)
        ).fetchone()
        return ProfileRecord(**json.loads(row[0])) if row else None

    def profile_name_taken(self, name: str) -> bool:
        return (
            self._db.execute("SELECT 1 FROM profiles WHERE name = ?", (name,)).fetchone()
            is not None
        )

    def list_profiles(self, name: str, limit: int, after: str) -> list[ProfileRecord]:
        query, args = "SELECT body FROM profiles WHERE profile_id > ?", [after]
        if name:
            query += " AND name = ?"
            args.append(name)
        rows = self._db.execute(query + " ORDER BY profile_id LIMIT ?", (*args, limit))
        return [ProfileRecord(**json.loads(r[0])) for r in rows]

    def put_profile_state(self, profile: ProfileRecord, sealed: bytes) -> None:
        """A save: the record and its state replace the old ones together."""
        self._db.execute(
            "UPDATE profiles SET body = ?, state = ? WHERE profile_id = ?",
            (json.dumps(dataclasses.asdict(profile)), sealed, profile.profile_id),
        )

    def get_profile_state(self, profile_id: str) -> bytes | None:
        row = self._db.execute(
            "SELECT state FROM profiles WHERE profile_id = ?", (profile_id,)
        ).fetchone()
        return bytes(row[0]) if row and row[0] is not None else None

    def delete_profile(self, profile_id: str) -> None:
        self._db.execute("DELETE FROM profiles WHERE profile_id = ?", (profile_id,))

    # -- sessions

    def put_session(self, record: SessionRecord) -> None:
        """Insert or replace a session's row."""
        self._db.execute(
            "INSERT OR REPLACE INTO sessions"
            " (session_id, browser_id, status, client_token, updated_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (
                record.session_id,
                record.browser_id,
                record.status,
                record.client_token,
                record.updated_at,
                json.dumps(session_to_dict(record)),
            ),
        )

    def get_session(self, session_id: str) -> SessionRecord | None:
        row = self._db.execute(
            "SELECT body FROM sessions WHERE session_id = ?", (session_id,)
        ).fetchone()
        return session_from_dict(json.loads(row[0])) if row else None

    def find_by_client_token(self, browser_id: str, token: str) -> SessionRecord | None:
        row = self._db.execute(
            "SELECT body FROM sessions WHERE browser_id = ? AND client_token = ?",
            (browser_id, token),
        ).fetchone()
        return session_from_dict(json.loads(row[0])) if row else None

    def list_sessions(
        self, browser_id: str, status: str | None, limit: int, before: str
    ) -> list[SessionRecord]:
        """Newest first (session ids are time-ordered ULIDs)."""
        query = "SELECT body FROM sessions WHERE browser_id = ? AND status != ?"
        args: list[Any] = [browser_id, STARTING]
        if status:
            query += " AND status = ?"
            args.append(status)
        if before:
            query += " AND session_id < ?"
            args.append(before)
        query += " ORDER BY session_id DESC LIMIT ?"
        args.append(limit)
        return [session_from_dict(json.loads(r[0])) for r in self._db.execute(query, args)]

    def sessions_changed_since(self, since: float) -> list[SessionRecord]:
        rows = self._db.execute(
            "SELECT body FROM sessions WHERE updated_at >= ? AND status != ?", (since, STARTING)
        ).fetchall()
        return [session_from_dict(json.loads(r[0])) for r in rows]

    def unfinished_sessions(self) -> list[SessionRecord]:
        rows = self._db.execute(
            "SELECT body FROM sessions WHERE status != ?", (TERMINATED,)
        ).fetchall()
        return [session_from_dict(json.loads(r[0])) for r in rows]

    def purge_terminated(self, updated_before: float) -> int:
        cursor = self._db.execute(
            "DELETE FROM sessions WHERE status = ? AND updated_at < ?",
            (TERMINATED, updated_before),
        )
        return cursor.rowcount


def browser_to_dict(b: BrowserConfig) -> dict[str, Any]:
    return {
        "browser_id": b.browser_id,
        "name": b.name,
        "description": b.description,
        "flavour": b.flavour,
        "recording": vars(b.recording),
        "certificate_arns": list(b.certificate_arns),
        "policies": [p.to_dict() for p in b.policies],
        "created_at": b.created_at,
        "updated_at": b.updated_at,
    }


def browser_from_dict(d: dict[str, Any]) -> BrowserConfig:
    return BrowserConfig(
        browser_id=d["browser_id"],
        name=d["name"],
        description=d["description"],
        flavour=d["flavour"],
        recording=RecordingConfig(**d["recording"]),
        certificate_arns=tuple(d["certificate_arns"]),
        created_at=d["created_at"],
        updated_at=d["updated_at"],
        policies=tuple(PolicyFile.from_dict(p) for p in d.get("policies", ())),
    )


def session_to_dict(s: SessionRecord) -> dict[str, Any]:
    d = dict(vars(s))
    d["viewport"] = [s.viewport.width, s.viewport.height]
    return d


def session_from_dict(d: dict[str, Any]) -> SessionRecord:
    d = dict(d)
    d["viewport"] = Viewport(*d["viewport"])
    return SessionRecord(**d)
