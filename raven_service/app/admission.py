"""Admission as one scope: the key's scope and model allow-list, RPM, TPM, a concurrency slot and a
credit hold (which also reserves in the key's budget window) on the way in; on the way out,
whatever happened (success, error, a bug, cancellation at any await point), exactly one settlement
(usage record + hold, charged to credits and budget window), the token count corrected to the real
one, and the slot back.

Every entry point (chat unary and stream, images, video submit; REST reaches them through the
same gRPC servicers) runs its request inside `Admitter.admitted(...)`, so no code path can skip
settlement: the use case only *describes* the outcome (`ticket.record`), the scope settles it.

Cancellation inside admission itself is handled too: a hold whose reservation completes after the
caller was cancelled is released at once, and every hold expires by itself if its owner dies
(holds are renewed by their instance while it lives; `HoldKeeper` renews and sweeps).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast

from raven_service.accounting.ledger import Ledger
from raven_service.app.slices import Piece, SliceBank
from raven_service.core.errors import BudgetExhausted, InsufficientCredits, RateLimited, RavenError
from raven_service.core.ports import CreditStore, Lease, Limiter, LocalLease, LocalSlots, RpmDecision, TokenDecision
from raven_service.core.types import CreditHold, Principal, Settlement, UsageRecord
from raven_service.policy.governance import budget_window, check_inference, check_model

log = logging.getLogger("raven.admission")


@dataclass(frozen=True, slots=True)
class Rate:
    """What the x-ratelimit-* headers report: the RPM decision (its members, so a Rate is an
    RpmDecision) and, for a key with a TPM limit, the token window."""

    rpm: RpmDecision
    tokens: TokenDecision | None = None

    @property
    def allowed(self) -> bool:
        return self.rpm.allowed

    @property
    def limit(self) -> int:
        return self.rpm.limit

    @property
    def remaining(self) -> int:
        return self.rpm.remaining

    @property
    def reset_after(self) -> float:
        return self.rpm.reset_after


#: Called after a request of a key with an alert webhook was submitted for settlement.
AlertHook = Callable[[Principal], None]


@dataclass(slots=True)
class Ticket:
    """An admitted request: what must be released and settled when it ends."""

    id: str  # the usage record's id
    principal: Principal
    rate: RpmDecision
    slot: Lease | None
    hold: CreditHold | None
    tokens: TokenDecision | None = None
    budget_window: float | None = None
    #: Set when the hold is this request's piece of a credit slice (app/slices.py), not its own row.
    piece: Piece | None = None
    started: float = field(default_factory=time.monotonic)
    created: float = field(default_factory=time.time)
    #: The outcome, set by the use case once it knows it; None at exit = the scope builds one.
    record: UsageRecord | None = None
    #: Set when something durable took over the settlement (a created video task settles itself).
    handed_over: bool = False
    closed: bool = False

    @property
    def reserved(self) -> Decimal:
        return self.hold.amount if self.hold is not None else Decimal(0)


#: Builds the usage record of a request whose use case never reported one (cancelled before its
#: first event, a bug): (ticket, status, error) -> record.
Fallback = Callable[[Ticket, str, str], UsageRecord]


class Admitter:
    def __init__(self, credits: CreditStore, limiter: Limiter, ledger: Ledger, *, instance_id: str = "",
                 hold_ttl: float = 30.0, on_overspend: Callable[[Decimal], None] | None = None,
                 wall: Callable[[], float] = time.time, on_alerting: AlertHook | None = None,
                 slice_factor: int = 0, slice_idle_seconds: float = 2.0) -> None:
        self._credits = credits
        self._wall = wall  # budget windows are calendar (wall-clock) windows
        self.on_alerting = on_alerting
        self._limiter = limiter
        # In-process slots are taken and given back synchronously: no task per request for either.
        self._slots_now = limiter.acquire_slot_now if isinstance(limiter, LocalSlots) else None
        self._ledger = ledger
        self.instance_id = instance_id or "i-" + os.urandom(6).hex()
        self._hold_ttl = hold_ttl
        #: Credit slices (off when slice_factor <= 1): most credit-limited requests hold in memory.
        self.slices = SliceBank(credits, self.instance_id, ttl=hold_ttl, factor=slice_factor,
                                idle_seconds=slice_idle_seconds, wall=wall)
        self._on_overspend = on_overspend
        self._background: set[asyncio.Task[object]] = set()
        #: Requests admitted / settled by this instance (equal whenever nothing is in flight).
        self.admitted_count = 0
        self.settled_count = 0

    async def peek(self, principal: Principal) -> RpmDecision:
        rpm = await self._limiter.peek_rpm(principal.key_id, principal.rpm)
        if principal.tpm <= 0:
            return rpm
        return Rate(rpm, await self._limiter.peek_tokens(principal.key_id, principal.tpm))

    async def attach_rate(self, exc: RavenError, principal: Principal) -> None:
        """Adds the caller's rate state to an error; never replaces the error (a limiter outage
        leaves the headers out rather than turning a 400 into a 502)."""
        if exc.rate is None:
            try:
                exc.rate = await self.peek(principal)
            except RavenError:
                exc.rate = None

    @contextlib.asynccontextmanager
    async def admitted(self, principal: Principal, worst_case_cost: Decimal, *, record_id: str,
                       fallback: Fallback, models: Sequence[str], tokens: int = 0,
                       hold_seconds: float | None = None) -> AsyncIterator[Ticket]:
        """Admits (raising PermissionDenied / RateLimited / InsufficientCredits / BudgetExhausted /
        StoreUnavailable, nothing held) and yields the ticket; settles it exactly once on the way out.

        `models`: every model slug the request may use (each must pass the key's allow-list);
        `tokens`: the prompt estimate reserved against the key's TPM (settled to the real count).
        `hold_seconds` gives the hold a fixed lifetime instead of one renewed by this instance
        (for work that outlives the request, such as a queued video task)."""
        try:
            check_inference(principal)
            for slug in models:
                check_model(principal, slug)
        except RavenError as exc:
            await self.attach_rate(exc, principal)
            raise
        ticket = await self._admit(principal, worst_case_cost, record_id, hold_seconds, tokens)
        status, error = "completed", ""
        try:
            yield ticket
        except (asyncio.CancelledError, GeneratorExit):
            status = "cancelled"
            raise
        except RavenError as exc:
            status, error = "failed", exc.message
            raise
        except BaseException as exc:
            status, error = "failed", f"internal error ({type(exc).__name__})"
            log.exception("request %s failed inside Raven", record_id)
            raise
        finally:
            self._close(ticket, status, error, fallback)

    # --------------------------------------------------------------------------------- inside
    async def _admit(self, principal: Principal, worst: Decimal, record_id: str,
                     hold_seconds: float | None, tokens: int) -> Ticket:
        rpm = await self._limiter.hit_rpm(principal.key_id, principal.rpm)
        rate: RpmDecision = rpm
        if principal.tpm > 0:
            rate = Rate(rpm, await self._limiter.peek_tokens(principal.key_id, principal.tpm))
        if not rpm.allowed:
            exc = RateLimited(
                f"Rate limit reached: {principal.rpm} requests per minute. Retry after "
                f"{rpm.reset_after:.0f}s.",
                retry_after=max(rpm.reset_after, 1.0),
            )
            exc.rate = rate
            raise exc
        taken: TokenDecision | None = None
        if principal.tpm > 0:
            taken = await self._limiter.hit_tokens(principal.key_id, principal.tpm, tokens)
            rate = Rate(rpm, taken)
            if not taken.allowed:
                why = (f"this request alone needs about {tokens} tokens" if tokens > principal.tpm
                       else f"Retry after {taken.reset_after:.0f}s")
                exc = RateLimited(f"Token rate limit reached: {principal.tpm} tokens per minute; {why}.",
                                  retry_after=max(taken.reset_after, 1.0), code="token_rate_limit_exceeded")
                exc.rate = rate
                raise exc
        try:
            slot = await self._acquire(principal)
        except BaseException:
            self._return_tokens(principal, taken)
            raise
        if slot is None:
            self._return_tokens(principal, taken)
            exc = RateLimited(
                f"Concurrency limit reached: {principal.concurrency} requests in flight.",
                retry_after=1.0,
                code="concurrency_limit_exceeded",
            )
            exc.rate = rate
            raise exc
        hold: CreditHold | None = None
        piece: Piece | None = None
        window: float | None = None
        window_end = 0.0
        try:
            budgeted = principal.budget is not None and bool(principal.budget_period)
            if budgeted:
                window, window_end = budget_window(principal.budget_period, self._wall())
            fixed = hold_seconds is not None
            if (principal.has_credit_limit or budgeted) and worst > 0 and not fixed and self.slices.enabled:
                piece = await self.slices.take(principal.key_id, worst, window)
                if piece is not None:
                    hold = CreditHold(id=piece.hold_id, key_id=principal.key_id, amount=worst,
                                      owner=self.instance_id, budget_window=window)
            if (principal.has_credit_limit or budgeted) and worst > 0 and piece is None:
                hold = CreditHold(
                    id="hold_" + os.urandom(16).hex(), key_id=principal.key_id, amount=worst,
                    owner="" if fixed else self.instance_id,
                    expires_at=time.time() + (hold_seconds if hold_seconds is not None else self._hold_ttl),
                    budget_window=window,
                )
                if not await self._reserve(hold):
                    raise await self._refusal(principal, hold, window_end)
        except BaseException as exc:
            if piece is not None:
                self.slices.give_back(piece, Decimal(0))
            self._release_slot(slot)
            self._return_tokens(principal, taken)
            if isinstance(exc, RavenError) and exc.rate is None:
                exc.rate = rate
            raise
        self.admitted_count += 1
        return Ticket(id=record_id, principal=principal, rate=rate, slot=slot, hold=hold, tokens=taken,
                      budget_window=window, piece=piece)

    async def _refusal(self, principal: Principal, hold: CreditHold, window_end: float) -> RavenError:
        """Why a hold did not fit: the budget window (when that is what is full) or the credits."""
        worst = hold.amount
        if hold.budget_window is not None and principal.budget is not None:
            used, reserved = await self._credits.budget_usage(principal.key_id, hold.budget_window)
            if used + reserved + worst > principal.budget:
                resets_in = max(0.0, window_end - self._wall())
                return BudgetExhausted(
                    f"Budget exhausted: this request could cost up to {worst.normalize():f} credits and the key's "
                    f"{principal.budget_period}ly budget of {principal.budget.normalize():f} has less left; it "
                    f"resets in {resets_in:.0f}s.", resets_in=resets_in)
        return InsufficientCredits(
            "Insufficient credits: this request could cost up to "
            f"{worst.normalize():f} credits and the key has less left."
        )

    def _return_tokens(self, principal: Principal, taken: TokenDecision | None) -> None:
        """Gives back the tokens of a request that was not admitted after all."""
        if taken is not None and taken.reserved:
            self._spawn(self._limiter.settle_tokens(principal.key_id, taken.window, -taken.reserved))

    async def _acquire(self, principal: Principal) -> Lease | None:
        """Takes a slot; a slot granted after the caller was cancelled goes straight back."""
        if self._slots_now is not None:  # no await: nothing can cancel it half-way
            return self._slots_now(principal.key_id, principal.concurrency)
        task = asyncio.ensure_future(self._limiter.acquire_slot(principal.key_id, principal.concurrency))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(self._undo_slot)
            raise

    def _undo_slot(self, task: asyncio.Future[Lease | None]) -> None:
        if not task.cancelled() and task.exception() is None and (lease := task.result()) is not None:
            self._release_slot(lease)

    async def _reserve(self, hold: CreditHold) -> bool:
        """Reserves; a reservation that lands after the caller was cancelled is released."""
        task = asyncio.ensure_future(self._credits.reserve_hold(hold))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            def undo(t: asyncio.Future[bool]) -> None:
                if not t.cancelled() and t.exception() is None and t.result():
                    self._spawn(self._credits.release_hold(hold.id))
            task.add_done_callback(undo)
            raise

    def _close(self, ticket: Ticket, status: str, error: str, fallback: Fallback) -> None:
        """Synchronous, so it completes even inside a task being cancelled."""
        if ticket.closed:
            return
        ticket.closed = True
        self.settled_count += 1
        if ticket.slot is not None:
            self._release_slot(ticket.slot)
            ticket.slot = None
        if ticket.handed_over:
            return
        rec = ticket.record
        if rec is None:
            try:
                rec = fallback(ticket, status, error)
            except Exception:  # the settlement must not depend on the use case's code being right
                log.exception("building the usage record of %s failed", ticket.id)
                rec = UsageRecord(id=ticket.id, key_id=ticket.principal.key_id, model="", status="failed",
                                  error="internal error", created_at=ticket.created)
        if not rec.tags:  # every record carries its key's tags (SPEC §11 metadata), whoever built it
            rec.tags = ticket.principal.metadata
        hold = ticket.hold
        if hold is not None and rec.cost > hold.amount and self._on_overspend is not None:
            self._on_overspend(rec.cost - hold.amount)  # charged in full, never clamped: counted
        self._ledger.submit(Settlement(record=rec, hold_id=hold.id if hold is not None else "",
                                       budget_window=ticket.budget_window, partial=ticket.piece is not None))
        if ticket.piece is not None:
            self.slices.give_back(ticket.piece, rec.cost)
            ticket.piece = None
        tokens = ticket.tokens
        if tokens is not None:
            delta = rec.prompt_tokens + rec.completion_tokens - tokens.reserved
            if delta:
                self._spawn(self._limiter.settle_tokens(ticket.principal.key_id, tokens.window, delta))
        if ticket.principal.alerting and self.on_alerting is not None:
            try:
                self.on_alerting(ticket.principal)
            except Exception:  # alerts never cost a settlement
                log.exception("alert hook failed")

    def _release_slot(self, slot: Lease) -> None:
        if self._slots_now is not None:
            cast(LocalLease, slot).release_now()
            return
        self._spawn(slot.release())

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(self._quietly(coro))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    @staticmethod
    async def _quietly(coro: Coroutine[Any, Any, object]) -> None:
        try:
            await coro
        except Exception:
            log.exception("releasing a slot or hold failed (it expires by itself)")

    async def drain(self) -> None:
        """Waits for background work and returns this instance's idle credit slices."""
        if self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)
        await self.slices.release_all()


class HoldKeeper:
    """Keeps this instance's holds alive while it runs, and releases everyone's expired holds.

    A hold is renewed every `ttl / 3`; after SIGKILL its instance's holds lapse within `ttl` and the
    next sweep of any instance releases them."""

    def __init__(self, credits: CreditStore, instance_id: str, *, ttl: float = 30.0,
                 clock: Callable[[], float] = time.time, slices: SliceBank | None = None) -> None:
        self._credits = credits
        self._slices = slices
        self._instance = instance_id
        self._ttl = ttl
        self._clock = clock
        self._task: asyncio.Task[None] | None = None

    async def tick(self) -> tuple[int, int]:
        """One renewal and one sweep; returns (renewed, swept)."""
        now = self._clock()
        renewed = await self._credits.renew_holds(self._instance, now + self._ttl)
        swept = await self._credits.sweep_holds(now)
        if swept:
            log.info("released %d expired credit holds", swept)
        if self._slices is not None:
            await self._slices.tick()
        return renewed, swept

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="hold-keeper")

    async def _run(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("renewing/sweeping credit holds failed: %s", type(exc).__name__)
            await asyncio.sleep(self._ttl / 3)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
