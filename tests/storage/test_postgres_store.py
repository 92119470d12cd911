"""PostgreSQL-specific behaviour of PostgresStore (the shared contract runs in test_store_contract).

Each test gets a fresh random schema (see store_backends.postgres_backend), skipped with the
reason when PostgreSQL is unreachable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from pathlib import Path

import asyncpg
import pytest
from store_backends import PostgresBackend, postgres_backend
from test_store_contract import make_key, make_task, make_usage

from raven_service.core.types import CreditHold, Settlement, VideoTask
from raven_service.storage import migrations
from raven_service.storage.postgres import PostgresStore

D = Decimal
LATEST = migrations.latest_version(migrations.POSTGRES)

MakeStore = Callable[..., PostgresStore]


@pytest.fixture
async def pg(tmp_path: Path) -> AsyncIterator[PostgresBackend]:
    async with postgres_backend(tmp_path) as backend:
        yield backend


@pytest.fixture
async def make_store(pg: PostgresBackend) -> AsyncIterator[MakeStore]:
    """Builds (not opens) stores on the test's schema, each with its own pool; closes them all."""
    made: list[PostgresStore] = []

    def _make(*, auto_upgrade: bool = True, max_size: int = 10) -> PostgresStore:
        store = pg.make_store(auto_upgrade=auto_upgrade, max_size=max_size)
        made.append(store)
        return store

    yield _make
    for store in made:
        await store.close()


async def opened(store: PostgresStore) -> PostgresStore:
    await store.open()
    return store


