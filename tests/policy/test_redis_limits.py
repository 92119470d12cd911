"""RedisLimiter against a real Redis, plus a shared behavioural suite run over both limiters.

The shared suite (`test_shared_*`) runs against `InProcessLimiter` and `RedisLimiter` so that the
two stay consistent; the in-process harness shares one instance where the Redis one opens two
(two processes on one Redis) and moves a fake clock where the Redis one sleeps through a short
window. Every Redis-backed test is skipped, with the reason, when Redis is unreachable
(RAVEN_TEST_REDIS_URL, default redis://127.0.0.1:6379/0); each uses a random key prefix and
deletes its keys afterwards.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import secrets
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Protocol

import pytest
import redis
import redis.asyncio as aioredis
from tests_support import backend_missing

from raven_service.core.errors import StoreUnavailable
from raven_service.core.ports import Lease, Limiter
from raven_service.policy.ratelimit import WINDOW, InProcessLimiter, RateInfo
from raven_service.policy.redis_limits import RedisLease, RedisLimiter

REDIS_URL = os.environ.get("RAVEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
SHORT_WINDOW = 0.3  # Redis window for the reset tests (real time)


@functools.cache
def redis_unreachable() -> str | None:
    """Why Redis cannot be used for these tests, or None when it answers PING."""
    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5, socket_timeout=0.5)
        try:
            client.ping()
        finally:
            client.close()
    except (redis.RedisError, OSError) as exc:
        return f"Redis not reachable at RAVEN_TEST_REDIS_URL ({type(exc).__name__}): RedisLimiter tests skipped"
    return None


def dead_redis_url(password: str = "") -> str:
    """A URL on 127.0.0.1 where nothing listens (connections are refused at once)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    auth = f":{password}@" if password else ""
    return f"redis://{auth}127.0.0.1:{port}/0"


class RedisEnv:
    """A random key prefix on the test Redis; limiters made here are closed and keys deleted after."""

    def __init__(self) -> None:
        self.prefix = f"raventest:{secrets.token_hex(6)}:"
        self.raw: aioredis.Redis = aioredis.Redis.from_url(REDIS_URL)
        self.limiters: list[RedisLimiter] = []

    def make(self, **kwargs: Any) -> RedisLimiter:
        limiter = RedisLimiter(REDIS_URL, prefix=self.prefix, **kwargs)
        self.limiters.append(limiter)
        return limiter

    async def keys(self) -> list[bytes]:
        return [k async for k in self.raw.scan_iter(match=f"{self.prefix}*")]

    async def cleanup(self) -> None:
        for limiter in self.limiters:
            await limiter.close()
        keys = await self.keys()
        if keys:
            await self.raw.delete(*keys)
        await self.raw.aclose()


@asynccontextmanager
async def open_redis_env() -> AsyncIterator[RedisEnv]:
    reason = redis_unreachable()
    if reason:
        backend_missing(reason, "RAVEN_TEST_REDIS_URL")
    env = RedisEnv()
    try:
        yield env
    finally:
        await env.cleanup()


@pytest.fixture
async def redis_env() -> AsyncIterator[RedisEnv]:
    async with open_redis_env() as env:
        yield env


# ------------------------------------------------------------------------------------ harnesses
class Harness(Protocol):
    name: str
    short_window: float

    def make(self, *, short: bool = False) -> Limiter:
        """A limiter on the shared state: another 'process' where the backend supports it.
        `short`: its RPM window is `short_window` (which `advance` can cross quickly)."""
        ...

    async def advance(self, seconds: float) -> None: ...


class InProcessHarness:
    name = "inprocess"
    short_window = WINDOW

    def __init__(self) -> None:
        self.now = 1000.0
        self.limiter = InProcessLimiter(clock=lambda: self.now)

    def make(self, *, short: bool = False) -> Limiter:
        return self.limiter  # one process: every "instance" is the same one

    async def advance(self, seconds: float) -> None:
        self.now += seconds


