"""Alert webhook delivery: signed JSON POSTs, off the request path, retried with backoff.

`WebhookSender.send()` only queues (bounded; never blocks, never raises), so a slow, failing or
unreachable receiver can never slow down or fail a request. Worker tasks POST each alert with
`x-raven-signature: sha256=<hex HMAC-SHA256 of the raw body keyed with the key's webhook secret>`;
any answer other than 2xx, a timeout or a connection error is retried with exponential backoff up
to `attempts` times, then given up (logged); either outcome is reported to the delivery's `done`
(the alert watcher records it on the claim, app/alerts.py). TLS verification uses the process's CA settings
(`SSL_CERT_FILE` / `SSL_CERT_DIR`, else certifi): a receiver whose certificate does not verify is
never sent the body (each attempt fails at the handshake). Redirects are not followed.

Only `https://` receivers are posted to; a loopback `http://` one only with `allow_http`
(`alert_webhook_allow_http`). Key create/update refuse other URLs with a 400 naming
`alert_webhook`; the check here covers keys stored while the setting was on and a server restarted
with it off: such an alert is refused at delivery (logged, counted in `failed`), never sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import logging
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from raven_service.core.ports import FULL, QUEUED, REFUSED

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("raven.alerts")

SIGNATURE_HEADER = "x-raven-signature"


def signature(secret: str, body: bytes) -> str:
    """The `x-raven-signature` value of `body`."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def deliverable(url: str, *, allow_http: bool) -> bool:
    """An https:// URL, or (with `allow_http`) an http:// URL whose host is loopback."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        return False
    if not host:
        return False
    if parts.scheme == "https":
        return True
    if parts.scheme != "http" or not allow_http:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class _Delivery:
    url: str
    secret: str
    body: bytes
    id: str
    done: Callable[[bool], Awaitable[None]] | None = None


class WebhookSender:
    """Implements `core.ports.AlertSender` with httpx."""

    def __init__(self, *, attempts: int = 5, retry_base: float = 1.0, retry_max: float = 60.0,
                 timeout: float = 10.0, workers: int = 2, max_queue: int = 1000,
                 allow_http: bool = False) -> None:
        self.allow_http = allow_http
        self.attempts = max(1, attempts)
        self.retry_base = retry_base
        self.retry_max = retry_max
        self._timeout = timeout
        self._workers = max(1, workers)
        self._queue: asyncio.Queue[_Delivery] = asyncio.Queue(max_queue)
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        #: Deliveries that reached a 2xx / were given up (for metrics and tests).
        self.delivered = 0
        self.failed = 0

    def send(self, url: str, secret: str, body: bytes, *, delivery_id: str = "",
             done: Callable[[bool], Awaitable[None]] | None = None) -> str:
        """Queues one delivery (see `core.ports.AlertSender`); `delivery_id` is its
        `x-raven-delivery` header (a new random one when empty)."""
        if not deliverable(url, allow_http=self.allow_http):
            self.failed += 1
            log.warning("alert webhook refused: only https:// receivers are allowed (loopback http:// ones "
                        "with alert_webhook_allow_http)")
            return REFUSED
        try:
            self._queue.put_nowait(_Delivery(url, secret, body, delivery_id or "whd_" + uuid.uuid4().hex, done))
        except asyncio.QueueFull:
            log.warning("alert webhook queue full: an alert waits for a later sweep")
            return FULL
        self._start()
        return QUEUED

    def _start(self) -> None:
        if not self._tasks:
            import httpx  # lazy: ~0.15 s of start-up (its CLI module pulls in rich), for the first alert only

            self._client = httpx.AsyncClient(timeout=self._timeout, follow_redirects=False)
            self._tasks = [asyncio.get_running_loop().create_task(self._run(), name=f"alert-webhook-{i}")
                           for i in range(self._workers)]

    async def _run(self) -> None:
        while True:
            delivery = await self._queue.get()
            try:
                await self._deliver(delivery)
            finally:
                self._queue.task_done()

    async def _deliver(self, d: _Delivery) -> None:
        import httpx  # imported by _start already

        assert self._client is not None
        headers = {"content-type": "application/json", SIGNATURE_HEADER: signature(d.secret, d.body),
                   "x-raven-delivery": d.id, "user-agent": "raven-alerts/1"}
        delay = self.retry_base
        for attempt in range(1, self.attempts + 1):
            try:
                response = await self._client.post(d.url, content=d.body, headers=headers)
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    await self._done(d, True)
                    return
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                why = type(exc).__name__
            if attempt < self.attempts:
                log.info("alert webhook delivery %s failed (%s); retrying in %.1fs", d.id, why, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_max)
        self.failed += 1
        log.warning("alert webhook delivery %s failed %d times; dropped", d.id, self.attempts)
        await self._done(d, False)

    @staticmethod
    async def _done(d: _Delivery, delivered: bool) -> None:
        if d.done is None:
            return
        try:
            await d.done(delivered)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the store's hiccup: the claim stays pending and a sweep resends it
            log.warning("recording alert delivery %s failed: %s", d.id, type(exc).__name__)

    async def drain(self, within: float = 5.0) -> None:
        """Waits (bounded) for queued deliveries (tests, shutdown)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await self._queue.join()

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._client is not None:
            await self._client.aclose()
            self._client = None
