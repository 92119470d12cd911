"""Generated outputs expire as advertised (SPEC §10): after `output_ttl_seconds` a file answers 404
(exactly at its expiry, before any sweep) and the sweep deletes its blob. Clock injected."""

from __future__ import annotations

import pytest

from raven_service.app.media import FileUseCase
from raven_service.core.errors import NotFound
from raven_service.core.types import Principal, StoredFile
from raven_service.storage.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_files_expire_at_their_ttl_and_the_sweep_deletes_them(tmp_path) -> None:
    store = SqliteStore(tmp_path / "raven.db")
    await store.open()
    try:
        clock = Clock(1_000.0)
        files = FileUseCase(store, ttl=100.0, clock=clock)
        owner = Principal(key_id="key_a", name="a")
        for i, created in enumerate((900.5, 950.0, 999.0)):
            await store.put_file(StoredFile(id=f"file_{i}", key_id="key_a", mime_type="image/png", data=b"png",
                                            created_at=created))
        assert (await files.get(owner, "file_0")).data == b"png"  # 99.5 s old: still there
        with pytest.raises(NotFound):
            await files.get(Principal(key_id="key_b", name="b"), "file_0")  # never another key's

        clock.now = 1_000.5  # file_0 is exactly 100 s old
        with pytest.raises(NotFound):
            await files.get(owner, "file_0")
        assert await store.get_file("file_0") is not None  # refused before the sweep ran

        clock.now = 1_001.0
        assert await files.sweep(batch=1) == 1  # batches loop until nothing is left
        assert await store.get_file("file_0") is None
        assert await files.sweep() == 0

        clock.now = 1_099.5
        assert await files.sweep(batch=1) == 2
        assert [await store.get_file(f"file_{i}") for i in range(3)] == [None, None, None]
    finally:
        await store.close()
