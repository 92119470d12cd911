"""Budget and credit alerts (SPEC §11): one signed webhook POST per threshold crossing per window.

The admission scope tells the watcher (synchronously, no I/O) that a request of a key with an alert
webhook was submitted for settlement. The watcher, a background task, waits until the ledger has
written what was submitted, re-reads the key's credits and current budget window, and for each
threshold reached asks the store to claim it (`claim_alert`: one row per key, kind, window and
threshold, so across all instances exactly one claimer wins and delivers). Delivery itself is the
sender's job (queued, retried, never on the request path). Nothing here can fail a request: every
error is logged and the next settlement checks again.

A delivery outlives the process that claimed it: the claim holds the body, pending under the
claimer's lease, until the sender reports it delivered or given up (`finish_alert`). A claim whose
lease ran out (its claimer was killed, or the sender's queue was full) is taken over by the sweep
every instance runs (`take_stale_alerts`, one taker per claim) and sent again with the same
`x-raven-delivery` id, so a receiver can drop the rare duplicate (a claimer killed between the
receiver's 2xx and recording it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec

from raven_service.accounting.ledger import Ledger
from raven_service.core.ports import REFUSED, AlertSender, CreditStore, KeyStore
from raven_service.core.types import AlertClaim, ApiKey, Principal
from raven_service.policy.governance import budget_window, crossed, format_time

log = logging.getLogger("raven.alerts")


class AlertBody(msgspec.Struct, kw_only=True):
    """The JSON body of one alert (SPEC §11)."""

    key_id: str
    threshold: int
    kind: str  # "credits" | "budget"
    used: str
    limit: str
    period_start: str | None  # RFC 3339 start of the budget window; null for lifetime credits


def _amount(value: Decimal) -> str:
    text = f"{value.normalize():f}"
    return text


def delivery_id(claim: AlertClaim) -> str:
    """The `x-raven-delivery` id of a claim: the same on every (re)send of it."""
    ident = f"{claim.key_id}|{claim.kind}|{float(claim.period_start)!r}|{int(claim.threshold)}".encode()
    return "whd_" + hashlib.sha256(ident).hexdigest()[:32]


class AlertWatcher:
    def __init__(self, keys: KeyStore, credits: CreditStore, ledger: Ledger, sender: AlertSender, *,
                 wall: Callable[[], float] = time.time, settle_wait: float = 5.0, lease: float = 600.0,
                 sweep_every: float = 60.0) -> None:
        self._keys = keys
        self._credits = credits
        self._ledger = ledger
        self._sender = sender
        self._wall = wall
        self._settle_wait = settle_wait
        self._lease = lease  # longer than the sender's whole retry schedule
        self._sweep_every = sweep_every
        self._sweeper: asyncio.Task[None] | None = None
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self.sent = 0  # alerts handed to the sender by this instance

    def notify(self, principal: Principal) -> None:
        """A settlement of this key was submitted (called from the admission scope: no I/O)."""
        if len(self._dirty) < 100_000:
            self._dirty.add(principal.key_id)
        self._idle.clear()
        self._wake.set()
        if self._task is None:
            with contextlib.suppress(RuntimeError):
                self._task = asyncio.get_running_loop().create_task(self._run(), name="alert-watcher")

    async def _run(self) -> None:
        while True:
            if not self._dirty:
                self._idle.set()
                self._wake.clear()
                await self._wake.wait()
            await self._ledger.flush(self._settle_wait)
            batch, self._dirty = self._dirty, set()
            for key_id in sorted(batch):
                try:
                    await self.check(key_id)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a store hiccup: the next settlement checks again
                    log.warning("checking alerts of %s failed: %s", key_id, type(exc).__name__)

    async def check(self, key_id: str) -> int:
        """Claims and sends every alert the key's current state has crossed; returns how many."""
        key = await self._keys.get_key(key_id)
        if key is None or not key.alert_webhook or key.revoked:
            return 0
        claims: list[AlertClaim] = []
        if key.credits is not None:
            for t in crossed(key.alert_thresholds, key.credits_used, key.credits):
                body = AlertBody(key_id=key.id, threshold=t, kind="credits", used=_amount(key.credits_used),
                                 limit=_amount(key.credits), period_start=None)
                claims += await self._claim(key, "credits", 0.0, body)
        claims += await self._budget_alerts(key)
        for claim in claims:
            self._send(key, claim)
        self.sent += len(claims)
        return len(claims)

    async def _claim(self, key: ApiKey, kind: str, period_start: float, body: AlertBody) -> list[AlertClaim]:
        claim = AlertClaim(key_id=key.id, kind=kind, period_start=period_start, threshold=body.threshold,
                           body=msgspec.json.encode(body))
        won = await self._credits.claim_alert(key.id, kind, period_start, body.threshold, body=claim.body,
                                              lease_until=self._wall() + self._lease)
        return [claim] if won else []

    def _send(self, key: ApiKey, claim: AlertClaim) -> None:
        async def done(delivered: bool) -> None:
            await self._credits.finish_alert(claim, delivered=delivered)

        outcome = self._sender.send(key.alert_webhook, key.webhook_secret, claim.body,
                                    delivery_id=delivery_id(claim), done=done)
        if outcome == REFUSED:  # never deliverable: nothing is owed any more
            self._finish_later(claim)
        # FULL: still pending; once its lease runs out a sweep sends it again

    def _finish_later(self, claim: AlertClaim) -> None:
        async def finish() -> None:
            try:
                await self._credits.finish_alert(claim, delivered=False)
            except Exception as exc:  # stays pending: the sweep meets it again
                log.warning("recording a refused alert failed: %s", type(exc).__name__)
        task = asyncio.get_running_loop().create_task(finish())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _budget_alerts(self, key: ApiKey) -> list[AlertClaim]:
        if key.budget is None or not key.budget_period:
            return []
        start, _ = budget_window(key.budget_period, self._wall())
        used, _ = await self._credits.budget_usage(key.id, start)
        out: list[AlertClaim] = []
        for t in crossed(key.alert_thresholds, used, key.budget):
            body = AlertBody(key_id=key.id, threshold=t, kind="budget", used=_amount(used),
                             limit=_amount(key.budget), period_start=format_time(start))
            out += await self._claim(key, "budget", start, body)
        return out

    # ---------------------------------------------------------------------- the sweep
    def start(self) -> None:
        """Runs the sweep now and every `sweep_every` seconds (the serving process only)."""
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_loop(), name="alert-sweep")

    async def _sweep_loop(self) -> None:
        while True:
            try:
                await self.sweep()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a store hiccup: the next sweep tries again
                log.warning("alert sweep failed: %s", type(exc).__name__)
            await asyncio.sleep(self._sweep_every)

    async def sweep(self) -> int:
        """Sends again every claim whose lease ran out (this instance takes it for a new lease);
        returns how many it took."""
        now = self._wall()
        claims = await self._credits.take_stale_alerts(now, now + self._lease)
        for claim in claims:
            key = await self._keys.get_key(claim.key_id)
            if key is None or key.revoked or not key.alert_webhook:
                await self._credits.finish_alert(claim, delivered=False)  # nobody to tell any more
                continue
            log.info("resending an alert of %s whose delivery was not recorded", claim.key_id)
            self._send(key, claim)
        return len(claims)

    async def idle(self, within: float = 5.0) -> None:
        """Waits (bounded) until every notified key was checked (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()

    async def close(self) -> None:
        for task in (self._task, self._sweeper, *self._pending):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._task = self._sweeper = None
