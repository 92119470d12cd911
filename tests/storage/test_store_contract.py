"""The `Store` contract: every backend in store_backends.BACKENDS must pass all of it."""

from __future__ import annotations

import asyncio
import random
from decimal import Decimal
from typing import Any

import pytest
from store_backends import Backend, MigratingStore, OpenStore

from raven_service.core.types import (
    ApiKey,
    CreditHold,
    Settlement,
    StoredFile,
    UsageRecord,
    VideoState,
    VideoTask,
)

D = Decimal


def make_key(n: int = 1, **fields: Any) -> ApiKey:
    values: dict[str, Any] = {
        "id": f"key_{n}",
        "name": f"key {n}",
        "secret_hash": f"{n:064x}",
        "prefix": f"rk-{n:04}",
        "created_at": 1_700_000_000.0 + n,
    }
    return ApiKey(**(values | fields))


def make_usage(n: int, **fields: Any) -> UsageRecord:
    values: dict[str, Any] = {
        "id": f"gen_{n:04}",
        "key_id": "key_1",
        "model": "local/chat",
        "created_at": 1000.0 + n,
    }
    return UsageRecord(**(values | fields))


def make_task(n: int, **fields: Any) -> VideoTask:
    values: dict[str, Any] = {
        "id": f"vid_{n:04}",
        "key_id": "key_1",
        "model": "local/video",
        "prompt": f"a cat, take {n}",
        "seconds": 4,
        "width": 640,
        "height": 360,
        "created_at": 100.0 + n,
    }
    return VideoTask(**(values | fields))


async def credit_state(store: MigratingStore, key_id: str) -> tuple[Decimal, Decimal]:
    key = await store.get_key(key_id)
    assert key is not None
    return key.credits_used, key.credits_reserved


# ------------------------------------------------------------------------------------------- keys
async def test_key_roundtrip_by_id_and_hash(store: MigratingStore) -> None:
    key = make_key(
        1,
        rpm=60,
        concurrency=4,
        credits=D("12.5"),
        credits_used=D("0.25"),
        credits_reserved=D("0.000000000001"),
        admin=True,
    )
    await store.insert_key(key)

    assert await store.get_key("key_1") == key
    assert await store.get_key_by_hash(key.secret_hash) == key
    assert await store.get_key("key_2") is None
    assert await store.get_key_by_hash("f" * 64) is None


async def test_key_defaults_roundtrip_as_unlimited(store: MigratingStore) -> None:
    await store.insert_key(make_key(1))

    stored = await store.get_key("key_1")
    assert stored == make_key(1)
    assert stored is not None and stored.credits is None and not stored.admin and not stored.revoked


async def test_duplicate_key_id_or_hash_is_rejected(store: MigratingStore) -> None:
    await store.insert_key(make_key(1))

    with pytest.raises(ValueError):
        await store.insert_key(make_key(2, id="key_1"))
    with pytest.raises(ValueError):
        await store.insert_key(make_key(2, secret_hash=make_key(1).secret_hash))
    assert await store.count_keys() == 1


async def test_list_keys_hides_revoked_unless_asked(store: MigratingStore) -> None:
    for n in (3, 1, 2):
        await store.insert_key(make_key(n, revoked=n == 2))

    assert [k.id for k in await store.list_keys()] == ["key_1", "key_3"]
    assert [k.id for k in await store.list_keys(include_revoked=True)] == ["key_1", "key_2", "key_3"]
    assert await store.count_keys() == 3


async def test_update_key_changes_only_given_fields(store: MigratingStore) -> None:
    original = make_key(1, rpm=10, concurrency=2, credits=D("5"), credits_used=D("1.5"))
    await store.insert_key(original)

    updated = await store.update_key("key_1", name="renamed", rpm=0, credits=D("7.25"))

    expected = make_key(1, name="renamed", rpm=0, concurrency=2, credits=D("7.25"), credits_used=D("1.5"))
    assert updated == expected
    assert await store.get_key("key_1") == expected
    assert await store.update_key("key_1") == expected  # nothing to change


