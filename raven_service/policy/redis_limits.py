"""Scale-out limits on a shared Redis: per-key RPM windows and concurrency leases.

Every process and instance that points at the same Redis (and prefix) shares the limits; each
check is one atomic Lua script (one round trip, EVALSHA once loaded) that reads the time from
the Redis server (`TIME`), so the instances' clocks never matter.

RPM -- a fixed 60 s window per key that starts at the key's first request, exactly like
`policy.ratelimit.InProcessLimiter`: up to RPM requests are admitted, even in one burst, then
requests are rejected (and not counted) until the window ends. A fixed window was chosen over a
sliding log or GCRA because it is what the in-process limiter does (so both report the same
x-ratelimit-* numbers), its state is O(1) per key (a start time and a count, where a sliding log
keeps one entry per request) and unlike GCRA it admits the whole quota in one burst as the spec
requires. Key `{prefix}rpm:{key_id}`: a hash {s: window start (server µs), n: count}, expiring
when its window ends.

Concurrency -- leases. Key `{prefix}conc:{key_id}`: a sorted set of lease ids scored by their
expiry (server ms). Taking a slot drops expired leases and adds one if fewer than `limit` remain;
the lease then renews itself every `renew_every` seconds from a background task and `release()`
removes it. A crashed instance stops renewing, so its slots come back within `lease_ttl`. The set
itself expires with its longest lease, so idle keys do not linger.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import weakref
from typing import Any, Final

import redis.asyncio as aioredis
from redis.asyncio.connection import parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from raven_service.core.errors import StoreUnavailable
from raven_service.core.ports import Lease
from raven_service.policy.ratelimit import WINDOW, RateInfo, TokenInfo

log = logging.getLogger("raven.limits")

__all__ = ["RedisLease", "RedisLimiter"]


# `%.0f` keeps integers exact where Lua's tostring (%.14g) would round microsecond timestamps.
_HIT_RPM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local rpm = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local state = redis.call('HMGET', KEYS[1], 's', 'n')
local start, count = tonumber(state[1]), tonumber(state[2])
if start == nil or count == nil or now - start >= window or start > now then
  start = now
  count = 0
end
local reset = start + window - now
if count >= rpm then
  return {0, count, reset}
end
count = count + 1
redis.call('HSET', KEYS[1], 's', string.format('%.0f', start), 'n', count)
redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000))
return {1, count, reset}
"""

_PEEK_RPM = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[1])
local state = redis.call('HMGET', KEYS[1], 's', 'n')
local start, count = tonumber(state[1]), tonumber(state[2])
if start == nil or count == nil or now - start >= window or start > now then
  return {0, window}
end
return {count, start + window - now}
"""

# TPM: the same fixed window as RPM, counting tokens. Reserves ARGV[3] tokens iff they fit under
# ARGV[1]; returns {allowed, used, reset µs, window start µs (a string: exact)}.
_HIT_TOKENS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tpm, window, tokens = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local state = redis.call('HMGET', KEYS[1], 's', 'n')
local start, used = tonumber(state[1]), tonumber(state[2])
if start == nil or used == nil or now - start >= window or start > now then
  start = now
  used = 0
end
local reset = start + window - now
if used + tokens > tpm then
  return {0, used, reset, string.format('%.0f', start)}
end
used = used + tokens
redis.call('HSET', KEYS[1], 's', string.format('%.0f', start), 'n', used)
redis.call('PEXPIRE', KEYS[1], math.ceil(reset / 1000))
return {1, used, reset, string.format('%.0f', start)}
"""

# Corrects a reservation by ARGV[2] tokens iff the window that took it (start ARGV[1]) still runs.
_SETTLE_TOKENS = """
local state = redis.call('HMGET', KEYS[1], 's', 'n')
if state[1] ~= ARGV[1] or state[2] == false then
  return 0
end
local used = math.max(0, tonumber(state[2]) + tonumber(ARGV[2]))
redis.call('HSET', KEYS[1], 'n', used)
return 1
"""

