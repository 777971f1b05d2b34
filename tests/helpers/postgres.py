"""A real PostgreSQL for the tests (worker.cli.local_postgres: initdb in a
fresh directory, run as an unprivileged user on a loopback port, killed by
process group whatever happens); its stop() and start() restart it on the
same port and data, as an operator's restart would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from helpers.upstreams import free_port
from worker.cli.local_postgres import LocalPostgres, local_postgres

Postgres = LocalPostgres


@contextlib.contextmanager
def postgres() -> Iterator[LocalPostgres]:
    with local_postgres(free_port()) as server:
        yield server
