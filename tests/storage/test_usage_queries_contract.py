"""Store contract, usage queries: aggregation (rollup + edges), tags, generation pages, samples.

Runs on every backend of store_backends (the `store` fixture is parametrized). The aggregates
are checked against a brute-force reference computed here from the very records inserted, for
ranges aligned and not aligned to hours and days, so the rollup / raw-edge split is exercised.
"""

from __future__ import annotations

import itertools
import random
import sqlite3
from decimal import Decimal
from typing import Any

from store_backends import Backend, MigratingStore
from test_store_contract import insert_usage, make_task, make_usage

from raven_service.core.latency import histogram
from raven_service.core.types import UsageAggregate, UsageRecord, VideoState
from raven_service.storage import migrations

D = Decimal
DAY = 86400.0
T0 = 1_790_000_000.0 - 1_790_000_000.0 % DAY  # a UTC midnight
TEAM_A = (("env", "prod"), ("team", "search"))
TEAM_B = (("team", "ads"),)


def spread_records(n: int = 400, seed: int = 3) -> list[UsageRecord]:
    """Records over ~3 days, 3 keys, 3 models, 2 providers, 3 tag sets, all statuses."""
    rnd = random.Random(seed)
    records = []
    for i in range(n):
        key = rnd.choice(["key_1", "key_2", "key_3"])
        records.append(make_usage(
            i, key_id=key, model=rnd.choice(["m/a", "m/b", "m/c"]), provider=rnd.choice(["p1", "p2"]),
            tags={"key_1": TEAM_A, "key_2": TEAM_B, "key_3": ()}[key],
            created_at=T0 + rnd.uniform(0, 3 * DAY), status=rnd.choice(["completed"] * 8 + ["failed", "cancelled"]),
            prompt_tokens=rnd.randint(0, 500), completion_tokens=rnd.randint(0, 300),
            cost=D(rnd.randint(0, 10**6)) / D(10**9), latency_ms=rnd.choice([0, 3, 50, 120, 999, 4000, 2_000_000]),
            ttft_ms=rnd.choice([0, 7, 40, 250]),
        ))
    return records