# Takes a slot for lease ARGV[3], or renews it. A lease that is still in the set (even one that
# expired but was not swept yet, so it still counts) is always renewed; a new or lost one is added
# only if fewer than ARGV[1] unexpired leases remain. Returns 1 when the lease is held, else 0.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local key, limit, ttl, id = KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3]
local held = redis.call('ZSCORE', KEYS[1], id)
redis.call('ZREMRANGEBYSCORE', key, '-inf', '(' .. string.format('%.0f', now))
if not held and redis.call('ZCARD', key) >= limit then
  return 0
end
redis.call('ZADD', key, string.format('%.0f', now + ttl), id)
local top = redis.call('ZRANGE', key, -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', key, string.format('%.0f', tonumber(top[2]) + 1))
return 1
"""


class _NoLease:
    """The lease of an unlimited key: nothing to hold, nothing to release."""

    __slots__ = ()

    async def release(self) -> None:
        return None


_NO_LEASE: Final = _NoLease()


class RedisLease:
    """One held concurrency slot. Renews itself in the background until `release()`.

    `release()` is idempotent and never raises: if Redis cannot be reached the lease simply
    expires within the TTL (callers release in `finally`-like paths where an error would only
    hide more important work, e.g. settling credits).
    """

    __slots__ = ("__weakref__", "_limiter", "_released", "_renewing", "_task", "key", "lease_id", "limit")

    def __init__(self, limiter: RedisLimiter, key: str, lease_id: str, limit: int) -> None:
        self._limiter = limiter
        self.key = key
        self.lease_id = lease_id
        self.limit = limit
        self._released = False
        self._renewing = False  # a renewal is on the wire: release() waits for it, then removes
        self._task: asyncio.Task[None] | None = None

    @property
    def released(self) -> bool:
        return self._released

    @property
    def renew_task(self) -> asyncio.Task[None] | None:
        """The background renewal (for diagnostics; cancelling it simulates a crashed holder)."""
        return self._task

    async def _stop_renewing(self) -> None:
        task, self._task = self._task, None
        if task is None or task.done():
            return
        if self._renewing:
            # Let the renewal in flight finish so that it cannot land after our ZREM; the loop
            # then sees `_released` and stops. Bounded by the client's socket timeout. (wait()
            # neither raises the task's outcome nor cancels it if we are cancelled ourselves.)
            await asyncio.wait({task})
        if not task.done():
            task.cancel()
            await asyncio.wait({task})

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        await self._stop_renewing()
        await self._limiter._remove(self.key, self.lease_id)


class RedisLimiter:
    """`core.ports.Limiter` on a shared Redis (see the module docstring for the design).

    `url`: redis://, rediss:// or unix:// (query options such as socket_timeout override the
    defaults here). `lease_ttl`: seconds a lease outlives its last renewal. `prefix`: namespace of
    every key. `renew_every`: seconds between renewals (default lease_ttl / 3). `window`: the RPM
    window in seconds (60 in production; shorter in tests). `socket_timeout`: seconds before a
    Redis call (or connect) fails with `StoreUnavailable`.
    """

    def __init__(
        self,
        url: str,
        *,
        lease_ttl: float = 30.0,
        prefix: str = "raven:",
        renew_every: float | None = None,
        window: float = WINDOW,
        socket_timeout: float = 2.0,
    ) -> None:
        try:
            parse_url(url)
        except ValueError:
            # parse_url errors can quote parts of the URL; never echo it (it may hold a password).
            raise ValueError("invalid Redis URL (expected redis://, rediss:// or unix://...)") from None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("invalid Redis URL (expected redis://, rediss:// or unix://...)")
        if lease_ttl <= 0:
            raise ValueError("lease_ttl must be positive")
        every = lease_ttl / 3 if renew_every is None else renew_every
        if not 0 < every < lease_ttl:
            raise ValueError("renew_every must be positive and shorter than lease_ttl")
        if window <= 0:
            raise ValueError("window must be positive")
        self._url = url
        self._prefix = prefix
        self._lease_ttl = lease_ttl
        self._ttl_ms = max(1, math.ceil(lease_ttl * 1000))
        self._renew_every = every
        self._window = window
        self._window_us = max(1, round(window * 1_000_000))
        self._socket_timeout = socket_timeout
        self._client: aioredis.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}
        self._leases: weakref.WeakSet[RedisLease] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:  # never shows the URL (it may carry a password)
        return f"RedisLimiter(prefix={self._prefix!r}, lease_ttl={self._lease_ttl}, window={self._window})"

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def lease_ttl(self) -> float:
        return self._lease_ttl

    @property
    def renew_every(self) -> float:
        return self._renew_every

    # ------------------------------------------------------------------------ connection
    def _redis(self) -> aioredis.Redis:
        """The client (one connection pool), created on first use inside the running loop."""
        if self._client is None:
            # A blocking pool: under a burst, callers wait (up to the socket timeout) for one of a
            # bounded set of connections instead of failing with MaxConnectionsError.
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url,
                max_connections=64,
                timeout=self._socket_timeout,
                socket_timeout=self._socket_timeout,
                socket_connect_timeout=self._socket_timeout,
                # One quick retry covers a pooled connection the server dropped; more would only
                # delay the 503 when Redis is really gone.
                retry=Retry(ExponentialBackoff(cap=0.05, base=0.01), 1),
            )
            client = aioredis.Redis(connection_pool=pool)
            self._scripts = {
                "hit": client.register_script(_HIT_RPM),
                "peek": client.register_script(_PEEK_RPM),
                "acquire": client.register_script(_ACQUIRE),
                "hit_tokens": client.register_script(_HIT_TOKENS),
                "settle_tokens": client.register_script(_SETTLE_TOKENS),
            }
            self._client = client
        return self._client

    async def _run(self, name: str, key: str, *args: int | float | str) -> Any:
        """Runs a script (EVALSHA; loaded once) and maps Redis failures to `StoreUnavailable`."""
        self._redis()
        try:
            return await self._scripts[name](keys=[key], args=list(args))
        except (RedisError, OSError) as exc:
            # Redis error messages name host:port at most, never the password.
            log.warning("rate limiter: redis %s failed: %s", name, type(exc).__name__)
            raise StoreUnavailable() from exc

    def _rpm_key(self, key_id: str) -> str:
        return f"{self._prefix}rpm:{key_id}"

    def _slot_key(self, key_id: str) -> str:
        return f"{self._prefix}conc:{key_id}"

    def _tpm_key(self, key_id: str) -> str:
        return f"{self._prefix}tpm:{key_id}"

    # ------------------------------------------------------------------------ TPM
    async def hit_tokens(self, key_id: str, tpm: int, tokens: int) -> TokenInfo:
        """Reserves `tokens` in the key's window shared by all instances iff they fit under `tpm`."""
        if tpm <= 0:
            return TokenInfo(True, 0, 0, self._window)
        allowed, used, reset_us, start = await self._run("hit_tokens", self._tpm_key(key_id), tpm,
                                                         self._window_us, max(0, tokens))
        reset = self._reset_seconds(reset_us)
        window = float(int(start))
        if not allowed:
            return TokenInfo(False, tpm, max(0, tpm - int(used)), reset, window)
        return TokenInfo(True, tpm, max(0, tpm - int(used)), reset, window, max(0, tokens))

    async def settle_tokens(self, key_id: str, window: float, delta: int) -> None:
        if delta:
            await self._run("settle_tokens", self._tpm_key(key_id), f"{window:.0f}", delta)

    async def peek_tokens(self, key_id: str, tpm: int) -> TokenInfo:
        if tpm <= 0:
            return TokenInfo(True, 0, 0, self._window)
        count, reset_us = await self._run("peek", self._tpm_key(key_id), self._window_us)
        return TokenInfo(True, tpm, max(0, tpm - int(count)), self._reset_seconds(reset_us))

    # ------------------------------------------------------------------------ RPM
    async def hit_rpm(self, key_id: str, rpm: int) -> RateInfo:
        """Counts one request in the key's window if it fits; rejected requests are not counted."""
        if rpm <= 0:  # unlimited: no Redis round trip
            return RateInfo(True, 0, 0, self._window)
        allowed, count, reset_us = await self._run("hit", self._rpm_key(key_id), rpm, self._window_us)
        reset = self._reset_seconds(reset_us)
        if not allowed:
            return RateInfo(False, rpm, 0, reset)
        return RateInfo(True, rpm, max(0, rpm - int(count)), reset)

    async def peek_rpm(self, key_id: str, rpm: int) -> RateInfo:
        """The key's window as the x-ratelimit-* headers report it, without counting a request."""
        if rpm <= 0:
            return RateInfo(True, 0, 0, self._window)
        count, reset_us = await self._run("peek", self._rpm_key(key_id), self._window_us)
        return RateInfo(True, rpm, max(0, rpm - int(count)), self._reset_seconds(reset_us))

    def _reset_seconds(self, reset_us: int) -> float:
        return min(self._window, max(0.0, int(reset_us) / 1_000_000))

    # ------------------------------------------------------------------------ concurrency
    async def acquire_slot(self, key_id: str, limit: int) -> Lease | None:
        """Takes one of `limit` slots shared by all instances, or returns None if all are taken.

        If the caller is cancelled while the script is in flight, a slot may be taken with no
        lease object to renew it; it expires within `lease_ttl`.
        """
        if limit <= 0:  # unlimited: no Redis round trip, nothing to release
            return _NO_LEASE
        key = self._slot_key(key_id)
        lease_id = secrets.token_urlsafe(12)
        if not await self._run("acquire", key, limit, self._ttl_ms, lease_id):
            return None
        lease = RedisLease(self, key, lease_id, limit)
        task = asyncio.get_running_loop().create_task(
            self._renew_loop(weakref.ref(lease), key, lease_id, limit), name=f"raven-lease-renew:{key_id}"
        )
        lease._task = task
        self._leases.add(lease)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return lease

    async def _renew_loop(self, ref: weakref.ref[RedisLease], key: str, lease_id: str, limit: int) -> None:
        """Renews one lease every `renew_every` s while it is held.

        Holds the lease only weakly: a lease dropped without release() stops renewing and expires
        within the TTL instead of holding its slot forever. A lease that was lost (e.g. Redis was
        unreachable for longer than the TTL and the slot went to another request) is re-taken as
        soon as a slot is free again, so the in-flight request counts again.
        """
        lost = False
        while True:
            await asyncio.sleep(self._renew_every)
            lease = ref()
            if lease is None or lease._released:
                return
            lease._renewing = True
            try:
                held = await self._run("acquire", key, limit, self._ttl_ms, lease_id)
            except StoreUnavailable:
                held = None  # logged by _run; try again at the next tick
            finally:
                lease._renewing = False
            released = lease._released
            del lease  # never hold the lease across a sleep
            if released:
                return
            if held == 0 and not lost:
                log.warning("rate limiter: a concurrency lease expired and its slot was taken")
            if held is not None:
                lost = held == 0

    async def _remove(self, key: str, lease_id: str) -> None:
        """Removes a lease (one ZREM). Failures are logged, not raised: the lease expires anyway."""
        if self._client is None:
            return
        try:
            await self._client.zrem(key, lease_id)
        except (RedisError, OSError) as exc:
            log.warning("rate limiter: releasing a lease failed (%s); it expires within the TTL", type(exc).__name__)

    # ------------------------------------------------------------------------ lifecycle
    async def close(self) -> None:
        """Stops every renewal, removes the leases still held (best effort) and closes the pool."""
        held = [lease for lease in list(self._leases) if not lease._released]
        for lease in held:
            lease._released = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._leases = weakref.WeakSet()
        client, self._client = self._client, None
        self._scripts = {}
        if client is None:
            return
        if held:
            try:
                async with asyncio.timeout(self._socket_timeout):
                    pipe = client.pipeline(transaction=False)
                    for lease in held:
                        pipe.zrem(lease.key, lease.lease_id)
                    await pipe.execute()
            except (RedisError, OSError, TimeoutError) as exc:
                log.warning("rate limiter: releasing leases at close failed (%s)", type(exc).__name__)
        with contextlib.suppress(RedisError, OSError):
            await client.aclose(close_connection_pool=True)
