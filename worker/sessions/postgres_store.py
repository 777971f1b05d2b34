"""The fleet's shared store in PostgreSQL (psycopg 3, async, pooled):
browsers, browser profiles, the index of every worker's sessions and the
workers' heartbeats.

The schema is versioned; each process migrates it at start inside one
transaction holding an advisory lock, so any number of workers and gateways
starting at once apply each step exactly once. A store that is down or
restarting answers UNAVAILABLE naming only its host and port (never the
URL: it may hold a password); the pool reconnects by itself.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import psycopg
import structlog
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from worker import ids
from worker.errors import Unavailable
from worker.sessions.model import BrowserConfig, ProfileRecord, SessionRecord
from worker.sessions.shared_store import name_taken
from worker.sessions.store import (
    browser_from_dict,
    browser_to_dict,
    session_from_dict,
    session_to_dict,
)

log = structlog.get_logger(__name__)

# pg_advisory_xact_lock key: "sandbox-worker schema" (any fixed bigint).
MIGRATION_LOCK = 0x53414E44424F58
MIGRATIONS: tuple[tuple[int, str], ...] = (
    (
        1,
        """
        CREATE TABLE meta (key text PRIMARY KEY, value text NOT NULL);
        INSERT INTO meta VALUES ('created_at', extract(epoch FROM now())::text);
        CREATE TABLE browsers (
            browser_id text PRIMARY KEY,
            name text NOT NULL UNIQUE,
            body jsonb NOT NULL
        );
        CREATE TABLE profiles (
            profile_id text PRIMARY KEY,
            name text NOT NULL UNIQUE,
            body jsonb NOT NULL,
            state bytea
        );
        CREATE TABLE workers (
            worker_id text PRIMARY KEY,
            body jsonb NOT NULL,
            started_at timestamptz NOT NULL DEFAULT now(),
            heartbeat_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE sessions (
            session_id text PRIMARY KEY,
            browser_id text NOT NULL,
            worker_id text NOT NULL,
            status text NOT NULL,
            client_token text NOT NULL,
            updated_at double precision NOT NULL,
            body jsonb NOT NULL
        );
        CREATE INDEX sessions_by_browser ON sessions (browser_id, session_id DESC);
        CREATE INDEX sessions_by_worker ON sessions (worker_id) WHERE status <> 'TERMINATED';
        CREATE INDEX sessions_by_token ON sessions (browser_id, client_token)
            WHERE client_token <> '';
        -- A clientToken's Start, fleet-wide: the first gateway to claim it
        -- places the session; the others send theirs to the same worker.
        CREATE TABLE start_claims (
            browser_id text NOT NULL,
            client_token text NOT NULL,
            worker_id text NOT NULL,
            claimed_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (browser_id, client_token)
        );
        """,
    ),
    (
        2,
        """
        -- What a gateway keeps of the token it handed out at Start, so its
        -- relay refuses a wrong one before it reaches the worker.
        ALTER TABLE sessions ADD COLUMN token_sha256 text NOT NULL DEFAULT '';
        """,
    ),
    (
        3,
        """
        -- What `forget` deletes, found without reading every row.
        CREATE INDEX sessions_ended ON sessions (updated_at) WHERE status = 'TERMINATED';
        CREATE INDEX start_claims_by_age ON start_claims (claimed_at);
        """,
    ),
)

T = TypeVar("T")


def describe(url: str) -> str:
    """host:port/db of a store URL, for logs and errors: no user, no password."""
    parts = urllib.parse.urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or ''}"


@dataclasses.dataclass(frozen=True)
class Forgotten:
    """What one `forget` deleted."""

    sessions: int
    claims: int
    workers: int


class PostgresStore:
    def __init__(
        self, pool: AsyncConnectionPool[Any], where: str, created_at: float, page_key: bytes
    ) -> None:
        self._pool = pool
        self.where = where
        self.created_at = created_at
        self.page_key = page_key  # list tokens every gateway can check

    @classmethod
    async def open(cls, url: str, timeout_s: float) -> PostgresStore:
        """Connect, migrate, and return the store; Unavailable when the
        database cannot be reached within timeout_s."""
        where = describe(url)
        pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            url,
            min_size=1,
            max_size=8,
            open=False,
            timeout=timeout_s,
            kwargs={"connect_timeout": max(1, int(timeout_s)), "autocommit": True},
            reconnect_timeout=0,  # keep retrying in the background while down
        )
        try:
            await pool.open(wait=True, timeout=timeout_s)
            async with pool.connection() as conn:
                created, page_key = await _migrate(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            await pool.close()
            raise Unavailable("", f"the store at {where} cannot be reached ({_why(exc)})") from None
        log.info("store.opened", store=where, schema=MIGRATIONS[-1][0])
        return cls(pool, where, created, page_key)

    async def close(self) -> None:
        await self._pool.close()

    async def _run(self, query: str, args: tuple[Any, ...] = ()) -> list[TupleRow]:
        async def go(conn: psycopg.AsyncConnection[Any]) -> list[TupleRow]:
            cursor = await conn.execute(query, args)
            return await cursor.fetchall() if cursor.description else []

        return await self.with_connection(go)

    async def with_connection(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Run `work(conn)`; a lost or unreachable store is Unavailable."""
        try:
            async with self._pool.connection() as conn:
                return await work(conn)
        except (psycopg.OperationalError, PoolTimeout) as exc:
            why = _why(exc)
            raise Unavailable("", f"the store at {self.where} is unavailable ({why})") from None

    # -- browsers

    async def put_browser(self, browser: BrowserConfig) -> None:
        try:
            await self._run(
                "INSERT INTO browsers (browser_id, name, body) VALUES (%s, %s, %s)",
                (browser.browser_id, browser.name, json.dumps(browser_to_dict(browser))),
            )
        except psycopg.errors.UniqueViolation:
            raise name_taken("browser", browser.name) from None

    async def get_browser(self, browser_id: str) -> BrowserConfig | None:
        rows = await self._run("SELECT body FROM browsers WHERE browser_id = %s", (browser_id,))
        return browser_from_dict(rows[0][0]) if rows else None

    async def browser_name_taken(self, name: str) -> bool:
        return bool(await self._run("SELECT 1 FROM browsers WHERE name = %s", (name,)))

    async def list_browsers(self, limit: int, after: str) -> list[BrowserConfig]:
        rows = await self._run(
            "SELECT body FROM browsers WHERE browser_id > %s ORDER BY browser_id LIMIT %s",
            (after, limit),
        )
        return [browser_from_dict(r[0]) for r in rows]

    async def delete_browser(self, browser_id: str) -> None:
        await self._run("DELETE FROM browsers WHERE browser_id = %s", (browser_id,))

    # -- browser profiles (the state is sealed by the caller)

    async def put_profile(self, profile: ProfileRecord) -> None:
        try:
            await self._run(
                "INSERT INTO profiles (profile_id, name, body) VALUES (%s, %s, %s)"
                " ON CONFLICT (profile_id) DO UPDATE SET body = excluded.body",
                (profile.profile_id, profile.name, json.dumps(dataclasses.asdict(profile))),
            )
        except psycopg.errors.UniqueViolation:
            raise name_taken("browser profile", profile.name) from None

    async def get_profile(self, profile_id: str) -> ProfileRecord | None:
        rows = await self._run("SELECT body FROM profiles WHERE profile_id = %s", (profile_id,))
        return ProfileRecord(**rows[0][0]) if rows else None

    async def profile_name_taken(self, name: str) -> bool:
        return bool(await self._run("SELECT 1 FROM profiles WHERE name = %s", (name,)))

    async def list_profiles(self, name: str, limit: int, after: str) -> list[ProfileRecord]:
        query, args = "SELECT body FROM profiles WHERE profile_id > %s", [after]
        if name:
            query += " AND name = %s"
            args.append(name)
        rows = await self._run(query + " ORDER BY profile_id LIMIT %s", (*args, limit))
        return [ProfileRecord(**r[0]) for r in rows]

    async def put_profile_state(self, profile: ProfileRecord, sealed: bytes) -> None:
        await self._run(
            "UPDATE profiles SET body = %s, state = %s WHERE profile_id = %s",
            (json.dumps(dataclasses.asdict(profile)), sealed, profile.profile_id),
        )

    async def get_profile_state(self, profile_id: str) -> bytes | None:
        rows = await self._run("SELECT state FROM profiles WHERE profile_id = %s", (profile_id,))
        return bytes(rows[0][0]) if rows and rows[0][0] is not None else None

    async def delete_profile(self, profile_id: str) -> None:
        await self._run("DELETE FROM profiles WHERE profile_id = %s", (profile_id,))

    # -- the fleet: workers and the index of their sessions

    async def heartbeat(self, worker_id: str, body: dict[str, Any]) -> None:
        await self._run(
            "INSERT INTO workers (worker_id, body) VALUES (%s, %s) ON CONFLICT (worker_id)"
            " DO UPDATE SET body = excluded.body, heartbeat_at = now()",
            (worker_id, json.dumps(body)),
        )

    async def put_sessions(self, worker_id: str, records: list[SessionRecord]) -> None:
        """Upsert a batch of a worker's session records, in one transaction."""

        async def write(conn: psycopg.AsyncConnection[Any]) -> None:
            async with conn.transaction(), conn.cursor() as cursor:
                await cursor.executemany(
                    "INSERT INTO sessions (session_id, browser_id, worker_id, status,"
                    " client_token, updated_at, body) VALUES (%s, %s, %s, %s, %s, %s, %s)"
                    " ON CONFLICT (session_id) DO UPDATE SET status = excluded.status,"
                    " updated_at = excluded.updated_at, body = excluded.body"
                    " WHERE sessions.updated_at <= excluded.updated_at"
                    " AND sessions.status <> 'TERMINATED'",  # an end is final
                    [
                        (
                            r.session_id,
                            r.browser_id,
                            worker_id,
                            r.status,
                            r.client_token,
                            r.updated_at,
                            json.dumps(session_to_dict(r)),
                        )
                        for r in records
                    ],
                )

        await self.with_connection(write)

    async def index_session(
        self,
        session_id: str,
        browser_id: str,
        worker_id: str,
        client_token: str,
        token_sha256: str = "",
    ) -> None:
        """Which worker holds a session and its token's digest, written by
        that worker while the session comes up, so any gateway can route it
        the moment it is answered; the worker's copy of the record fills the
        row in (and may have made it first: the digest is kept either way)."""
        await self._run(
            "INSERT INTO sessions (session_id, browser_id, worker_id, status, client_token,"
            " updated_at, body, token_sha256) VALUES (%s, %s, %s, 'READY', %s, 0, '{}', %s)"
            " ON CONFLICT (session_id) DO UPDATE SET token_sha256 = excluded.token_sha256",
            (session_id, browser_id, worker_id, client_token, token_sha256),
        )

    async def find_session(self, session_id: str) -> tuple[SessionRecord | None, str] | None:
        """A session's record (None until its worker copied it) and owner."""
        rows = await self._run(
            "SELECT body, worker_id FROM sessions WHERE session_id = %s", (session_id,)
        )
        if not rows:
            return None
        body, worker_id = rows[0]
        return (session_from_dict(body) if "session_id" in body else None), str(worker_id)

    async def list_sessions(
        self, browser_id: str, status: str | None, limit: int, before: str
    ) -> list[SessionRecord]:
        """Newest first across the fleet (ids are time-ordered)."""
        query = "SELECT body FROM sessions WHERE browser_id = %s AND body ? 'session_id'"
        args: list[Any] = [browser_id]
        if status:
            query += " AND status = %s"
            args.append(status)
        if before:
            query += " AND session_id < %s"
            args.append(before)
        rows = await self._run(query + " ORDER BY session_id DESC LIMIT %s", (*args, limit))
        return [session_from_dict(r[0]) for r in rows]

    async def stream_target(self, session_id: str) -> tuple[str, str] | None:
        """A session's worker and the digest of its token ("": unknown)."""
        rows = await self._run(
            "SELECT worker_id, token_sha256 FROM sessions WHERE session_id = %s", (session_id,)
        )
        return (str(rows[0][0]), str(rows[0][1])) if rows else None

    async def running_sessions_of(self, browser_id: str) -> int:
        rows = await self._run(
            "SELECT count(*) FROM sessions WHERE browser_id = %s AND status <> 'TERMINATED'",
            (browser_id,),
        )
        return int(rows[0][0])

    async def claim_start(self, browser_id: str, client_token: str, worker_id: str) -> str:
        """The worker that a clientToken's Start goes to: `worker_id` if this
        call claimed the token first, or the one an earlier claim chose."""
        rows = await self._run(
            "INSERT INTO start_claims (browser_id, client_token, worker_id) VALUES (%s, %s, %s)"
            " ON CONFLICT (browser_id, client_token) DO UPDATE"
            " SET worker_id = start_claims.worker_id RETURNING worker_id",
            (browser_id, client_token, worker_id),
        )
        return str(rows[0][0])

    async def move_claim(self, browser_id: str, client_token: str, worker_id: str) -> None:
        """The claimed worker was full or gone: the Start goes elsewhere."""
        await self._run(
            "UPDATE start_claims SET worker_id = %s WHERE browser_id = %s AND client_token = %s",
            (worker_id, browser_id, client_token),
        )

    async def mark_lost(self, worker_id: str, now: float) -> list[str]:
        """End a silent worker's sessions WORKER_LOST, once: only the caller
        that flips the worker to lost gets the session ids back."""

        async def flip(conn: psycopg.AsyncConnection[Any]) -> list[str]:
            async with conn.transaction():
                cursor = await conn.execute(
                    "UPDATE workers SET body = body || '{\"lost\": true}'::jsonb"
                    " WHERE worker_id = %s AND NOT coalesce((body->>'lost')::boolean, false)"
                    " RETURNING worker_id",
                    (worker_id,),
                )
                if await cursor.fetchone() is None:
                    return []
                cursor = await conn.execute(
                    "UPDATE sessions SET status = 'TERMINATED', updated_at = %s,"
                    " body = body || jsonb_build_object('status', 'TERMINATED',"
                    " 'termination_reason', 'WORKER_LOST', 'updated_at', %s::float8)"
                    " WHERE worker_id = %s AND status <> 'TERMINATED' RETURNING session_id",
                    (now, now, worker_id),
                )
                return [str(r[0]) for r in await cursor.fetchall()]

        return await self.with_connection(flip)

    async def lost_sessions(self, worker_id: str, session_ids: list[str]) -> list[str]:
        """Which of a worker's running sessions the fleet has ended WORKER_LOST."""
        rows = await self._run(
            "SELECT session_id FROM sessions WHERE worker_id = %s AND session_id = ANY(%s)"
            " AND body->>'termination_reason' = 'WORKER_LOST'",
            (worker_id, session_ids),
        )
        return [str(r[0]) for r in rows]

    async def forget(self, retention_s: float, worker_after_s: float) -> Forgotten:
        """Delete what the fleet no longer needs: sessions that ended more
        than the retention ago, clientToken claims as old whose session is
        not running, and workers silent for `worker_after_s` none of whose
        sessions is unfinished (while one is, the row is what lets a
        gateway end it WORKER_LOST)."""

        async def delete(conn: psycopg.AsyncConnection[Any]) -> Forgotten:
            async with conn.transaction():
                sessions = await conn.execute(
                    "DELETE FROM sessions WHERE status = 'TERMINATED' AND updated_at < %s",
                    (time.time() - retention_s,),
                )
                claims = await conn.execute(
                    "DELETE FROM start_claims c"
                    " WHERE claimed_at < now() - %s * interval '1 second'"
                    " AND NOT EXISTS (SELECT 1 FROM sessions s WHERE s.browser_id = c.browser_id"
                    " AND s.client_token = c.client_token AND s.status <> 'TERMINATED')",
                    (retention_s,),
                )
                workers = await conn.execute(
                    "DELETE FROM workers w WHERE heartbeat_at < now() - %s * interval '1 second'"
                    " AND NOT EXISTS (SELECT 1 FROM sessions s"
                    " WHERE s.worker_id = w.worker_id AND s.status <> 'TERMINATED')",
                    (worker_after_s,),
                )
                return Forgotten(sessions.rowcount, claims.rowcount, workers.rowcount)

        return await self.with_connection(delete)

    async def workers(self) -> list[tuple[str, dict[str, Any], float]]:
        """Every worker: id, what it last said, seconds since it said it."""
        rows = await self._run(
            "SELECT worker_id, body, extract(epoch FROM now() - heartbeat_at) FROM workers"
        )
        return [(r[0], r[1], float(r[2])) for r in rows]


async def _migrate(conn: psycopg.AsyncConnection[Any]) -> tuple[float, bytes]:
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations"
            " (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT version FROM schema_migrations")
        done = {row[0] for row in await cursor.fetchall()}
        for version, sql in MIGRATIONS:
            if version in done:
                continue
            await conn.execute(sql)
            await conn.execute("INSERT INTO schema_migrations (version) VALUES (%s)", (version,))
            log.info("store.migrated", version=version)
        await conn.execute(
            "INSERT INTO meta VALUES ('page_token_key', %s) ON CONFLICT DO NOTHING",
            (secrets.token_hex(32),),
        )
        cursor = await conn.execute(
            "SELECT key, value FROM meta WHERE key IN ('created_at', 'page_token_key')"
        )
        meta = dict(await cursor.fetchall())
    return float(meta.get("created_at", time.time())), bytes.fromhex(meta["page_token_key"])


def _why(exc: Exception) -> str:
    """The failure's kind and first line: psycopg's messages name host and
    port, never the password."""
    first = str(exc).strip().splitlines()[:1]
    return f"{type(exc).__name__}: {first[0]}" if first else type(exc).__name__


@dataclasses.dataclass(frozen=True)
class WorkerIndex:
    """One worker's entries in the fleet's session index."""

    store: PostgresStore
    worker_id: str

    async def session_started(self, record: SessionRecord, token: str) -> None:
        await self.store.index_session(
            record.session_id,
            record.browser_id,
            self.worker_id,
            record.client_token,
            ids.token_digest(token),
        )
