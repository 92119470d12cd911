"""SQLite-specific behaviour of SqliteStore and the storage helpers (the contract is elsewhere)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest

from raven_service.core.types import ApiKey, CreditHold, Settlement, UsageRecord
from raven_service.storage import migrations
from raven_service.storage.money import MAX_UNITS, from_units, to_units
from raven_service.storage.sqlite import SqliteStore, _statements

D = Decimal


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "deep" / "er" / "raven.db"


@pytest.fixture
async def store(db_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(db_path)
    await store.open()
    yield store
    await store.close()


def key(**fields: object) -> ApiKey:
    return ApiKey(**({"id": "k", "name": "n", "secret_hash": "h" * 64, "prefix": "rk-x"} | fields))


def is_file(path: Path) -> bool:
    return path.is_file()


def raw(db_path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as conn:
        return conn.execute(sql).fetchall()


async def test_open_creates_directory_and_sets_pragmas(store: SqliteStore, db_path: Path) -> None:
    assert is_file(db_path)
    assert raw(db_path, "PRAGMA journal_mode") == [("wal",)]  # persistent: visible to any connection

    def pragmas() -> tuple[int, ...]:
        conn = store._db
        return tuple(
            conn.execute(f"PRAGMA {name}").fetchone()[0] for name in ("synchronous", "busy_timeout", "foreign_keys")
        )

    assert await store._run(pragmas) == (1, 5000, 1)  # synchronous=NORMAL


async def test_money_is_stored_as_integer_pico_credits(store: SqliteStore, db_path: Path) -> None:
    await store.insert_key(key(credits=D("1.5")))
    await store.settle([Settlement(record=UsageRecord(id="g1", key_id="k", model="m", cost=D("0.000000336")))])

    assert raw(db_path, "SELECT credits, typeof(credits), credits_used, typeof(credits_used) FROM api_keys") == [
        (1_500_000_000_000, "integer", 336_000, "integer")
    ]


async def test_lookup_by_hash_uses_the_unique_index(store: SqliteStore, db_path: Path) -> None:
    plan = raw(db_path, "EXPLAIN QUERY PLAN SELECT * FROM api_keys WHERE secret_hash = 'x'")
    assert "USING INDEX api_keys_secret_hash" in str(plan)
    plan = raw(
        db_path,
        "EXPLAIN QUERY PLAN SELECT id FROM video_tasks WHERE state IN ('queued', 'running') "
        "AND lease_until < 5 ORDER BY created_at, id LIMIT 1",
    )
    assert "video_tasks_pending" in str(plan)


async def test_amounts_out_of_range_or_negative_are_rejected(store: SqliteStore) -> None:
    with pytest.raises(ValueError):
        await store.insert_key(key(credits=D("10000000")))  # above ~9.2 million credits
    with pytest.raises(ValueError):
        await store.insert_key(key(credits=D("-1")))
    await store.insert_key(key(credits=D("5")))
    with pytest.raises(ValueError):
        await store.reserve_hold(CreditHold(id="h", key_id="k", amount=D("-0.5")))
    with pytest.raises(ValueError):
        await store.update_key("k", credits=D("1"), clear_credits=True)
    stored = await store.get_key("k")
    assert stored is not None and (stored.credits, stored.credits_used, stored.credits_reserved) == (5, 0, 0)


async def test_newer_schema_is_refused(db_path: Path) -> None:
    store = SqliteStore(db_path)
    await store.open()
    await store._run(lambda: store._db.execute("INSERT INTO schema_version VALUES (999, 'future', 0)"))
    await store.close()

    newer = SqliteStore(db_path)
    with pytest.raises(RuntimeError, match="newer"):
        await newer.open()
    with pytest.raises(RuntimeError, match="not open"):  # open() closed it again
        await newer.get_key("k")


async def test_schema_version_table_records_each_migration(store: SqliteStore, db_path: Path) -> None:
    rows = raw(db_path, "SELECT version, description FROM schema_version ORDER BY version")
    assert rows == [(m.version, m.description) for m in migrations.SQLITE]


async def test_use_after_close_fails_clearly(db_path: Path) -> None:
    store = SqliteStore(db_path)
    with pytest.raises(RuntimeError, match="not open"):
        await store.count_keys()
    await store.open()
    await store.close()
    with pytest.raises(RuntimeError, match="not open"):
        await store.count_keys()


def test_money_conversion_is_exact_and_rounds_half_even() -> None:
    assert to_units(D("0.000000336")) == 336_000
    assert to_units(D("0.0000000000005")) == 0  # half to even: 0
    assert to_units(D("0.0000000000015")) == 2  # half to even: 2
    assert to_units(D("-0.0000000000025")) == -2
    assert to_units(D("9223372.036854775807")) == MAX_UNITS
    with pytest.raises(ValueError):
        to_units(D("9223372.036854775808"))
    for bad in (D("NaN"), D("Infinity"), 0.5):
        with pytest.raises(ValueError):
            to_units(bad)  # type: ignore[arg-type]
    assert str(from_units(336_000)) == str(D("3.36E-7"))
    assert str(from_units(10 * 10**12)) == "10"
    assert str(from_units(0)) == "0"
    assert from_units(to_units(D("123.456"))) == D("123.456")


def test_migration_lists_are_checked_and_split() -> None:
    migrations.check_order(migrations.SQLITE)
    with pytest.raises(ValueError):
        migrations.check_order([migrations.Migration(2, "gap", "")])
    script = """
        CREATE TABLE t (x INTEGER);
        CREATE TRIGGER tr AFTER INSERT ON t BEGIN
            UPDATE t SET x = x + 1; DELETE FROM t WHERE x > 9;
        END;
    """
    statements = list(_statements(script))
    assert len(statements) == 2 and statements[1].endswith("END;")
    with pytest.raises(ValueError):
        list(_statements("CREATE TABLE u (x INTEGER)"))


async def test_simultaneous_first_opens_of_a_new_file(tmp_path: Path) -> None:
    """Several processes creating the same file at once (e.g. `raven serve` and `raven keys`)."""
    for attempt in range(20):
        stores = [SqliteStore(tmp_path / f"race{attempt}" / "raven.db") for _ in range(4)]
        try:
            await asyncio.gather(*(s.open() for s in stores))
            assert [await s.current_version() for s in stores] == [migrations.latest_version(migrations.SQLITE)] * 4
        finally:
            for s in stores:
                await s.close()