def reference(records: list[UsageRecord], key_id: str | None, start: float | None, end: float | None,
              group_by: frozenset[str]) -> list[UsageAggregate]:
    groups: dict[tuple[Any, ...], list[UsageRecord]] = {}
    for r in records:
        if key_id is not None and r.key_id != key_id:
            continue
        if (start is not None and r.created_at < start) or (end is not None and r.created_at >= end):
            continue
        k = (
            int(r.created_at // DAY * DAY) if "day" in group_by else None,
            r.model if "model" in group_by else None,
            r.key_id if "key" in group_by else None,
            r.provider if "provider" in group_by else None,
            r.tags if "tags" in group_by else None,
        )
        groups.setdefault(k, []).append(r)
    out = []
    for k in sorted(groups, key=lambda k: tuple("" if v is None else v for v in k)):
        rs = groups[k]
        out.append(UsageAggregate(
            day=k[0], model=k[1], key_id=k[2], provider=k[3], tags=k[4], requests=len(rs),
            errors=sum(r.status == "failed" for r in rs), prompt_tokens=sum(r.prompt_tokens for r in rs),
            completion_tokens=sum(r.completion_tokens for r in rs), cost=sum((r.cost for r in rs), D(0)),
            latency_hist=histogram([r.latency_ms for r in rs]),
            ttft_hist=histogram([r.ttft_ms for r in rs if r.ttft_ms > 0]),
        ))
    return out


RANGES = [
    (None, None),
    (T0, T0 + DAY),  # one whole day
    (T0 + 3600 * 5, T0 + 3600 * 30),  # whole hours across a midnight
    (T0 + 1234.5, T0 + 2 * DAY + 777.25),  # partial hours at both edges, whole days between
    (T0 + 100.0, T0 + 2000.0),  # inside one hour
    (T0 + 3000.0, T0 + 4000.0),  # across one hour boundary, no whole hour
    (T0 + DAY + 17.0, None),
    (None, T0 + DAY + 3599.0),
    (T0 + 500.0, T0 + 500.0),  # empty
]


async def test_aggregates_equal_the_records_for_any_range_and_grouping(store: MigratingStore) -> None:
    records = spread_records()
    shuffled = random.Random(5).sample(records, len(records))
    for i in range(0, len(shuffled), 37):  # many settlement batches
        await insert_usage(store, shuffled[i:i + 37])
    dims = ["day", "model", "key", "provider", "tags"]
    groupings = [frozenset(c) for n in range(3) for c in itertools.combinations(dims, n)] + [frozenset(dims)]
    for start, end in RANGES:
        for key_id in (None, "key_1"):
            for group_by in groupings:
                got = await store.aggregate_usage(key_id, start, end, group_by)
                assert got == reference(records, key_id, start, end, group_by), (start, end, key_id, group_by)


async def test_aggregate_example_with_exact_numbers(store: MigratingStore) -> None:
    await insert_usage(store, [
        make_usage(1, created_at=T0 + 10, model="a", provider="p", prompt_tokens=10, completion_tokens=1,
                   cost=D("0.1"), latency_ms=100, ttft_ms=40, tags=TEAM_A),
        make_usage(2, created_at=T0 + 7200.5, model="a", provider="p", prompt_tokens=20, completion_tokens=2,
                   cost=D("0.2"), latency_ms=300, status="failed", tags=TEAM_A),
        make_usage(3, created_at=T0 + DAY + 1, model="b", provider="q", prompt_tokens=5, completion_tokens=5,
                   cost=D("1E-12"), latency_ms=5, ttft_ms=5, status="cancelled"),
        make_usage(4, created_at=T0 + 60, model="a", key_id="key_2", prompt_tokens=999, cost=D(9), tags=TEAM_B),
    ])
    everything = await store.aggregate_usage(None, None, None, frozenset())
    assert [(a.requests, a.errors, a.prompt_tokens, a.completion_tokens, a.cost) for a in everything] == [
        (4, 1, 1034, 8, D("9.300000000001"))]
    by_day_model = await store.aggregate_usage("key_1", T0, T0 + 2 * DAY, frozenset({"day", "model"}))
    assert [(a.day, a.model, a.key_id, a.requests, a.errors, a.cost) for a in by_day_model] == [
        (int(T0), "a", None, 2, 1, D("0.3")), (int(T0 + DAY), "b", None, 1, 0, D("1E-12"))]
    by_tags = await store.aggregate_usage(None, T0, T0 + 7200.5, frozenset({"tags", "key"}))
    assert [(a.key_id, a.tags, a.requests, a.prompt_tokens) for a in by_tags] == [
        ("key_1", TEAM_A, 1, 10), ("key_2", TEAM_B, 1, 999)]
    assert await store.aggregate_usage("key_3", None, None, frozenset({"model"})) == []
    assert await store.aggregate_usage(None, T0 + 5 * DAY, None, frozenset()) == []


async def test_resettling_a_batch_counts_nothing_twice(store: MigratingStore) -> None:
    records = spread_records(60)
    await insert_usage(store, records[:40])
    await insert_usage(store, records)  # the first 40 again, as a retried batch would
    got = await store.aggregate_usage(None, None, None, frozenset({"day", "key"}))
    assert got == reference(records, None, None, None, frozenset({"day", "key"}))


async def test_tags_roundtrip_on_records_and_video_tasks(store: MigratingStore) -> None:
    record = make_usage(1, tags=TEAM_A)
    await insert_usage(store, [record, make_usage(2)])
    assert await store.get_usage("gen_0001") == record
    got = await store.get_usage("gen_0002")
    assert got is not None and got.tags == ()
    task, _ = await store.create_video_task(make_task(1, tags=TEAM_B, state=VideoState.QUEUED))
    assert task.tags == TEAM_B
    again = await store.get_video_task("vid_0001")
    assert again is not None and again.tags == TEAM_B


async def test_list_usage_pages_newest_first_with_filters(store: MigratingStore) -> None:
    # pairs share a created_at, so only a (created_at, id) keyset pages without gaps or repeats
    records = [make_usage(n, created_at=T0 + n // 2, key_id="key_1" if n % 3 else "key_2",
                          model="m/a" if n % 2 else "m/b", status="failed" if n % 5 == 0 else "completed")
               for n in range(1, 41)]
    await insert_usage(store, random.Random(2).sample(records, len(records)))
    newest_first = sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)

    async def pages(key_id: str | None, size: int, **filters: Any) -> list[list[str]]:
        out: list[list[str]] = []
        before = None
        while True:
            page = await store.list_usage(key_id, before=before, limit=size, **filters)
            if not page:
                return out
            out.append([r.id for r in page])
            before = (page[-1].created_at, page[-1].id)

    for size in (1, 3, 7, 40, 100):
        got = await pages(None, size)
        assert [i for p in got for i in p] == [r.id for r in newest_first]
        assert all(len(p) == size for p in got[:-1])
    mine = await pages("key_1", 4)
    assert [i for p in mine for i in p] == [r.id for r in newest_first if r.key_id == "key_1"]
    filtered = await pages("key_1", 2, model="m/a", status="completed", since=T0 + 4, until=T0 + 15)
    assert [i for p in filtered for i in p] == [
        r.id for r in newest_first
        if r.key_id == "key_1" and r.model == "m/a" and r.status == "completed" and T0 + 4 <= r.created_at < T0 + 15]
    assert await store.list_usage("key_9", limit=10) == []
    [first] = await store.list_usage(None, limit=1)
    assert first == newest_first[0]  # whole records