async def raw(pg: PostgresBackend, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await pg.connect()
    try:
        return await conn.fetch(sql, *args)
    finally:
        await conn.close()


# ------------------------------------------------------------------------------------- migrations
async def test_open_refuses_a_schema_that_is_behind(make_store: MakeStore) -> None:
    behind = make_store(auto_upgrade=False)
    message = f"database schema is at version 0, this Raven needs {LATEST}: run `raven db upgrade`"
    with pytest.raises(RuntimeError) as info:
        await behind.open()
    assert str(info.value) == message
    with pytest.raises(RuntimeError, match="not open"):  # open() closed it again
        await behind.get_key("key_1")

    assert await make_store(auto_upgrade=False).upgrade() == [m.version for m in migrations.POSTGRES]
    await behind.open()  # the same instance opens once the schema is current
    assert await behind.current_version() == LATEST
    await behind.insert_key(make_key(1))
    assert await behind.count_keys() == 1


async def test_auto_upgrade_migrates_on_open(make_store: MakeStore, pg: PostgresBackend) -> None:
    store = await opened(make_store(auto_upgrade=True))

    assert await store.current_version() == LATEST
    rows = await raw(pg, "SELECT version, description FROM schema_version ORDER BY version")
    assert [tuple(row) for row in rows] == [(m.version, m.description) for m in migrations.POSTGRES]


async def test_newer_schema_is_refused(make_store: MakeStore, pg: PostgresBackend) -> None:
    await make_store().upgrade()
    await raw(pg, "INSERT INTO schema_version VALUES (999, 'future', 0)")

    for auto_upgrade in (False, True):
        newer = make_store(auto_upgrade=auto_upgrade)
        with pytest.raises(RuntimeError, match="version 999 is newer"):
            await newer.open()
    with pytest.raises(RuntimeError, match="newer"):
        await make_store().upgrade()


async def test_concurrent_upgrades_from_separate_pools_apply_once(make_store: MakeStore, pg: PostgresBackend) -> None:
    stores = [make_store(auto_upgrade=False) for _ in range(4)]

    applied = await asyncio.gather(*(s.upgrade() for s in stores))  # the schema does not exist yet

    # each step takes the migration lock on its own, so upgraders may share the steps between
    # them: what matters is that every migration is applied exactly once, in order
    assert sorted(v for steps in applied for v in steps) == [m.version for m in migrations.POSTGRES]
    assert all(steps == sorted(steps) for steps in applied)
    assert [await s.current_version() for s in stores] == [LATEST] * 4
    assert len(await raw(pg, "SELECT * FROM schema_version")) == len(migrations.POSTGRES)
    await asyncio.gather(*(s.open() for s in stores))


# ------------------------------------------------------------------------------- cross-pool races
async def test_claims_across_pools_are_exclusive(make_store: MakeStore) -> None:
    pools = [await opened(make_store(max_size=4)), await opened(make_store(max_size=4))]
    for n in range(20):
        await pools[0].create_video_task(make_task(n))

    async def claimer(i: int) -> list[VideoTask]:
        won: list[VideoTask] = []
        while (task := await pools[i % 2].claim_video_task(f"w{i}", now=500.0, lease_seconds=60)) is not None:
            won.append(task)
            await asyncio.sleep(0)
        return won

    results = await asyncio.gather(*(claimer(i) for i in range(4)))

    ids = [task.id for won in results for task in won]
    assert sorted(ids) == [f"vid_{n:04}" for n in range(20)]  # every task once, none twice
    for i, won in enumerate(results):
        for task in won:
            stored = await pools[1].get_video_task(task.id)
            assert stored is not None and (stored.lease_owner, stored.lease_until) == (f"w{i}", 560.0)


async def test_claim_skips_a_row_locked_elsewhere(make_store: MakeStore, pg: PostgresBackend) -> None:
    store = await opened(make_store())
    for n in range(2):
        await store.create_video_task(make_task(n))
    conn = await pg.connect()
    try:
        async with conn.transaction():
            await conn.execute("SELECT 1 FROM video_tasks WHERE id = 'vid_0000' FOR UPDATE")
            # does not wait for the lock holder: it takes the next claimable task at once
            claimed = await asyncio.wait_for(store.claim_video_task("w1", now=1.0, lease_seconds=5), 5)
            assert claimed is not None and claimed.id == "vid_0001"
            assert await store.claim_video_task("w1", now=1.0, lease_seconds=5) is None
    finally:
        await conn.close()
    again = await store.claim_video_task("w2", now=1.0, lease_seconds=5)
    assert again is not None and again.id == "vid_0000"


async def test_reservations_across_pools_never_overshoot(make_store: MakeStore) -> None:
    first, second = await opened(make_store()), await opened(make_store())
    await first.insert_key(make_key(1, credits=D("10")))

    results = await asyncio.gather(*((first, second)[i % 2].reserve_hold(
        CreditHold(id=f"hold_{i}", key_id="key_1", amount=D("0.07"), expires_at=2e9)) for i in range(200)))

    assert results.count(True) == 142  # floor(10 / 0.07)
    key = await second.get_key("key_1")
    assert key is not None and (key.credits_used, key.credits_reserved) == (D(0), D("9.94"))


# ------------------------------------------------------------------------------------------ money
async def test_exact_decimals_roundtrip_as_numeric(make_store: MakeStore, pg: PostgresBackend) -> None:
    store = await opened(make_store())
    await store.insert_key(make_key(1, credits=D("0.000000336")))
    await store.settle([Settlement(record=make_usage(99, cost=D("0.000000336")))])

    key = await store.get_key("key_1")
    assert key is not None and key.credits == key.credits_used == D("0.000000336")
    assert str(key.credits) == "3.36E-7" and str(key.credits_reserved) == "0"  # no padding zeros
    assert not await store.reserve_hold(CreditHold(id="h", key_id="key_1", amount=D("0.000000000001")))  # used up
    rows = await raw(pg, "SELECT pg_typeof(credits)::text AS t, credits::text AS v FROM api_keys")
    assert [tuple(row) for row in rows] == [("numeric", "0.000000336000")]

    big = D("12345678901234.123456789012")  # beyond SQLite's ~9.2 million, fine in NUMERIC(38, 12)
    await store.insert_key(make_key(2, credits=big))
    assert (await store.get_key("key_2")) == make_key(2, credits=big)

    await store.settle([Settlement(record=make_usage(n, key_id="key_2", cost=D("0.1"))) for n in range(3)])
    [summary] = await store.aggregate_usage("key_2", None, None, frozenset())
    assert summary.cost == D("0.3") and str(summary.cost) == "0.3"


async def test_amounts_are_rounded_half_even_and_range_checked(make_store: MakeStore) -> None:
    store = await opened(make_store())
    await store.insert_key(make_key(1, credits=D("0.0000000000015")))  # half-even: 2e-12
    await store.insert_key(make_key(2, credits=D("0.0000000000005")))  # half-even: 0
    assert [key.credits for key in await store.list_keys()] == [D("2E-12"), D(0)]

    for bad in (D("1E26"), D("-1"), D("NaN"), D("Infinity")):
        with pytest.raises(ValueError):
            await store.insert_key(make_key(3, credits=bad))
    with pytest.raises(ValueError):
        await store.reserve_hold(CreditHold(id="h", key_id="key_1", amount=D("-0.5")))
    with pytest.raises(ValueError):
        await store.update_key("key_1", credits=D("1"), clear_credits=True)
    assert await store.count_keys() == 2


# ------------------------------------------------------------------------------------------ usage
async def test_usage_batches_are_atomic_and_retry_safe(make_store: MakeStore) -> None:
    store = await opened(make_store())
    await store.settle([Settlement(record=make_usage(n)) for n in range(1000)])
    # a retried flush
    await store.settle([Settlement(record=make_usage(n, prompt_tokens=7)) for n in range(500, 1500)])

    exported = [r async for r in store.export_usage(page_size=333)]
    assert len(exported) == 1500 and len({r.id for r in exported}) == 1500
    assert {r.prompt_tokens for r in exported[:1000]} == {0} and exported[-1].prompt_tokens == 7

    with pytest.raises(asyncpg.PostgresError):  # NUL cannot be stored in TEXT: the whole batch fails
        await store.settle([Settlement(record=make_usage(2000)),
                            Settlement(record=make_usage(2001, model="bad\x00model"))])
    assert await store.get_usage("gen_2000") is None


# ------------------------------------------------------------------------------------- plumbing
async def test_lookups_use_the_indexes(make_store: MakeStore, pg: PostgresBackend) -> None:
    await make_store().upgrade()
    conn = await pg.connect()
    try:
        await conn.execute("SET enable_seqscan = off")  # an empty table would not use an index otherwise
        plan = await conn.fetch("EXPLAIN SELECT * FROM api_keys WHERE secret_hash = $1", "x")
        assert "api_keys_secret_hash" in str(plan)
        plan = await conn.fetch(
            "EXPLAIN SELECT id FROM video_tasks WHERE state IN ('queued', 'running') AND lease_until < 5 "
            "ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED"
        )
        assert "video_tasks_pending" in str(plan)
    finally:
        await conn.close()


async def test_use_after_close_fails_clearly(make_store: MakeStore) -> None:
    store = make_store()
    with pytest.raises(RuntimeError, match="not open"):
        await store.count_keys()
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.count_keys()
    await store.close()


def test_constructor_validates_options() -> None:
    with pytest.raises(ValueError):
        PostgresStore("postgresql://x@localhost/db", schema="")
    with pytest.raises(ValueError):
        PostgresStore("postgresql://x@localhost/db", min_size=5, max_size=2)