async def test_update_key_clears_credits_and_revokes(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("5")))

    cleared = await store.update_key("key_1", clear_credits=True, concurrency=9)
    assert cleared is not None and cleared.credits is None and cleared.concurrency == 9

    revoked = await store.update_key("key_1", revoked=True)
    assert revoked is not None and revoked.revoked
    assert await store.list_keys() == []
    by_hash = await store.get_key_by_hash(make_key(1).secret_hash)
    assert by_hash is not None and by_hash.revoked  # callers must check the flag

    restored = await store.update_key("key_1", revoked=False)
    assert restored is not None and not restored.revoked


async def test_update_unknown_key_returns_none(store: MigratingStore) -> None:
    assert await store.update_key("nope", name="x") is None
    assert await store.update_key("nope") is None
    assert await store.count_keys() == 0


# ---------------------------------------------------------------------------------------- credits
_holds = iter(range(10**9))


def hold(amount: str | Decimal, key_id: str = "key_1", *, owner: str = "i1", expires_at: float = 2e9,
         hold_id: str | None = None) -> CreditHold:
    return CreditHold(id=hold_id or f"hold_{next(_holds):06}", key_id=key_id, amount=D(amount), owner=owner,
                      expires_at=expires_at)


async def reserve(store: MigratingStore, amount: str | Decimal, key_id: str = "key_1") -> bool:
    return await store.reserve_hold(hold(amount, key_id))


async def reserved_equals_live_holds(store: MigratingStore, key_id: str = "key_1") -> Decimal:
    """The invariant of SPEC §9: a key's reservation is exactly the sum of its live holds."""
    _, reserved = await credit_state(store, key_id)
    assert reserved == sum((h.amount for h in await store.list_holds(key_id)), D(0))
    return reserved


async def insert_usage(store: MigratingStore, records: list[UsageRecord]) -> int:
    return await store.settle([Settlement(record=r) for r in records])


async def test_concurrent_reservations_never_overshoot(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("10")))

    results = await asyncio.gather(*(reserve(store, "0.07") for _ in range(200)))

    assert results.count(True) == 142  # floor(10 / 0.07)
    assert await credit_state(store, "key_1") == (D(0), D("9.94"))
    assert len(await store.list_holds("key_1")) == 142
    assert await reserved_equals_live_holds(store) == D("9.94")
    assert await reserve(store, "0.06")  # exactly fills the limit
    assert not await reserve(store, "0.000000000001")


async def test_reservations_from_two_instances_never_overshoot(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.insert_key(make_key(1, credits=D("7")))

    results = await asyncio.gather(*(reserve(first if i % 2 else second, "0.3") for i in range(200)))

    assert results.count(True) == 23  # floor(7 / 0.3)
    assert await credit_state(second, "key_1") == (D(0), D("6.9"))
    assert await reserved_equals_live_holds(first) == D("6.9")


async def test_decimal_amounts_are_exact(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("0.3")))

    # 0.1 + 0.1 + 0.1 > 0.3 in binary floating point.
    assert [await reserve(store, "0.1") for _ in range(4)] == [True, True, True, False]


async def test_settlement_releases_the_hold_and_charges_the_actual_cost(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("1")))
    h = hold("0.5")
    assert await store.reserve_hold(h)

    assert await store.settle([Settlement(record=make_usage(1, cost=D("0.000000336")), hold_id=h.id)]) == 1

    assert await credit_state(store, "key_1") == (D("0.000000336"), D(0))
    assert await store.list_holds("key_1") == []
    assert await store.get_usage("gen_0001") == make_usage(1, cost=D("0.000000336"))
    assert await reserve(store, "0.999999664")  # exactly what is left
    assert not await reserve(store, "0.000000000001")


async def test_settlement_is_idempotent_by_record_id(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("1")))
    first, second = hold("0.4"), hold("0.3")
    assert await store.reserve_hold(first) and await store.reserve_hold(second)
    settlement = Settlement(record=make_usage(1, cost=D("0.1")), hold_id=first.id)

    assert await store.settle([settlement]) == 1
    assert await store.settle([settlement, settlement]) == 0  # a retried batch, a replayed spool
    # A different hold under an already-settled record id changes nothing either.
    assert await store.settle([Settlement(record=make_usage(1, cost=D("0.1")), hold_id=second.id)]) == 0

    assert await credit_state(store, "key_1") == (D("0.1"), D("0.3"))
    assert await reserved_equals_live_holds(store) == D("0.3")


