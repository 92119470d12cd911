"""Credit slices (app/slices.py) against a real SQLite store: what is held never exceeds the
balance, pieces come out of memory, slices go back when idle or drained. Clock injected."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from raven_service.app.slices import SliceBank
from raven_service.policy.auth import create_key
from raven_service.storage.sqlite import SqliteStore

pytestmark = pytest.mark.timeout(10)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def store(tmp_path):
    s = SqliteStore(tmp_path / "raven.db")
    await s.open()
    yield s
    await s.close()


async def test_pieces_come_from_one_slice_and_the_store_holds_the_slice(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("10"))
    clock = Clock()
    bank = SliceBank(store, "i-1", factor=4, clock=clock, prefetch_below=0)  # leases only when empty
    pieces = [await bank.take(key.id, Decimal("0.5"), None) for _ in range(4)]
    assert all(p is not None for p in pieces)
    assert len({p.hold_id for p in pieces}) == 1  # four pieces, one lease
    holds = await store.list_holds(key.id)
    assert [(h.amount, h.owner) for h in holds] == [(Decimal("2.0"), "i-1")]
    fifth = await bank.take(key.id, Decimal("0.5"), None)  # the slice is full: a second lease,
    assert fifth is not None and fifth.hold_id != pieces[0].hold_id  # twice as big (slow start)
    assert sorted(h.amount for h in await store.list_holds(key.id)) == [Decimal("2.0"), Decimal("4.0")]
    assert (await store.get_key(key.id)).credits_reserved == Decimal("6.0")
    for _ in range(7):
        assert (await bank.take(key.id, Decimal("0.5"), None)).hold_id == fifth.hold_id
    # the next lease would be 8.0 but only 4.0 is left: it retries at the base size
    sixth = await bank.take(key.id, Decimal("0.5"), None)
    assert sixth is not None
    assert sorted(h.amount for h in await store.list_holds(key.id)) == [Decimal("2.0"), Decimal("2.0"), Decimal("4.0")]
    assert (await store.get_key(key.id)).credits_reserved == Decimal("8.0") <= Decimal("10")


async def test_a_slice_never_exceeds_the_balance_so_the_caller_holds_exactly(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("1"))
    bank = SliceBank(store, "i-1", factor=4)
    assert await bank.take(key.id, Decimal("0.5"), None) is None  # a 2.0 slice does not fit in 1.0
    assert await store.list_holds(key.id) == []
    assert (await store.get_key(key.id)).credits_reserved == 0


async def test_two_instances_never_hold_more_than_the_balance(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("5"))
    a, b = SliceBank(store, "i-a", factor=4), SliceBank(store, "i-b", factor=4)
    got = await asyncio.gather(*(bank.take(key.id, Decimal("0.5"), None) for bank in (a, b) for _ in range(6)))
    leased = {p.hold_id for p in got if p is not None}
    assert len(leased) == 2  # 2 x 2.0 fit in 5.0, a third slice would not
    stored = await store.get_key(key.id)
    assert stored.credits_reserved == Decimal("4.0") <= stored.credits
    assert sum(p is not None for p in got) == 8


async def test_idle_and_drained_slices_go_back(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("100"))
    clock = Clock()
    bank = SliceBank(store, "i-1", factor=4, idle_seconds=10, clock=clock)
    p = await bank.take(key.id, Decimal("1"), None)
    assert p is not None
    assert await bank.tick() == 0  # in use
    bank.give_back(p, Decimal("0.25"))
    clock.now += 9
    assert await bank.tick() == 0  # not idle long enough
    clock.now += 1
    assert await bank.tick() == 1
    assert await store.list_holds(key.id) == []
    assert (await store.get_key(key.id)).credits_reserved == 0
    assert bank._slices == {} and bank._locks == {}  # nothing kept for a key gone quiet

    # used up: 4 pieces of 1.0 at full cost leave nothing; the slice goes back as its last piece ends
    pieces = [await bank.take(key.id, Decimal("1"), None) for _ in range(4)]
    for piece in pieces:
        bank.give_back(piece, Decimal("1"))
    await asyncio.sleep(0)
    await bank.release_all()
    assert await store.list_holds(key.id) == []


async def test_release_all_waits_for_pieces_in_use(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("100"))
    bank = SliceBank(store, "i-1", factor=4)
    p = await bank.take(key.id, Decimal("1"), None)
    await bank.release_all()
    assert len(await store.list_holds(key.id)) == 1  # still serving a request
    assert await bank.take(key.id, Decimal("1"), None) is not None  # a closed slice lends no more
    assert len(await store.list_holds(key.id)) == 2
    bank.give_back(p, Decimal("0.5"))
    await bank.release_all()
    assert len(await store.list_holds(key.id)) == 1


async def test_an_idle_slice_goes_back_by_itself_with_one_timer(store) -> None:
    # the real event loop's timer (idle_seconds is tiny here); the clock is the monotonic one
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("100"))
    bank = SliceBank(store, "i-1", factor=4, idle_seconds=0.05)
    loop = asyncio.get_running_loop()
    scheduled: list[float] = []
    real_call_later = loop.call_later

    def counting_call_later(delay, callback, *args, **kwargs):
        if getattr(callback, "__self__", None) is bank:
            scheduled.append(delay)
        return real_call_later(delay, callback, *args, **kwargs)

    loop.call_later = counting_call_later  # type: ignore[method-assign]
    try:
        for _ in range(50):  # fifty requests one after the other: one idle timer, not fifty
            piece = await bank.take(key.id, Decimal("0.01"), None)
            assert piece is not None
            bank.give_back(piece, Decimal("0.0001"))  # 50 x 0.0001 leave the one 0.04 slice most of its room
        assert scheduled == [0.05]
    finally:
        loop.call_later = real_call_later  # type: ignore[method-assign]
    assert len(await store.list_holds(key.id)) == 1
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not await store.list_holds(key.id):
            break
    assert await store.list_holds(key.id) == []
    assert (await store.get_key(key.id)).credits_reserved == 0


class CountingStore:
    """The real store, counting the leases (reserve_hold calls) that reach it."""

    def __init__(self, store: SqliteStore) -> None:
        self._store = store
        self.leases = 0

    async def reserve_hold(self, hold):
        self.leases += 1
        return await self._store.reserve_hold(hold)

    def __getattr__(self, name):
        return getattr(self._store, name)


async def test_a_running_low_slice_leases_the_next_in_the_background(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("100"))
    counting = CountingStore(store)
    bank = SliceBank(counting, "i-1", factor=4, idle_seconds=60, prefetch_below=0.25)  # type: ignore[arg-type]
    pieces = [await bank.take(key.id, Decimal("1"), None) for _ in range(3)]  # 4.0 slice, 1.0 (25 %) left
    assert counting.leases == 1 and not bank._background
    pieces.append(await bank.take(key.id, Decimal("1"), None))  # 0 left: the next lease starts, unawaited
    assert counting.leases == 1 and len(bank._background) == 1
    await asyncio.gather(*bank._background)
    assert counting.leases == 2
    assert sorted(h.amount for h in await store.list_holds(key.id)) == [Decimal("4.0"), Decimal("8.0")]
    # the next requests come out of the prefetched slice with no lease on their path; the seventh
    # leaves it under 25 % (1.0 of 8.0), which starts the one after it
    more = [await bank.take(key.id, Decimal("1"), None) for _ in range(6)]
    assert not bank._background  # 2.0 of 8.0 left: not yet
    more.append(await bank.take(key.id, Decimal("1"), None))
    assert len({p.hold_id for p in more}) == 1 and counting.leases == 2
    assert len(bank._background) == 1
    await asyncio.gather(*bank._background)
    assert counting.leases == 3
    for p in pieces + more:
        bank.give_back(p, Decimal("0.5"))
    await bank.release_all()
    assert await store.list_holds(key.id) == []
    assert (await store.get_key(key.id)).credits_reserved == 0


async def test_no_prefetch_while_another_slice_has_room_or_a_lease_is_under_way(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("100"))
    counting = CountingStore(store)
    bank = SliceBank(counting, "i-1", factor=4, idle_seconds=60, prefetch_below=0.25)  # type: ignore[arg-type]
    pieces = [await bank.take(key.id, Decimal("1"), None) for _ in range(4)]
    pieces += [await bank.take(key.id, Decimal("1"), None) for _ in range(3)]  # while the prefetch runs
    await asyncio.gather(*bank._background)
    assert counting.leases == 2  # one prefetch for the burst, not one per request
    assert not bank._prefetching
    for p in pieces:
        bank.give_back(p, Decimal("1"))
    await bank.release_all()
    assert (await store.get_key(key.id)).credits_reserved == 0


async def test_an_unused_prefetched_slice_goes_back_at_idle_time(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("100"))
    bank = SliceBank(store, "i-1", factor=4, idle_seconds=0.05, prefetch_below=0.25)
    pieces = [await bank.take(key.id, Decimal("1"), None) for _ in range(4)]
    await asyncio.gather(*bank._background)
    assert len(await store.list_holds(key.id)) == 2
    for p in pieces:
        bank.give_back(p, Decimal("1"))  # the first slice is used up: it goes back at once
    for _ in range(100):  # the prefetched one nobody used goes back by its idle timer, no tick needed
        await asyncio.sleep(0.02)
        if not await store.list_holds(key.id):
            break
    assert await store.list_holds(key.id) == []
    assert (await store.get_key(key.id)).credits_reserved == 0


class GatedStore(CountingStore):
    """Leases wait for `gate` (a lease that is slow to land)."""

    def __init__(self, store: SqliteStore) -> None:
        super().__init__(store)
        self.gate = asyncio.Event()
        self.gate.set()

    async def reserve_hold(self, hold):
        await self.gate.wait()
        return await super().reserve_hold(hold)


async def test_requests_without_room_wait_for_one_lease_and_resume_together(store) -> None:
    key, _ = await create_key(store, name="k", rpm=0, concurrency=0, credits=Decimal("1000"))
    gated = GatedStore(store)
    bank = SliceBank(gated, "i-1", factor=32, idle_seconds=60, prefetch_below=0)  # type: ignore[arg-type]
    pieces = [await bank.take(key.id, Decimal("1"), None) for _ in range(32)]  # the first slice, used up
    gated.gate.clear()
    waiting = [asyncio.ensure_future(bank.take(key.id, Decimal("1"), None)) for _ in range(20)]
    for _ in range(5):
        await asyncio.sleep(0)
    assert gated.leases == 1 and not any(t.done() for t in waiting)  # one lease under way for all 20
    gated.gate.set()
    while not any(t.done() for t in waiting):  # noqa: ASYNC110  # the lease lands (a store transaction); this
        await asyncio.sleep(0)  # test runs every loop iteration, to count them
    for _ in range(3):  # a few loop iterations, not one per waiting request
        await asyncio.sleep(0)
    assert all(t.done() for t in waiting)
    got = [t.result() for t in waiting]
    assert gated.leases == 2 and all(p is not None for p in got)
    assert len({p.hold_id for p in got}) == 1  # all carved from the one new slice (64 worst cases)
    for p in pieces + got:
        bank.give_back(p, Decimal("1"))
    await bank.release_all()
    assert (await store.get_key(key.id)).credits_reserved == 0
