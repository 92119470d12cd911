"""Credit slices: per-instance budget leases that keep credit-limited keys fast (SPEC §7, §9).

A credit-limited request must not start before its worst-case cost is held, and the total held
must never exceed the key's balance, whatever the number of instances. Holding per request costs
a store write on the hot path. Instead, like a quota server, an instance leases a *slice* of the
key's balance from the store (one ordinary credit hold, owned and renewed by this instance,
`factor` times the request's worst case) and carves each request's worst case out of it in
memory. The store's invariant is untouched: a slice is a hold, so used + reserved <= credits holds
across instances exactly as before; an instance can only spend what its slices hold.

Settlement stays per request and exact: the request's Settlement names the slice with
``partial=True``, and the store moves the request's real cost from the slice (reserved) to used,
in the usage record's transaction, idempotently by record id (see `_settle` in both backends).
When a slice is released (idle, drained, shutdown) the store drops what is left of it; a
settlement that arrives after that charges its cost to used only, which is exactly what the
release left out. A killed instance's slices expire like any hold and are swept.

When a slice cannot be leased (the balance or budget window has less room than a slice), the
caller falls back to an exact per-request hold, so the last credits of a key are spent exactly.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from raven_service.core.ports import CreditStore
from raven_service.core.types import CreditHold

log = logging.getLogger("raven.slices")

SliceKey = tuple[str, float | None]  # (key id, budget window start or None)


@dataclass(slots=True)
class Slice:
    hold: CreditHold
    spent: Decimal = Decimal(0)  # real costs of the requests it served that have ended
    inflight: Decimal = Decimal(0)  # worst cases of the requests it serves now
    users: int = 0
    last_used: float = 0.0
    closed: bool = False
    watched: bool = False  # an idle check is scheduled

    @property
    def free(self) -> Decimal:
        return self.hold.amount - self.spent - self.inflight


@dataclass(frozen=True, slots=True)
class Piece:
    """One request's share of a slice: its worst case, carved out in memory."""

    slice: Slice
    amount: Decimal

    @property
    def hold_id(self) -> str:
        return self.slice.hold.id


