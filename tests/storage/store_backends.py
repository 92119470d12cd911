"""Storage backends the Store contract suite runs against.

A backend factory builds one fresh, isolated database and can open any number of store
instances on it (two instances on one database stand in for two Raven processes; each
PostgresStore has its own connection pool).

- "sqlite": a new file under the test's tmp_path.
- "postgres": a fresh random schema in the database at $RAVEN_TEST_DATABASE_URL (default
  postgresql://postgres@127.0.0.1:5432/test), dropped afterwards. When that server cannot be
  reached within 2 s, every postgres test is SKIPPED with the reason (never silently passed).
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

import asyncpg
from tests_support import backend_missing

from raven_service.core.ports import Store
from raven_service.core.types import UsageRecord
from raven_service.storage import migrations
from raven_service.storage.postgres import PostgresStore
from raven_service.storage.sqlite import SqliteStore


class MigratingStore(Store, Protocol):
    """The port plus what every backend offers `raven db upgrade` and `raven usage export`."""

    async def upgrade(self) -> list[int]: ...

    async def current_version(self) -> int: ...

    def export_usage(self, *, page_size: int = ...) -> AsyncIterator[UsageRecord]: ...


class Backend(Protocol):
    """One fresh database of one kind."""

    name: str
    migrations: Sequence[migrations.Migration]

    def make_store(self) -> MigratingStore:
        """A new, not yet opened store instance on this backend's database."""
        ...


class SqliteBackend:
    name = "sqlite"
    migrations = migrations.SQLITE

    def __init__(self, path: Path) -> None:
        self.path = path

    def make_store(self) -> MigratingStore:
        return SqliteStore(self.path)


@asynccontextmanager
async def sqlite_backend(tmp_path: Path) -> AsyncIterator[Backend]:
    yield SqliteBackend(tmp_path / "state" / "raven.db")


POSTGRES_URL = os.environ.get("RAVEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
POSTGRES_CONNECT_TIMEOUT = 2.0
_postgres_problem: list[str | None] = []  # memo of the reachability check: [] = not checked yet


async def postgres_unreachable() -> str | None:
    """Why PostgreSQL at POSTGRES_URL cannot be used (None if it can); checked once per run."""
    if not _postgres_problem:
        where = urlsplit(POSTGRES_URL)
        target = f"{where.hostname}:{where.port or 5432}{where.path}"  # no credentials in the reason
        try:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=POSTGRES_CONNECT_TIMEOUT)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            problem: str | None = (
                f"PostgreSQL unreachable at {target} ({type(exc).__name__}: {exc}); "
                "set RAVEN_TEST_DATABASE_URL to run the postgres backend"
            )
        else:
            await conn.close()
            problem = None
        _postgres_problem.append(problem)
    return _postgres_problem[0]


class PostgresBackend:
    name = "postgres"
    migrations = migrations.POSTGRES

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema

    def make_store(self, *, auto_upgrade: bool = True, max_size: int = 10) -> PostgresStore:
        """auto_upgrade by default, as the contract opens fresh databases like SqliteStore does."""
        return PostgresStore(self.url, schema=self.schema, auto_upgrade=auto_upgrade, max_size=max_size)

    async def connect(self) -> asyncpg.Connection:
        """A plain connection with this backend's schema on its search_path (for raw checks)."""
        quoted = '"' + self.schema.replace('"', '""') + '"'
        return await asyncpg.connect(self.url, server_settings={"search_path": quoted})

    async def connect_at(self, applied: Sequence[migrations.Migration]) -> asyncpg.Connection:
        """Creates the schema with only the migrations `applied` (an older release's database, for
        upgrade tests) and returns a connection on it (the caller loads its rows and closes it)."""
        quoted = '"' + self.schema.replace('"', '""') + '"'
        admin = await asyncpg.connect(self.url)
        await admin.execute(f"CREATE SCHEMA {quoted}")
        await admin.close()
        pg = await self.connect()
        table = migrations.SCHEMA_VERSION_TABLE
        await pg.execute(f"CREATE TABLE {table} (version INTEGER PRIMARY KEY, description TEXT NOT NULL, "
                         "applied_at DOUBLE PRECISION NOT NULL)")
        for m in applied:
            await pg.execute(m.sql)
            await pg.execute(f"INSERT INTO {table} VALUES ($1, $2, 0)", m.version, m.description)
        return pg


@asynccontextmanager
async def postgres_backend(tmp_path: Path) -> AsyncIterator[PostgresBackend]:
    """A fresh schema (created by the first upgrade), dropped with everything in it afterwards."""
    problem = await postgres_unreachable()
    if problem is not None:
        backend_missing(problem, "RAVEN_TEST_DATABASE_URL")
    # Mixed case and a dash: the store must quote the schema name everywhere.
    backend = PostgresBackend(POSTGRES_URL, f"Raven-Test-{secrets.token_hex(6)}")
    try:
        yield backend
    finally:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{backend.schema}" CASCADE')
        finally:
            await conn.close()


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "postgres": postgres_backend,
    "sqlite": sqlite_backend,
}

OpenStore = Callable[[], Awaitable[MigratingStore]]