async def test_partial_settlements_take_each_cost_out_of_a_shared_slice(store: MigratingStore) -> None:
    # A credit slice (app/slices.py) is one hold serving many requests: each settlement moves its
    # cost from the slice (reserved) to used; after the slice is returned, late settlements charge
    # used only, so reserved ends at exactly 0 and used at the sum of the costs.
    await store.insert_key(make_key(1, credits=D("5")))
    s = hold("2")
    assert await store.reserve_hold(s)
    first = Settlement(record=make_usage(1, cost=D("0.5")), hold_id=s.id, partial=True)
    second = Settlement(record=make_usage(2, cost=D("0.25")), hold_id=s.id, partial=True)
    assert await store.settle([first, second]) == 2
    assert await credit_state(store, "key_1") == (D("0.75"), D("1.25"))
    assert [h.amount for h in await store.list_holds("key_1")] == [D("1.25")]
    assert await store.settle([first]) == 0  # idempotent by record id: the slice is not touched again
    assert [h.amount for h in await store.list_holds("key_1")] == [D("1.25")]

    assert await store.release_hold(s.id)  # the slice goes back with what is left of it
    assert await credit_state(store, "key_1") == (D("0.75"), D(0))
    assert await store.settle([Settlement(record=make_usage(3, cost=D("0.1")), hold_id=s.id, partial=True)]) == 1
    assert await credit_state(store, "key_1") == (D("0.85"), D(0))

    t = hold("0.3")  # a cost larger than what is left of a slice drains it and is charged in full
    assert await store.reserve_hold(t)
    assert await store.settle([Settlement(record=make_usage(4, cost=D("0.5")), hold_id=t.id, partial=True)]) == 1
    assert await credit_state(store, "key_1") == (D("1.35"), D(0))
    assert [h.amount for h in await store.list_holds("key_1")] == [D(0)]


async def test_cost_above_the_hold_is_charged_in_full(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("1")))
    h = hold("0.2")
    assert await store.reserve_hold(h)

    await store.settle([Settlement(record=make_usage(1, cost=D("1.2")), hold_id=h.id)])  # a low estimate

    assert await credit_state(store, "key_1") == (D("1.2"), D(0))  # never clamped
    assert not await reserve(store, "0.000000000001")


async def test_a_batch_settles_many_holds_of_many_keys_at_once(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("100")))
    await store.insert_key(make_key(2, credits=D("100")))
    holds = [hold("0.5", f"key_{1 + n % 2}") for n in range(50)]
    assert all(await asyncio.gather(*(store.reserve_hold(h) for h in holds)))

    batch = [Settlement(record=make_usage(n, key_id=h.key_id, cost=D("0.123")), hold_id=h.id)
             for n, h in enumerate(holds)]
    assert sum(await asyncio.gather(store.settle(batch[:30]), store.settle(batch[20:]))) == 50

    assert await credit_state(store, "key_1") == (D("3.075"), D(0))
    assert await credit_state(store, "key_2") == (D("3.075"), D(0))


async def test_release_renew_and_sweep(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("10")))
    mine = [hold("1", owner="i1", expires_at=100.0) for _ in range(3)]
    theirs = hold("2", owner="i2", expires_at=100.0)
    fixed = hold("3", owner="", expires_at=500.0)
    for h in (*mine, theirs, fixed):
        assert await store.reserve_hold(h)

    assert await store.release_hold(mine[0].id)
    assert not await store.release_hold(mine[0].id)  # idempotent
    assert not await store.release_hold("hold_nope")
    assert await store.renew_holds("i1", 300.0) == 2
    assert await store.sweep_holds(now=200.0) == 1  # only i2's hold lapsed (its instance died)
    assert {h.id for h in await store.list_holds("key_1")} == {mine[1].id, mine[2].id, fixed.id}
    assert await reserved_equals_live_holds(store) == D("5")

    assert await store.sweep_holds(now=400.0) == 2
    assert await store.sweep_holds(now=400.0) == 0
    # A late settlement of a swept hold still records and charges, exactly once.
    assert await store.settle([Settlement(record=make_usage(1, cost=D("0.5")), hold_id=mine[1].id)]) == 1
    assert await credit_state(store, "key_1") == (D("0.5"), D("3"))
    assert await reserved_equals_live_holds(store) == D("3")


