"""Storage backends the Store contract suite runs against.

A backend factory builds one fresh, isolated database and can open any number of store
instances on it (two instances on one database stand in for two Raven processes). To run the
contract against another backend, add a factory to BACKENDS, e.g. "postgres": an async context
manager that creates a throw-away database from an env var (calling pytest.skip when unset),
yields a Backend whose make_store() returns a PostgresStore on it, and drops it afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Protocol

from raven_service.core.ports import Store
from raven_service.core.types import UsageRecord
from raven_service.storage import migrations
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


BACKENDS: dict[str, Callable[[Path], AbstractAsyncContextManager[Backend]]] = {
    "sqlite": sqlite_backend,
}

OpenStore = Callable[[], Awaitable[MigratingStore]]
