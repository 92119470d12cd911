"""Budget and credit alerts (SPEC §11): one signed webhook POST per threshold crossing per window.

The admission scope tells the watcher (synchronously, no I/O) that a request of a key with an alert
webhook was submitted for settlement. The watcher, a background task, waits until the ledger has
written what was submitted, re-reads the key's credits and current budget window, and for each
threshold reached asks the store to claim it (`claim_alert`: one row per key, kind, window and
threshold, so across all instances exactly one claimer wins and delivers). Delivery itself is the
sender's job (queued, retried, never on the request path). Nothing here can fail a request: every
error is logged and the next settlement checks again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from decimal import Decimal

import msgspec

from raven_service.accounting.ledger import Ledger
from raven_service.core.ports import AlertSender, CreditStore, KeyStore
from raven_service.core.types import ApiKey, Principal
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


class AlertWatcher:
    def __init__(self, keys: KeyStore, credits: CreditStore, ledger: Ledger, sender: AlertSender, *,
                 wall: Callable[[], float] = time.time, settle_wait: float = 5.0) -> None:
        self._keys = keys
        self._credits = credits
        self._ledger = ledger
        self._sender = sender
        self._wall = wall
        self._settle_wait = settle_wait
        self._dirty: set[str] = set()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
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
        bodies: list[AlertBody] = []
        if key.credits is not None:
            for t in crossed(key.alert_thresholds, key.credits_used, key.credits):
                if await self._credits.claim_alert(key.id, "credits", 0.0, t):
                    bodies.append(AlertBody(key_id=key.id, threshold=t, kind="credits",
                                            used=_amount(key.credits_used), limit=_amount(key.credits),
                                            period_start=None))
        bodies += await self._budget_alerts(key)
        for body in bodies:
            self._sender.send(key.alert_webhook, key.webhook_secret, msgspec.json.encode(body))
        self.sent += len(bodies)
        return len(bodies)

    async def _budget_alerts(self, key: ApiKey) -> list[AlertBody]:
        if key.budget is None or not key.budget_period:
            return []
        start, _ = budget_window(key.budget_period, self._wall())
        used, _ = await self._credits.budget_usage(key.id, start)
        out = []
        for t in crossed(key.alert_thresholds, used, key.budget):
            if await self._credits.claim_alert(key.id, "budget", start, t):
                out.append(AlertBody(key_id=key.id, threshold=t, kind="budget", used=_amount(used),
                                     limit=_amount(key.budget), period_start=format_time(start)))
        return out

    async def idle(self, within: float = 5.0) -> None:
        """Waits (bounded) until every notified key was checked (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._idle.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