async def test_unlimited_keys_always_reserve_and_still_count_spend(store: MigratingStore) -> None:
    await store.insert_key(make_key(1))

    results = await asyncio.gather(*(reserve(store, "1000") for _ in range(50)))
    assert all(results)
    await insert_usage(store, [make_usage(1, cost=D("0.75"))])

    assert (await credit_state(store, "key_1"))[0] == D("0.75")


async def test_credits_of_unknown_key(store: MigratingStore) -> None:
    assert not await reserve(store, "1", key_id="nope")
    assert await store.list_holds("nope") == []
    assert await store.count_keys() == 0


async def test_new_credit_limit_applies_to_outstanding_spend(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("1")))
    assert await reserve(store, "0.75")

    await store.update_key("key_1", credits=D("0.8"))
    assert not await reserve(store, "0.1")
    await store.update_key("key_1", clear_credits=True)
    assert await reserve(store, "0.1")


async def test_negative_amounts_are_rejected(store: MigratingStore) -> None:
    await store.insert_key(make_key(1, credits=D("1")))
    with pytest.raises(ValueError):
        await reserve(store, "-0.5")
    assert await store.list_holds("key_1") == []


# ------------------------------------------------------------------------------------------ usage
async def test_usage_roundtrip(store: MigratingStore) -> None:
    record = make_usage(
        1,
        kind="chat",
        provider="deepseek",
        upstream_model="deepseek-chat",
        prompt_tokens=1200,
        completion_tokens=345,
        cost=D("0.000123456789"),
        latency_ms=1500,
        ttft_ms=210,
        status="failed",
        finish_reason="error",
        native_finish_reason="overloaded",
        streamed=True,
        usage_estimated=True,
        attempts=("deepseek:429", "openai:ok"),
        error="upstream overloaded",
    )
    await insert_usage(store, [record, make_usage(2)])

    assert await store.get_usage("gen_0001") == record
    assert await store.get_usage("gen_0002") == make_usage(2)
    assert await store.get_usage("gen_9999") is None
    assert await insert_usage(store, []) == 0


async def test_usage_token_details_roundtrip(store: MigratingStore) -> None:
    """Cached (cache read), cache-creation and reasoning token counts survive the store."""
    record = make_usage(3, kind="chat", prompt_tokens=5000, completion_tokens=900, cached_tokens=4096,
                        cache_creation_tokens=512, reasoning_tokens=640)
    embedding = make_usage(4, kind="embedding", prompt_tokens=17)
    await insert_usage(store, [record, embedding])

    got = await store.get_usage("gen_0003")
    assert got == record
    assert got is not None and (got.cached_tokens, got.cache_creation_tokens, got.reasoning_tokens) == (4096, 512, 640)
    assert await store.get_usage("gen_0004") == embedding
    assert [r async for r in store.export_usage()] == [record, embedding]


async def test_reinserted_usage_record_is_skipped(store: MigratingStore) -> None:
    await insert_usage(store, [make_usage(1, prompt_tokens=5)])

    await insert_usage(store, [make_usage(1, prompt_tokens=99), make_usage(2)])

    exported = [r async for r in store.export_usage()]
    assert exported == [make_usage(1, prompt_tokens=5), make_usage(2)]


