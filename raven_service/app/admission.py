"""Admission shared by every generation: RPM, concurrency slot, credit reservation, and the
release/settle that always follows (whatever the outcome, even on cancellation)."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from raven_service.core.errors import InsufficientCredits, RateLimited, RavenError
from raven_service.core.ports import Lease, Limiter, RpmDecision, Store
from raven_service.core.types import Principal

log = logging.getLogger("raven.admission")


@dataclass(slots=True)
class Ticket:
    """An admitted request: what must be released and settled when it ends."""

    principal: Principal
    rate: RpmDecision
    slot: Lease | None
    reserved: Decimal
    started: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    closed: bool = False


class Admitter:
    def __init__(self, store: Store, limiter: Limiter) -> None:
        self._store = store
        self._limiter = limiter
        self._background: set[asyncio.Task[None]] = set()

    async def peek(self, principal: Principal) -> RpmDecision:
        return await self._limiter.peek_rpm(principal.key_id, principal.rpm)

    async def attach_rate(self, exc: RavenError, principal: Principal) -> None:
        """Adds the caller's rate state to an error; never replaces the error (a limiter outage
        leaves the headers out rather than turning a 400 into a 502)."""
        if exc.rate is None:
            try:
                exc.rate = await self.peek(principal)
            except RavenError:
                exc.rate = None

    async def admit(self, principal: Principal, worst_case_cost: Decimal) -> Ticket:
        rate = await self._limiter.hit_rpm(principal.key_id, principal.rpm)
        if not rate.allowed:
            exc = RateLimited(
                f"Rate limit reached: {principal.rpm} requests per minute. Retry after "
                f"{rate.reset_after:.0f}s.",
                retry_after=max(rate.reset_after, 1.0),
            )
            exc.rate = rate
            raise exc
        slot = await self._limiter.acquire_slot(principal.key_id, principal.concurrency)
        if slot is None:
            exc = RateLimited(
                f"Concurrency limit reached: {principal.concurrency} requests in flight.",
                retry_after=1.0,
                code="concurrency_limit_exceeded",
            )
            exc.rate = rate
            raise exc
        reserved = Decimal(0)
        if principal.has_credit_limit and worst_case_cost > 0:
            try:
                ok = await self._store.reserve_credits(principal.key_id, worst_case_cost)
            except BaseException:
                await slot.release()
                raise
            if not ok:
                await slot.release()
                exc2 = InsufficientCredits(
                    "Insufficient credits: this request could cost up to "
                    f"{worst_case_cost.normalize():f} credits and the key has less left."
                )
                exc2.rate = rate
                raise exc2
            reserved = worst_case_cost
        return Ticket(principal=principal, rate=rate, slot=slot, reserved=reserved)

    def finish(self, ticket: Ticket, actual_cost: Decimal) -> None:
        """Releases the slot and settles credits, in a task of its own so that it completes even
        when the request's task is being cancelled."""
        if ticket.closed:
            return
        ticket.closed = True
        task = asyncio.get_running_loop().create_task(self._finish(ticket, actual_cost))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _finish(self, ticket: Ticket, actual_cost: Decimal) -> None:
        try:
            if ticket.slot is not None:
                await ticket.slot.release()
            if ticket.principal.has_credit_limit and (ticket.reserved or actual_cost):
                await self._store.settle_credits(ticket.principal.key_id, ticket.reserved, actual_cost)
        except Exception:
            log.exception("settling a request failed")

    async def drain(self) -> None:
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
