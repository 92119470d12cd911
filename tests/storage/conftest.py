"""Fixtures for the Store contract suite, parametrized over the backends in store_backends."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from store_backends import BACKENDS, Backend, MigratingStore, OpenStore


@pytest.fixture(params=sorted(BACKENDS))
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    """A fresh, empty database of each backend kind."""
    async with BACKENDS[request.param](tmp_path) as fresh:
        yield fresh


@pytest.fixture
async def open_store(backend: Backend) -> AsyncIterator[OpenStore]:
    """Opens another store instance on the test's database; all are closed afterwards."""
    opened: list[MigratingStore] = []

    async def _open() -> MigratingStore:
        store = backend.make_store()
        await store.open()
        opened.append(store)
        return store

    yield _open
    for store in opened:
        await store.close()


@pytest.fixture
async def store(open_store: OpenStore) -> MigratingStore:
    """An opened (fully migrated) store on a fresh database."""
    return await open_store()