async def test_export_usage_pages_in_created_order(store: MigratingStore) -> None:
    # ids run against time, and pairs share a time, so only (created_at, id) order is right
    records = sorted(
        (make_usage(n, created_at=1000.0 + (10 - n) // 2) for n in range(11)),
        key=lambda r: (r.created_at, r.id),
    )
    assert records[0].id == "gen_0009"
    shuffled = random.Random(7).sample(records, len(records))
    await insert_usage(store, shuffled[:6])
    await insert_usage(store, shuffled[6:])

    for page_size in (1, 2, 3, 11, 500):
        assert [r async for r in store.export_usage(page_size=page_size)] == records
    assert [r async for r in store.export_usage()] == records


async def test_export_of_empty_store(store: MigratingStore) -> None:
    assert [r async for r in store.export_usage()] == []


# ------------------------------------------------------------------------------------------ files
async def test_file_roundtrip(store: MigratingStore) -> None:
    data = bytes(range(256)) * 1000
    stored = StoredFile(id="file_1", key_id="key_1", mime_type="video/mp4", data=data, created_at=12.5)
    await store.put_file(stored)
    await store.put_file(StoredFile(id="file_2", key_id="key_2", mime_type="image/png", data=b""))

    assert await store.get_file("file_1") == stored
    empty = await store.get_file("file_2")
    assert empty is not None and empty.data == b"" and empty.key_id == "key_2"
    assert await store.get_file("file_3") is None
    with pytest.raises(ValueError):
        await store.put_file(stored)


async def test_delete_files_before_removes_exactly_the_old_ones_in_batches(store: MigratingStore) -> None:
    for i in range(7):
        await store.put_file(StoredFile(id=f"file_{i}", key_id="key_1", mime_type="image/png", data=b"x",
                                        created_at=100.0 + i))
    assert await store.delete_files_before(103.0, limit=2) == 2  # a batch is bounded
    assert await store.delete_files_before(103.0, limit=2) == 1  # 100, 101, 102 gone; 103 is not before
    assert await store.delete_files_before(103.0, limit=2) == 0
    assert [i for i in range(7) if await store.get_file(f"file_{i}") is not None] == [3, 4, 5, 6]


# ------------------------------------------------------------------------------------ video tasks
async def test_video_task_roundtrip(store: MigratingStore) -> None:
    task = make_task(
        1,
        request_id="req-1",
        seed=42,
        image=b"\x89PNG\r\n\x1a\n\x00",
        state=VideoState.SUCCEEDED,
        progress=100,
        provider="local",
        upstream_task_id="up-1",
        file_ids=("file_a", "file_b"),
        file_sizes=(1024, 7),
        error="",
        reserved=D("0.4"),
        cost=D("0.000000336"),
        completed_at=130.25,
        lease_owner="w1",
        lease_until=99.5,
    )

    assert await store.create_video_task(task) == (task, True)
    assert await store.get_video_task("vid_0001") == task
    assert await store.get_video_task("vid_0002") is None
    bare = make_task(2)
    await store.create_video_task(bare)
    assert await store.get_video_task("vid_0002") == bare


async def test_create_video_task_is_idempotent_per_key_and_request_id(store: MigratingStore) -> None:
    original = make_task(1, request_id="req-1")
    assert await store.create_video_task(original) == (original, True)

    retry = make_task(2, request_id="req-1", prompt="something else")
    assert await store.create_video_task(retry) == (original, False)
    assert await store.get_video_task("vid_0002") is None

    other_key = make_task(3, request_id="req-1", key_id="key_2")
    assert await store.create_video_task(other_key) == (other_key, True)
    for n in (4, 5):  # an empty request_id never deduplicates
        assert (await store.create_video_task(make_task(n)))[1]
    with pytest.raises(ValueError):
        await store.create_video_task(make_task(1, request_id="req-2"))


async def test_concurrent_idempotent_creates_store_one_task(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()

    results = await asyncio.gather(
        *((first if n % 2 else second).create_video_task(make_task(n, request_id="r")) for n in range(20))
    )

    assert [created for _, created in results].count(True) == 1
    assert len({task.id for task, _ in results}) == 1
    assert len(await first.list_video_tasks("key_1", 100, None)) == 1


async def test_list_video_tasks_pages_newest_first(store: MigratingStore) -> None:
    created = [make_task(n, created_at=100.0 + n // 2) for n in range(9)]  # pairs share a time
    for task in random.Random(3).sample(created, len(created)):
        await store.create_video_task(task)
    await store.create_video_task(make_task(99, key_id="key_2", created_at=1.0))
    newest_first = sorted(created, key=lambda t: (t.created_at, t.id), reverse=True)

    pages: list[list[VideoTask]] = []
    cursor: tuple[float, str] | None = None
    for _ in range(10):  # bounded: a cursor that does not advance must fail, not hang
        page = await store.list_video_tasks("key_1", 2, cursor)
        if not page:
            break
        pages.append(page)
        cursor = (page[-1].created_at, page[-1].id)

    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert [t for p in pages for t in p] == newest_first
    assert await store.list_video_tasks("key_1", 100, None) == newest_first
    assert await store.list_video_tasks("key_1", 3, (104.0, "vid_0008")) == newest_first[1:4]
    assert await store.list_video_tasks("key_1", 0, None) == []
    assert await store.list_video_tasks("key_3", 10, None) == []


async def test_claim_takes_oldest_claimable_task(store: MigratingStore) -> None:
    for n, state in enumerate(VideoState):  # queued 100, running 101, succeeded 102, failed 103
        await store.create_video_task(make_task(n, state=state))
    await store.create_video_task(make_task(9, created_at=50.0))  # the oldest

    first = await store.claim_video_task("w1", now=1000.0, lease_seconds=30)
    second = await store.claim_video_task("w1", now=1000.0, lease_seconds=30)
    third = await store.claim_video_task("w1", now=1000.0, lease_seconds=30)
    fourth = await store.claim_video_task("w2", now=1000.0, lease_seconds=30)

    assert first is not None and first.id == "vid_0009"
    assert first.lease_owner == "w1" and first.lease_until == 1030.0
    assert second is not None and second.id == "vid_0000"
    assert third is not None and third.id == "vid_0001" and third.state == VideoState.RUNNING
    assert fourth is None  # finished tasks are never claimed; leased ones not before expiry
    stored = await store.get_video_task("vid_0000")
    assert stored is not None and (stored.lease_owner, stored.lease_until) == ("w1", 1030.0)


async def test_two_instances_never_claim_the_same_task(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    for n in range(12):
        await first.create_video_task(make_task(n))

    claims = await asyncio.gather(
        *((first if i % 2 else second).claim_video_task(f"worker-{i}", now=500.0, lease_seconds=60) for i in range(40))
    )

    won = [task for task in claims if task is not None]
    assert sorted(task.id for task in won) == [f"vid_{n:04}" for n in range(12)]
    for task in won:
        stored = await second.get_video_task(task.id)
        assert stored is not None and stored.lease_owner == task.lease_owner


async def test_expired_lease_is_claimed_again(store: MigratingStore) -> None:
    await store.create_video_task(make_task(1))
    claimed = await store.claim_video_task("w1", now=1000.0, lease_seconds=30)
    assert claimed is not None
    claimed.state = VideoState.RUNNING
    assert await store.update_video_task(claimed, "w1")

    assert await store.claim_video_task("w2", now=1029.0, lease_seconds=30) is None
    assert await store.claim_video_task("w2", now=1030.0, lease_seconds=30) is None  # strictly before
    reclaimed = await store.claim_video_task("w2", now=1031.0, lease_seconds=30)

    assert reclaimed is not None and reclaimed.id == "vid_0001"
    assert (reclaimed.lease_owner, reclaimed.lease_until) == ("w2", 1061.0)
    assert reclaimed.state == VideoState.RUNNING


async def test_update_video_task_writes_every_mutable_field(store: MigratingStore) -> None:
    task = make_task(1, request_id="req", seed=7, image=b"img", reserved=D("0.5"), hold_id="hold_1")
    await store.create_video_task(task)
    claimed = await store.claim_video_task("w1", now=1000.0, lease_seconds=30)
    assert claimed is not None and claimed.hold_id == "hold_1"

    task.state = VideoState.FAILED
    task.progress = 55
    task.provider = "remote"
    task.upstream_task_id = "up-9"
    task.file_ids = ("f1",)
    task.file_sizes = (123456789,)
    task.error = "upstream failed"
    task.reserved = D(0)
    task.cost = D("0.000000000123")
    task.completed_at = 222.5
    task.lease_owner = "w9"
    task.lease_until = 333.0
    assert await store.update_video_task(task, "w1")

    assert await store.get_video_task("vid_0001") == task
    task.completed_at = None
    assert not await store.update_video_task(task, "w1")  # fenced: w9 holds it now
    assert await store.update_video_task(task, "w9")
    assert await store.get_video_task("vid_0001") == task


async def test_release_drops_only_the_workers_unfinished_leases(store: MigratingStore) -> None:
    for n in range(4):
        await store.create_video_task(make_task(n))
    mine = [await store.claim_video_task("w1", now=1000.0, lease_seconds=300) for _ in range(2)]
    theirs = await store.claim_video_task("w2", now=1000.0, lease_seconds=300)
    assert mine[0] is not None and mine[1] is not None and theirs is not None
    mine[1].state = VideoState.SUCCEEDED
    assert await store.update_video_task(mine[1], "w1")

    assert await store.release_video_tasks("w1") == 1
    assert await store.release_video_tasks("w1") == 0
    assert await store.release_video_tasks("nobody") == 0

    released = await store.get_video_task(mine[0].id)
    assert released is not None and (released.lease_owner, released.lease_until) == ("", 0.0)
    finished = await store.get_video_task(mine[1].id)
    assert finished is not None and finished.lease_owner == "w1"
    other = await store.get_video_task(theirs.id)
    assert other is not None and other.lease_owner == "w2"
    again = await store.claim_video_task("w3", now=1001.0, lease_seconds=300)  # long before 1300
    assert again is not None and again.id == mine[0].id
    last = await store.claim_video_task("w3", now=1001.0, lease_seconds=300)
    assert last is not None and last.id == "vid_0003"
    assert await store.claim_video_task("w3", now=1001.0, lease_seconds=300) is None


async def test_video_leases_are_fenced_and_finish_settles_exactly_once(open_store: OpenStore) -> None:
    first, second = await open_store(), await open_store()
    await first.insert_key(make_key(1, credits=D("10")))
    h = hold("2", owner="", expires_at=5000.0)
    assert await first.reserve_hold(h)
    await first.create_video_task(make_task(1, reserved=D("2"), hold_id=h.id))
    a = await first.claim_video_task("wa", now=1000.0, lease_seconds=30)
    assert a is not None
    assert await first.renew_video_lease(a.id, "wa", 1040.0)
    assert await second.claim_video_task("wb", now=1035.0, lease_seconds=30) is None  # renewed: still a's
    b = await second.claim_video_task("wb", now=1041.0, lease_seconds=30)  # a's lease lapsed (a stalled)
    assert b is not None
    assert not await first.renew_video_lease(a.id, "wa", 1080.0)
    a.state, a.progress = VideoState.RUNNING, 50
    assert not await first.update_video_task(a, "wa")

    def done(task: VideoTask) -> Settlement:
        task.state, task.cost, task.lease_owner, task.lease_until = VideoState.SUCCEEDED, D("1.5"), "", 0.0
        return Settlement(record=make_usage(1, id=task.id, kind="video", cost=D("1.5")), hold_id=task.hold_id)

    results = await asyncio.gather(first.finish_video_task(a, "wa", done(a)),
                                   second.finish_video_task(b, "wb", done(b)))
    assert results == [False, True]
    assert not await second.finish_video_task(b, "wb", done(b))  # its lease is gone with the conclusion
    assert await credit_state(first, "key_1") == (D("1.5"), D(0))
    assert await first.list_holds("key_1") == []
    final = await first.get_video_task("vid_0001")
    assert final is not None and final.state == VideoState.SUCCEEDED and final.lease_owner == ""
    assert [r.id async for r in first.export_usage()] == ["vid_0001"]


# ------------------------------------------------------------------------------------- migrations
async def test_migrations_apply_once_and_report_version(backend: Backend) -> None:
    versions = [m.version for m in backend.migrations]
    fresh = backend.make_store()
    try:
        assert await fresh.current_version() == 0
        assert await fresh.upgrade() == versions
        assert await fresh.current_version() == versions[-1]
        assert await fresh.upgrade() == []
        await fresh.open()  # an already migrated database opens without applying anything
        await fresh.open()
        await fresh.insert_key(make_key(1))
    finally:
        await fresh.close()

    again = backend.make_store()
    try:
        await again.open()
        assert await again.upgrade() == []
        assert await again.current_version() == versions[-1]
        assert await again.get_key("key_1") == make_key(1)  # state survives a reopen
    finally:
        await again.close()
        await again.close()  # closing twice is harmless


async def test_concurrent_first_opens_migrate_once(backend: Backend) -> None:
    stores = [backend.make_store() for _ in range(3)]
    try:
        applied = await asyncio.gather(*(s.upgrade() for s in stores))
        # each step runs under the lock on its own, so upgraders may share the work: every
        # migration is applied exactly once, in order within each upgrader
        assert sorted(v for steps in applied for v in steps) == [m.version for m in backend.migrations]
        assert all(steps == sorted(steps) for steps in applied)
    finally:
        for s in stores:
            await s.close()