async def test_usage_samples_give_the_timings_of_the_range(store: MigratingStore) -> None:
    records = spread_records(50)
    await insert_usage(store, records)
    start, end = T0 + 3600, T0 + DAY
    got = await store.usage_samples("key_2", start, end, 1000)
    want = [r for r in records if r.key_id == "key_2" and start <= r.created_at < end]
    assert sorted((s.created_at, s.model, s.provider, s.tags, s.latency_ms, s.ttft_ms) for s in got) == sorted(
        (r.created_at, r.model, r.provider, r.tags, r.latency_ms, r.ttft_ms) for r in want)
    assert len(await store.usage_samples(None, None, None, 7)) == 7


async def test_migration_backfills_the_rollup_from_stored_records(backend: Backend) -> None:
    """Records written before migration 5 are counted: the migration builds the rollup from them."""
    before = [m for m in backend.migrations if m.version < 5]
    rows = [(f"old_{i}", f"key_{i % 2}", "m/old", "p", 10 * i, i, i % 3, 100 + i * 500, 40 * (i % 2),
             "failed" if i == 3 else "completed", T0 + i * 5000.0) for i in range(12)]
    insert = ("INSERT INTO usage_records (id, key_id, kind, model, provider, upstream_model, prompt_tokens, "
              "completion_tokens, cost, latency_ms, ttft_ms, status, finish_reason, native_finish_reason, streamed, "
              "usage_estimated, attempts, error, created_at) VALUES ")
    if backend.name == "sqlite":
        path = backend.path  # type: ignore[attr-defined]
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path)
        conn.execute(f"CREATE TABLE {migrations.SCHEMA_VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                     "description TEXT NOT NULL, applied_at REAL NOT NULL)")
        for m in before:
            conn.executescript(m.sql)
            conn.execute(f"INSERT INTO {migrations.SCHEMA_VERSION_TABLE} VALUES (?, ?, 0)", (m.version, m.description))
        conn.executemany(insert + "(?, ?, 'chat', ?, ?, '', ?, ?, ?, ?, ?, ?, '', '', 0, 0, '[]', '', ?)",
                         [(r[0], r[1], r[2], r[3], r[4], r[5], r[6] * 10**11, *r[7:]) for r in rows])
        conn.commit()
        conn.close()
    else:
        pg = await backend.connect_at(before)  # type: ignore[attr-defined]
        await pg.executemany(
            insert + "($1, $2, 'chat', $3, $4, '', $5, $6, $7, $8, $9, $10, '', '', false, false, '{}', '', $11)",
            [(r[0], r[1], r[2], r[3], r[4], r[5], D(r[6]) / 10, *r[7:]) for r in rows])
        await pg.close()
    store = backend.make_store()
    await store.open()
    try:
        assert await store.current_version() == migrations.latest_version(backend.migrations)
        records = [make_usage(0, id=r[0], key_id=r[1], model=r[2], provider=r[3], prompt_tokens=r[4],
                              completion_tokens=r[5], cost=D(r[6]) / 10, latency_ms=r[7], ttft_ms=r[8], status=r[9],
                              created_at=r[10]) for r in rows]
        for start, end in RANGES:
            for group_by in (frozenset(), frozenset({"day", "key"}), frozenset({"tags", "model"})):
                got = await store.aggregate_usage(None, start, end, group_by)
                assert got == reference(records, None, start, end, group_by), (start, end, group_by)
    finally:
        await store.close()