class RedisHarness:
    name = "redis"
    short_window = SHORT_WINDOW

    def __init__(self, env: RedisEnv) -> None:
        self.env = env

    def make(self, *, short: bool = False) -> Limiter:
        return self.env.make(window=SHORT_WINDOW) if short else self.env.make()

    async def advance(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@pytest.fixture(params=["inprocess", pytest.param("redis", marks=pytest.mark.backends)])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    if request.param == "inprocess":
        h = InProcessHarness()
        yield h
        await h.limiter.close()
        return
    async with open_redis_env() as env:
        yield RedisHarness(env)


def tolerance(h: Harness) -> float:
    """How far a real-time reset_after may lag the ideal value (0 with the fake clock)."""
    return 0.0 if h.name == "inprocess" else 0.1


# ------------------------------------------------------------------------------------ shared: RPM
async def test_shared_burst_admits_exactly_rpm_across_instances(harness: Harness) -> None:
    a, b = harness.make(), harness.make()
    n = 10
    results: list[RateInfo] = await asyncio.gather(
        *((a if i % 2 else b).hit_rpm("k", n) for i in range(3 * n))  # type: ignore[misc]
    )
    allowed = [r for r in results if r.allowed]
    assert len(allowed) == n
    # each admitted request saw a distinct count: no read-then-write race
    assert sorted(r.remaining for r in allowed) == list(range(n))
    assert all(r.limit == n for r in results)
    assert all(r.remaining == 0 for r in results if not r.allowed)
    assert all(0 < r.reset_after <= WINDOW for r in results)
    # the other instance sees the same exhausted window
    assert not (await a.hit_rpm("k", n)).allowed
    assert not (await b.hit_rpm("k", n)).allowed


async def test_shared_remaining_counts_down_and_rejections_are_not_counted(harness: Harness) -> None:
    lim = harness.make()
    seen = [await lim.hit_rpm("k", 3) for _ in range(5)]
    assert [(r.allowed, r.limit, r.remaining) for r in seen] == [
        (True, 3, 2),
        (True, 3, 1),
        (True, 3, 0),
        (False, 3, 0),
        (False, 3, 0),
    ]
    assert all(0 < r.reset_after <= WINDOW for r in seen)
    # the two rejected hits were not counted: the window holds 3 requests, so a higher limit
    # has room for exactly 2 more
    assert (await lim.peek_rpm("k", 6)).remaining == 3
    assert (await lim.hit_rpm("k", 4)).allowed
    assert not (await lim.hit_rpm("k", 4)).allowed


async def test_shared_window_resets(harness: Harness) -> None:
    lim = harness.make(short=True)
    w = harness.short_window
    first = await lim.hit_rpm("k", 2)
    assert first.allowed and first.remaining == 1
    assert w - tolerance(harness) <= first.reset_after <= w
    await harness.advance(w / 2)
    second = await lim.hit_rpm("k", 2)
    assert second.allowed and second.remaining == 0
    assert w / 2 - tolerance(harness) <= second.reset_after <= w / 2  # the window did not move
    rejected = await lim.hit_rpm("k", 2)
    assert not rejected.allowed
    await harness.advance(w / 2 + w / 5)
    fresh = await lim.hit_rpm("k", 2)
    assert fresh.allowed and fresh.remaining == 1
    assert w - tolerance(harness) <= fresh.reset_after <= w


async def test_shared_peek_does_not_count(harness: Harness) -> None:
    lim = harness.make()
    fresh = await lim.peek_rpm("k", 3)
    assert (fresh.allowed, fresh.limit, fresh.remaining) == (True, 3, 3)
    assert 0 < fresh.reset_after <= WINDOW
    for _ in range(10):
        await lim.peek_rpm("k", 3)
    assert [(await lim.hit_rpm("k", 3)).remaining for _ in range(3)] == [2, 1, 0]
    peeked = await lim.peek_rpm("k", 3)
    assert (peeked.limit, peeked.remaining) == (3, 0)
    assert not (await lim.hit_rpm("k", 3)).allowed


async def test_shared_unlimited_rpm(harness: Harness) -> None:
    lim = harness.make()
    for _ in range(20):
        r = await lim.hit_rpm("k", 0)
        assert (r.allowed, r.limit, r.remaining) == (True, 0, 0)
    assert (await lim.peek_rpm("k", 0)).remaining == 0
    # unlimited hits are not counted against a later limit
    assert (await lim.hit_rpm("k", 2)).remaining == 1


async def test_shared_keys_are_independent(harness: Harness) -> None:
    lim = harness.make()
    assert (await lim.hit_rpm("a", 1)).allowed
    assert not (await lim.hit_rpm("a", 1)).allowed
    assert (await lim.hit_rpm("b", 1)).allowed
    assert await lim.acquire_slot("a", 1) is not None
    assert await lim.acquire_slot("a", 1) is None
    assert await lim.acquire_slot("b", 1) is not None


# ------------------------------------------------------------------------------------ shared: slots
async def test_shared_concurrency_limit_across_instances(harness: Harness) -> None:
    a, b = harness.make(), harness.make()
    limit = 4
    got: list[Lease | None] = await asyncio.gather(
        *((a if i % 2 else b).acquire_slot("k", limit) for i in range(3 * limit))  # type: ignore[misc]
    )
    held = [lease for lease in got if lease is not None]
    assert len(held) == limit
    assert await a.acquire_slot("k", limit) is None
    assert await b.acquire_slot("k", limit) is None
    for lease in held:
        await lease.release()


async def test_shared_release_frees_exactly_one_slot(harness: Harness) -> None:
    a, b = harness.make(), harness.make()
    first = await a.acquire_slot("k", 2)
    second = await b.acquire_slot("k", 2)
    assert first is not None and second is not None
    assert await b.acquire_slot("k", 2) is None
    await first.release()
    await first.release()  # idempotent: frees one slot, not two
    third = await b.acquire_slot("k", 2)
    assert third is not None
    assert await a.acquire_slot("k", 2) is None
    await second.release()
    await third.release()


async def test_shared_unlimited_concurrency(harness: Harness) -> None:
    lim = harness.make()
    leases = [await lim.acquire_slot("k", 0) for _ in range(50)]
    assert all(lease is not None for lease in leases)
    for lease in leases:
        assert lease is not None
        await lease.release()
        await lease.release()
    # they never occupied the limited pool
    assert await lim.acquire_slot("k", 1) is not None


# ------------------------------------------------------------------------------------ Redis only
async def test_crashed_holder_slot_is_reclaimed_after_ttl(redis_env: RedisEnv) -> None:
    a = redis_env.make(lease_ttl=0.5)
    b = redis_env.make(lease_ttl=0.5)
    crashed = await a.acquire_slot("k", 2)
    alive = await b.acquire_slot("k", 2)  # renewed throughout, so the set itself never expires
    assert isinstance(crashed, RedisLease) and crashed.renew_task is not None
    assert alive is not None
    crashed.renew_task.cancel()  # the holder "crashes": no more renewals, no release
    await asyncio.sleep(0.3)
    assert await b.acquire_slot("k", 2) is None  # still within the TTL
    await asyncio.sleep(0.35)
    assert await b.acquire_slot("k", 2) is not None  # the crashed lease was swept
    assert await b.acquire_slot("k", 2) is None  # the renewed one still counts


async def test_renewal_keeps_a_long_holder_alive(redis_env: RedisEnv) -> None:
    a = redis_env.make(lease_ttl=0.3)
    b = redis_env.make(lease_ttl=0.3)
    assert a.renew_every == pytest.approx(0.1)
    lease = await a.acquire_slot("k", 1)
    assert lease is not None
    await asyncio.sleep(1.0)  # more than three TTLs
    assert await b.acquire_slot("k", 1) is None
    await lease.release()
    assert isinstance(lease, RedisLease) and lease.renew_task is None and lease.released
    assert await b.acquire_slot("k", 1) is not None


async def test_lost_lease_is_retaken_only_when_a_slot_is_free(redis_env: RedisEnv) -> None:
    a = redis_env.make(lease_ttl=0.3)
    b = redis_env.make(lease_ttl=0.3)
    lease = await a.acquire_slot("k", 1)
    assert isinstance(lease, RedisLease)
    key = f"{redis_env.prefix}conc:k"
    await redis_env.raw.zrem(key, lease.lease_id)  # as if it had expired during an outage and been swept
    other = await b.acquire_slot("k", 1)
    assert other is not None
    await asyncio.sleep(0.25)  # a's renewals find the slot taken: the limit still holds
    assert await redis_env.raw.zcard(key) == 1
    assert await redis_env.raw.zscore(key, lease.lease_id) is None
    await other.release()
    await asyncio.sleep(0.25)  # ...and take it back once it is free
    assert await redis_env.raw.zscore(key, lease.lease_id) is not None
    assert await b.acquire_slot("k", 1) is None
    await lease.release()
    assert await b.acquire_slot("k", 1) is not None


async def test_dropped_lease_stops_renewing_and_expires(redis_env: RedisEnv) -> None:
    a = redis_env.make(lease_ttl=0.3)
    lease = await a.acquire_slot("k", 1)
    assert lease is not None
    del lease
    gc.collect()
    await asyncio.sleep(0.5)
    assert await a.acquire_slot("k", 1) is not None


async def test_keys_expire_and_are_removed(redis_env: RedisEnv) -> None:
    lim = redis_env.make(lease_ttl=0.5)
    await lim.hit_rpm("k", 5)
    lease = await lim.acquire_slot("k", 3)
    assert lease is not None
    raw = redis_env.raw
    rpm_ttl = await raw.pttl(f"{redis_env.prefix}rpm:k")
    slot_ttl = await raw.pttl(f"{redis_env.prefix}conc:k")
    assert 0 < rpm_ttl <= WINDOW * 1000
    assert 0 < slot_ttl <= 500 + 1
    await lease.release()
    assert await raw.exists(f"{redis_env.prefix}conc:k") == 0
    assert await raw.zcard(f"{redis_env.prefix}conc:k") == 0


async def test_unlimited_paths_do_not_touch_redis(redis_env: RedisEnv) -> None:
    dead = RedisLimiter(dead_redis_url())  # any Redis call would fail
    try:
        assert (await dead.hit_rpm("k", 0)).allowed
        assert (await dead.peek_rpm("k", -1)).limit == 0
        lease = await dead.acquire_slot("k", 0)
        assert lease is not None
        await lease.release()
    finally:
        await dead.close()
    live = redis_env.make()
    await live.hit_rpm("k", 0)
    await live.peek_rpm("k", 0)
    await (await live.acquire_slot("k", 0) or pytest.fail("no lease")).release()
    assert await redis_env.keys() == []


async def test_one_round_trip_per_hit_and_acquire(redis_env: RedisEnv, monkeypatch: pytest.MonkeyPatch) -> None:
    lim = redis_env.make()
    await lim.hit_rpm("warm", 5)  # loads the scripts
    lease = await lim.acquire_slot("warm", 5)
    assert lease is not None
    await lease.release()
    client = lim._redis()
    calls: list[str] = []
    original = client.execute_command

    async def counting(*args: Any, **options: Any) -> Any:
        calls.append(str(args[0]))
        return await original(*args, **options)

    monkeypatch.setattr(client, "execute_command", counting)
    await lim.hit_rpm("k", 5)
    assert calls == ["EVALSHA"]
    await lim.peek_rpm("k", 5)
    assert calls == ["EVALSHA"] * 2
    lease = await lim.acquire_slot("k", 5)
    assert calls == ["EVALSHA"] * 3
    assert lease is not None
    await lease.release()


async def test_redis_down_raises_unavailable_without_leaking_the_url(redis_env: RedisEnv) -> None:
    lim = RedisLimiter(dead_redis_url(password="hunter2-secret"), socket_timeout=0.5)
    assert "hunter2" not in repr(lim)
    try:
        for call in (lim.hit_rpm("k", 5), lim.peek_rpm("k", 5), lim.acquire_slot("k", 5)):
            with pytest.raises(StoreUnavailable) as info:
                await call
            assert info.value.code == "raven_unavailable"  # a 503 for the caller, never an upstream's 502
            assert "127.0.0.1" not in str(info.value) and "6379" not in str(info.value)
            assert "hunter2" not in str(info.value) and "hunter2" not in str(info.value.__cause__)
    finally:
        await lim.close()


async def test_release_when_redis_goes_away_does_not_raise(redis_env: RedisEnv) -> None:
    lim = redis_env.make(lease_ttl=0.5)
    lease = await lim.acquire_slot("k", 1)
    assert lease is not None
    client = lim._redis()

    async def broken(*args: Any, **options: Any) -> Any:
        raise redis.ConnectionError("gone")

    client.zrem = broken  # type: ignore[method-assign]
    await lease.release()  # logged; the lease expires within the TTL instead
    assert isinstance(lease, RedisLease) and lease.released


def test_invalid_url_is_rejected_without_echoing_it() -> None:
    for url in ("http://u:hunter2@host/0", "redis://u:hunter2@host:notaport/0"):
        with pytest.raises(ValueError) as info:
            RedisLimiter(url)
        assert "hunter2" not in str(info.value)
    with pytest.raises(ValueError):
        RedisLimiter(REDIS_URL, lease_ttl=1.0, renew_every=1.0)


async def test_close_stops_renewals_and_frees_held_slots(redis_env: RedisEnv) -> None:
    a = redis_env.make(lease_ttl=5.0)
    b = redis_env.make(lease_ttl=5.0)
    lease = await a.acquire_slot("k", 1)
    assert isinstance(lease, RedisLease)
    task = lease.renew_task
    assert task is not None and not task.done()
    await a.close()
    assert task.done()
    assert await b.acquire_slot("k", 1) is not None  # freed now, not after the 5 s TTL
    await lease.release()  # after close: a no-op
