"""The settlement outbox under a store that is down: bounded memory, then the durable spool,
replayed exactly once, also by the next process after a shutdown that could not reach the store."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path

from raven_service.accounting.ledger import Ledger
from raven_service.core.errors import StoreUnavailable
from raven_service.core.types import ApiKey, CreditHold, Settlement, UsageRecord
from raven_service.storage.sqlite import SqliteStore


class Switchable:
    """The real SQLite store behind a switch that makes `settle` fail like an unreachable database."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.down = False
        self.calls = 0

    async def settle(self, settlements):
        self.calls += 1
        if self.down:
            raise StoreUnavailable()
        return await self.store.settle(settlements)

    def __getattr__(self, name):
        return getattr(self.store, name)


async def _store(tmp_path: Path) -> SqliteStore:
    store = SqliteStore(tmp_path / "raven.db")
    await store.open()
    await store.insert_key(ApiKey(id="k", name="k", secret_hash="0" * 64, prefix="rk-0", credits=Decimal("100")))
    return store


def _settlement(n: int, hold_id: str = "") -> Settlement:
    return Settlement(record=UsageRecord(id=f"gen_{n:05}", key_id="k", model="m", cost=Decimal("0.01")),
                      hold_id=hold_id)


async def _until(predicate, rounds: int = 500) -> None:
    for _ in range(rounds):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_outage_spills_to_spool_and_everything_settles_once(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    for n in range(300):
        assert await store.reserve_hold(CreditHold(id=f"h{n}", key_id="k", amount=Decimal("0.02"), expires_at=2e9))
    sw = Switchable(store)
    sw.down = True
    spool = tmp_path / "spool"
    ledger = Ledger(sw, spool_dir=spool, max_memory=50, flush_interval=0, batch_size=20, retry_base=0.01,
                    retry_max=0.02)
    ledger.start()
    for n in range(300):
        ledger.submit(_settlement(n, f"h{n}"))
    await _until(lambda: sw.calls >= 3)
    assert ledger.backlog == 300
    assert len(ledger._memory) == 50  # bounded memory ...
    files = list(spool.glob("ledger-*.jsonl"))
    assert len(files) == 1 and len(files[0].read_bytes().splitlines()) == 250  # ... then the spool
    assert not await ledger.flush(0.05)  # a flush never hangs on an outage

    sw.down = False
    assert await ledger.flush(10.0)
    assert ledger.backlog == 0 and list(spool.glob("*.jsonl")) == []
    records = [r async for r in store.export_usage()]
    assert len(records) == 300 and len({r.id for r in records}) == 300
    key = await store.get_key("k")
    assert key is not None and key.credits_used == Decimal("3") and key.credits_reserved == 0
    await ledger.close()
    await store.close()


async def test_shutdown_during_an_outage_leaves_a_spool_the_next_start_replays(tmp_path: Path) -> None:
    store = await _store(tmp_path)
    sw = Switchable(store)
    sw.down = True
    spool = tmp_path / "spool"
    first = Ledger(sw, spool_dir=spool, max_memory=1000, flush_interval=0, retry_base=0.01, retry_max=0.02)
    first.start()
    for n in range(40):
        first.submit(_settlement(n))
    first.submit(_settlement(3))  # a duplicate submission must not double-charge either
    await _until(lambda: sw.calls >= 2)
    await first.close(within=0.1)  # SIGTERM while the store is still down
    leftover = list(spool.glob("ledger-*.jsonl"))
    assert len(leftover) == 1 and len(leftover[0].read_bytes().splitlines()) == 41
    # the previous process is gone; its file is free: the next start replays it
    second = Ledger(store, spool_dir=spool, flush_interval=0)
    second.start()
    await _until(lambda: not list(spool.glob("*.jsonl")))
    records = [r async for r in store.export_usage()]
    assert len(records) == 40
    key = await store.get_key("k")
    assert key is not None and key.credits_used == Decimal("0.40")
    await second.close()
    await store.close()