@dataclass
class SliceBank:
    credits: CreditStore
    owner: str
    ttl: float = 30.0
    #: A slice holds this many worst cases of the request that leased it (at first: see `max_factor`).
    factor: int = 32
    #: Each slice a key uses up makes its next one twice as big, up to this many worst cases.
    max_factor: int = 512
    #: A slice nobody used for this long goes back to the store.
    idle_seconds: float = 2.0
    #: When a request leaves its slice with less than this share free, the key's next slice is
    #: leased in the background, so a busy key's requests do not wait for a lease (a store
    #: transaction) each time a slice runs out. 0: lease only when no slice has room.
    prefetch_below: float = 0.5
    clock: Callable[[], float] = time.monotonic
    wall: Callable[[], float] = time.time
    _slices: dict[SliceKey, list[Slice]] = field(default_factory=dict)
    _locks: dict[SliceKey, asyncio.Lock] = field(default_factory=dict)
    _growth: dict[SliceKey, int] = field(default_factory=dict)  # the factor of the key's next lease
    _background: set[asyncio.Task[object]] = field(default_factory=set)
    _prefetching: set[SliceKey] = field(default_factory=set)
    #: Resolved when the key's lease under way lands (or fails): what requests without room wait on.
    _landing: dict[SliceKey, asyncio.Future[None]] = field(default_factory=dict)
    #: Slices whose return failed (store outage): retried by every tick, so none stays held.
    _unreturned: set[str] = field(default_factory=set)

    @property
    def enabled(self) -> bool:
        return self.factor > 1

    async def take(self, key_id: str, worst: Decimal, window: float | None) -> Piece | None:
        """A piece of `worst` from a live slice of this key (and budget window), leasing a new slice
        when none has room. None when the store has no room for a slice: hold exactly instead."""
        key = (key_id, window)
        piece = self._carve(key, worst)
        if piece is not None:
            self._maybe_prefetch(key, worst, piece.slice)
            return piece
        while (landing := self._landing.get(key)) is not None:
            # A lease is under way: wait for it together with every other request that found no
            # room, then carve. (Queued on the lock instead, they would resume one per loop
            # iteration: at c=64 that convoy put 0.5 s on the last one.)
            await asyncio.shield(landing)
            piece = self._carve(key, worst)
            if piece is not None:
                return piece
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:  # one lease per key at a time: a burst does not lease a slice per request
            piece = self._carve(key, worst)
            if piece is not None:
                return piece
            if await self._lease_next(key, worst) is None:
                return None
            return self._carve(key, worst)

    async def _lease_next(self, key: SliceKey, worst: Decimal) -> Slice | None:
        """Leases the key's next slice (holding the key's lock). Slow start: a key that used up its
        last slice gets one twice as big (up to `max_factor` worst cases), so a busy key leases
        rarely; a refused big lease retries at the base size; None if that is refused too."""
        grown = min(self._growth.get(key, self.factor), self.max_factor)
        landing = self._landing[key] = asyncio.get_running_loop().create_future()
        try:
            for factor in dict.fromkeys((grown, self.factor)):
                hold = await self._lease(key, worst * factor, key[1])
                if hold is not None:
                    self._growth[key] = factor * 2
                    s = Slice(hold=hold, last_used=self.clock())
                    self._slices.setdefault(key, []).append(s)
                    return s
            self._growth.pop(key, None)
            return None
        finally:
            del self._landing[key]
            landing.set_result(None)

    def __post_init__(self) -> None:
        self._low_share = Decimal(self.prefetch_below)  # once, not per request

    def _low(self, s: Slice) -> bool:
        return s.closed or s.free < s.hold.amount * self._low_share

    def _maybe_prefetch(self, key: SliceKey, worst: Decimal, s: Slice) -> None:
        """`s` just lent a piece: if it runs low and no other slice of the key has room, lease the
        next one in the background (at most one such lease per key at a time)."""
        if self.prefetch_below <= 0 or not self._low(s) or key in self._prefetching:
            return
        if not all(self._low(o) for o in self._slices.get(key, ())):
            return
        lock = self._locks.get(key)
        if lock is not None and lock.locked():
            return  # a lease is under way already
        self._prefetching.add(key)
        self._spawn(self._prefetch(key, worst))

    async def _prefetch(self, key: SliceKey, worst: Decimal) -> None:
        try:
            async with self._locks.setdefault(key, asyncio.Lock()):
                if all(self._low(o) for o in self._slices.get(key, ())):
                    s = await self._lease_next(key, worst)
                    if s is not None:
                        self._watch(s)  # returned at idle time even if no request ever uses it
        except Exception as exc:  # the store is unreachable: requests lease (or hold) themselves
            log.warning("leasing the next credit slice failed (%s)", type(exc).__name__)
        finally:
            self._prefetching.discard(key)

    async def _lease(self, key: SliceKey, amount: Decimal, window: float | None) -> CreditHold | None:
        hold = CreditHold(id="slice_" + os.urandom(16).hex(), key_id=key[0], amount=amount, owner=self.owner,
                          expires_at=self.wall() + self.ttl, budget_window=window)
        task = asyncio.ensure_future(self.credits.reserve_hold(hold))
        try:
            ok = await asyncio.shield(task)
        except asyncio.CancelledError:
            # The lease may still land: keep the slice if it does (it is renewed and returned
            # like any other), so nothing leaks.
            task.add_done_callback(lambda t: self._adopt(key, hold, t))
            raise
        return hold if ok else None

    def _adopt(self, key: SliceKey, hold: CreditHold, task: asyncio.Future[bool]) -> None:
        if not task.cancelled() and task.exception() is None and task.result():
            self._slices.setdefault(key, []).append(Slice(hold=hold, last_used=self.clock()))

    def _carve(self, key: SliceKey, worst: Decimal) -> Piece | None:
        for s in self._slices.get(key, ()):
            if not s.closed and s.free >= worst:
                s.inflight += worst
                s.users += 1
                s.last_used = self.clock()
                return Piece(slice=s, amount=worst)
        return None

    def give_back(self, piece: Piece, cost: Decimal) -> None:
        """The request ended having cost `cost` (its settlement is on its way to the store).
        Synchronous: runs inside the admission scope's exit, even when cancelled."""
        s = piece.slice
        s.inflight -= piece.amount
        s.users -= 1
        s.spent += cost
        s.last_used = self.clock()
        if s.users == 0:
            if s.closed or s.free * self.factor < s.hold.amount:
                # Drained and (nearly) used up: return the rest now rather than at idle time.
                self._spawn(self._release(s))
            else:
                self._watch(s)

    def _watch(self, s: Slice, delay: float | None = None) -> None:
        """Returns `s` once nobody used it for `idle_seconds` (so a key's reserved amount falls back
        to zero shortly after its traffic stops, not only at the next keeper tick). One timer per
        slice at a time, not one per request."""
        if s.watched:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        s.watched = True
        loop.call_later(self.idle_seconds if delay is None else delay, self._idle_check, s)

    def _idle_check(self, s: Slice) -> None:
        s.watched = False
        if s.closed or s.users:
            return  # in use again: the give_back that empties it watches it anew
        idle_for = self.clock() - s.last_used
        if idle_for >= self.idle_seconds * 0.999:
            self._spawn(self._release(s))
        else:
            self._watch(s, self.idle_seconds - idle_for)

    async def tick(self) -> int:
        """Returns slices nobody used for `idle_seconds`; returns how many went back."""
        now = self.clock()
        idle = [s for slices in self._slices.values() for s in slices
                if s.users == 0 and not s.closed and now - s.last_used >= self.idle_seconds]
        for s in idle:
            await self._release(s)
        for hold_id in list(self._unreturned):
            await self._return(hold_id)
        return len(idle)

    async def release_all(self) -> None:
        """Returns every slice (drain / shutdown); slices still in use go back when their last
        request ends."""
        if self._background:  # a lease under way (prefetch) lands first, then goes back too
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for slices in list(self._slices.values()):
            for s in list(slices):
                if s.users == 0:
                    await self._release(s)
                else:
                    s.closed = True
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        for hold_id in list(self._unreturned):
            await self._return(hold_id)

    async def _release(self, s: Slice) -> None:
        key = (s.hold.key_id, s.hold.budget_window)
        if s not in self._slices.get(key, ()):
            return
        s.closed = True
        self._slices[key].remove(s)
        if s.users == 0 and s.free * self.factor >= s.hold.amount:
            self._growth.pop(key, None)  # returned with room left (idle): the key slowed down
        if not self._slices[key]:  # no state kept for keys (and past budget windows) gone quiet
            del self._slices[key]
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]
        await self._return(s.hold.id)

    async def _return(self, hold_id: str) -> None:
        try:
            await self.credits.release_hold(hold_id)
        except Exception as exc:  # the store is unreachable: the next tick tries again
            log.warning("returning a credit slice failed (%s); retrying", type(exc).__name__)
            self._unreturned.add(hold_id)
        else:
            self._unreturned.discard(hold_id)

    def _spawn(self, coro) -> None:
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)
