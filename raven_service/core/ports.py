"""Ports: the Protocols that adapters (providers, storage, limiters) implement.

Wired together only in `raven_service.server`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from decimal import Decimal
from typing import Protocol, runtime_checkable

from raven_service.core.types import (
    AlertClaim,
    ApiKey,
    ChatEvent,
    ChatResult,
    CreditHold,
    EmbeddingRequest,
    EmbeddingResult,
    GeneratedImage,
    ImageRequest,
    KeyPatch,
    ProviderChatRequest,
    Settlement,
    StoredFile,
    StoredResponse,
    UsageAggregate,
    UsageRecord,
    UsageSample,
    VideoRequest,
    VideoResult,
    VideoState,
    VideoTask,
)


# ------------------------------------------------------------------------------------ providers
@runtime_checkable
class ChatProvider(Protocol):
    """A chat upstream. Both methods raise `core.errors.UpstreamError` (or a subclass) on failure.

    `stream` yields TextDelta / ToolCallDelta events, then exactly one Finish, then exactly one
    UsageReport (estimated=True when the upstream reported none).
    """

    name: str

    async def complete(self, req: ProviderChatRequest) -> ChatResult: ...

    def stream(self, req: ProviderChatRequest) -> AsyncGenerator[ChatEvent, None]: ...


@runtime_checkable
class EmbeddingProvider(Protocol):
    """An embeddings upstream; raises `core.errors.UpstreamError` (or a subclass) on failure."""

    name: str

    async def embed(self, upstream_model: str, req: EmbeddingRequest) -> EmbeddingResult: ...


@runtime_checkable
class ImageProvider(Protocol):
    name: str

    async def generate_images(self, upstream_model: str, req: ImageRequest) -> list[GeneratedImage]: ...


class VideoPoll(Protocol):
    state: VideoState
    progress: int
    error: str


@runtime_checkable
class VideoProvider(Protocol):
    """An asynchronous video job API: submit, poll, fetch."""

    name: str

    async def submit_video(self, upstream_model: str, req: VideoRequest, task_id: str) -> str:
        """Starts a job and returns the upstream job id."""
        ...

    async def poll_video(self, upstream_model: str, req: VideoRequest, upstream_id: str) -> VideoPoll:
        """Reports the job's state; an unknown id (e.g. after a restart of a local job) is resubmitted."""
        ...

    async def fetch_video(self, upstream_id: str) -> VideoResult: ...


# ------------------------------------------------------------------------------------ storage
# The store is split by the power each use case needs: a use case holds only the ports it uses.
# Every method may raise `core.errors.StoreUnavailable` when the backend cannot be reached.
class KeyStore(Protocol):
    """API keys (secrets stored hashed)."""

    async def insert_key(self, key: ApiKey) -> None: ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None: ...

    async def list_keys(self, include_revoked: bool = False, *, limit: int | None = None,
                        after: str | None = None) -> list[ApiKey]:
        """Keys in (created_at, id) order; `after` = the id of the last key of the previous page."""
        ...

    async def update_key(
        self,
        key_id: str,
        *,
        name: str | None = None,
        rpm: int | None = None,
        concurrency: int | None = None,
        credits: Decimal | None = None,
        clear_credits: bool = False,
        revoked: bool | None = None,
        patch: KeyPatch | None = None,
    ) -> ApiKey | None: ...

    async def count_keys(self) -> int: ...

    async def rotate_key(self, key_id: str, secret_hash: str, prefix: str,
                         previous_expires_at: float) -> ApiKey | None:
        """New secret; `get_key_by_hash` still finds the key by the old one (its
        `previous_secret_hash`), which authenticates until `previous_expires_at`."""
        ...


class CreditStore(Protocol):
    """Credit holds: a key's `credits_reserved` is always the sum of its live holds."""

    async def reserve_hold(self, hold: CreditHold) -> bool:
        """Atomically stores `hold` and adds its amount to the key's reservation iff
        used + reserved + amount <= credits (always fits for keys without a credit limit; False for
        an unknown key). Returns whether it fit."""
        ...

    async def release_hold(self, hold_id: str) -> bool:
        """Drops the hold (if it is still live) and its reservation, charging nothing. Idempotent."""
        ...

    async def renew_holds(self, owner: str, expires_at: float) -> int:
        """Moves the expiry of every live hold of `owner` to `expires_at`; returns how many."""
        ...

    async def sweep_holds(self, now: float) -> int:
        """Releases every hold whose expiry has passed (a killed instance's); returns how many."""
        ...

    async def list_holds(self, key_id: str) -> list[CreditHold]: ...

    async def budget_usage(self, key_id: str, window_start: float) -> tuple[Decimal, Decimal]:
        """(used, reserved) of one budget window of the key. A hold with `budget_window` set is
        reserved against both the credits and that window (iff used + reserved + amount <= the
        key's budget); settling it charges the cost to both, releasing it frees both."""
        ...

    async def claim_alert(self, key_id: str, kind: str, period_start: float, threshold: int, *,
                          body: bytes = b"", lease_until: float = 0.0) -> bool:
        """True for the first claim of (key, kind, window, threshold) across every instance. With a
        `body`, the delivery is owed: the claim is pending, the claimer's until `lease_until`."""
        ...

    async def take_stale_alerts(self, now: float, lease_until: float, limit: int = 100) -> list[AlertClaim]:
        """Pending claims whose lease ran out by `now`, each leased to the caller until
        `lease_until` (one taker per claim across instances)."""
        ...

    async def finish_alert(self, claim: AlertClaim, *, delivered: bool) -> None:
        """The claim's delivery is over: delivered, or given up. Never taken again."""
        ...


class UsageStore(Protocol):
    """The usage ledger. Records arrive only as settlements (record + hold in one transaction)."""

    async def settle(self, settlements: Sequence[Settlement]) -> int:
        """In ONE transaction, for each settlement whose record id is not stored yet: inserts the
        record, releases its hold and charges `record.cost` to the key. Already-stored records are
        skipped (retrying a batch never double-charges). Returns how many were new."""
        ...

    async def get_usage(self, record_id: str) -> UsageRecord | None: ...

    async def aggregate_usage(
        self, key_id: str | None, start: float | None, end: float | None, group_by: frozenset[str]
    ) -> list[UsageAggregate]:
        """Totals of the records with start <= created_at < end (None = open) of one key (None =
        every key), one row per distinct value of the `group_by` dimensions (a subset of
        `core.types.USAGE_DIMENSIONS`), in (day, model, key, provider, tags) order. Sums are exact
        for any range; the histograms use `core.latency`'s buckets. Fast on a big ledger: served
        from a rollup kept in `settle`'s transaction, not by scanning the records."""
        ...

    async def usage_samples(
        self, key_id: str | None, start: float | None, end: float | None, limit: int
    ) -> list[UsageSample]:
        """The grouping dimensions and timings of at most `limit` records of the same range."""
        ...

    async def list_usage(
        self, key_id: str | None, *, model: str | None = None, status: str | None = None,
        since: float | None = None, until: float | None = None, before: tuple[float, str] | None = None,
        limit: int = 20,
    ) -> list[UsageRecord]:
        """Records of one key (None = every key), newest first ((created_at, id) descending),
        filtered by model, status and since <= created_at < until, strictly before the keyset
        cursor `before` = (created_at, id) of the previous page's last record."""
        ...

    def export_usage(self) -> AsyncIterator[UsageRecord]: ...


class FileStore(Protocol):
    async def put_file(self, file: StoredFile) -> None: ...

    async def get_file(self, file_id: str) -> StoredFile | None: ...

    async def delete_files_before(self, cutoff: float, limit: int = 500) -> int:
        """Deletes up to `limit` files created before `cutoff` (unix s); returns how many went."""
        ...


class ResponseStore(Protocol):
    """Stored Responses API responses, per key, until they expire."""

    async def put_response(self, response: StoredResponse) -> bool:
        """Stores `response`, replacing a stored one with the same id and key. False (nothing
        written) when the id is stored for another key."""
        ...

    async def get_response(self, response_id: str, key_id: str, now: float) -> StoredResponse | None:
        """The response iff it belongs to `key_id` and has not expired at `now`."""
        ...

    async def delete_response(self, response_id: str, key_id: str, now: float) -> bool:
        """Deletes the response iff it belongs to `key_id` and has not expired at `now`; whether it did."""
        ...

    async def delete_expired_responses(self, now: float) -> int:
        """Deletes every response whose expiry has passed; returns how many."""
        ...


class VideoTaskStore(Protocol):
    async def create_video_task(self, task: VideoTask) -> tuple[VideoTask, bool]:
        """Inserts the task, or returns the existing one with the same (key_id, request_id) when
        request_id is non-empty. The bool says whether it was created now."""
        ...

    async def get_video_task(self, task_id: str) -> VideoTask | None: ...

    async def list_video_tasks(
        self, key_id: str, limit: int, before: tuple[float, str] | None
    ) -> list[VideoTask]: ...

    async def claim_video_task(self, worker: str, now: float, lease_seconds: float) -> VideoTask | None:
        """Claims one queued task, or a running one whose lease expired, setting lease_owner and
        lease_until = now + lease_seconds. Two workers never claim the same task."""
        ...

    async def update_video_task(self, task: VideoTask, worker: str) -> bool:
        """Writes the task's mutable fields iff `worker` still holds its lease (fenced:
        `WHERE id = ? AND lease_owner = ?`). Returns False when the lease was lost."""
        ...

    async def renew_video_lease(self, task_id: str, worker: str, lease_until: float) -> bool:
        """Extends the lease iff `worker` still holds it (touches nothing else). False = lost."""
        ...

    async def finish_video_task(self, task: VideoTask, worker: str, settlement: Settlement) -> bool:
        """In one transaction: the fenced final update of the task (lease dropped) and, iff it took,
        the settlement of its hold with its usage record. False (nothing written) when `worker` no
        longer holds the lease. A task therefore settles exactly once."""
        ...

    async def release_video_tasks(self, worker: str) -> int:
        """Drops `worker`'s leases (shutdown) so other workers pick the tasks up at once."""
        ...


class Store(KeyStore, CreditStore, UsageStore, FileStore, VideoTaskStore, ResponseStore, Protocol):
    """Durable state: SQLite or PostgreSQL. Only the composition root holds the whole of it."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...


# ------------------------------------------------------------------------------------ alerts
#: What `AlertSender.send` did with a delivery.
QUEUED, REFUSED, FULL = "queued", "refused", "full"


class AlertSender(Protocol):
    """Delivers alert webhooks off the request path."""

    def send(self, url: str, secret: str, body: bytes, *, delivery_id: str = "",
             done: Callable[[bool], Awaitable[None]] | None = None) -> str:
        """Queues one signed POST of `body` to `url` (never blocks, never raises): QUEUED (then
        `done(True)` once a 2xx came, `done(False)` once given up), REFUSED (the URL may not be
        posted to) or FULL (the queue is: nothing was done)."""
        ...


# ------------------------------------------------------------------------------------ limits
class RpmDecision(Protocol):
    """The outcome of an RPM check. Read-only members, so frozen dataclasses (and any object with
    plain attributes) conform."""

    @property
    def allowed(self) -> bool: ...

    @property
    def limit(self) -> int: ...

    @property
    def remaining(self) -> int: ...

    @property
    def reset_after(self) -> float:
        """Seconds until the window resets."""
        ...


class TokenDecision(RpmDecision, Protocol):
    """The outcome of a TPM reservation: the RpmDecision members (in tokens) plus the window."""

    @property
    def window(self) -> float:
        """Identifies the window the tokens were reserved in (its start)."""
        ...

    @property
    def reserved(self) -> int: ...


class Lease(Protocol):
    async def release(self) -> None: ...


class LocalLease(Lease, Protocol):
    def release_now(self) -> None: ...


@runtime_checkable
class LocalSlots(Protocol):
    """Optional, for a Limiter whose concurrency slots live in this process (the in-process one):
    a slot is taken and given back without awaiting, so admission needs no task to take it safely
    under cancellation, nor one to give it back."""

    def acquire_slot_now(self, key_id: str, limit: int) -> LocalLease | None: ...


class Limiter(Protocol):
    """Per-key request-rate and concurrency limits (in-process or Redis)."""

    async def hit_rpm(self, key_id: str, rpm: int) -> RpmDecision: ...

    async def peek_rpm(self, key_id: str, rpm: int) -> RpmDecision: ...

    async def acquire_slot(self, key_id: str, limit: int) -> Lease | None:
        """Takes one of `limit` concurrency slots, or returns None if all are taken."""
        ...

    async def hit_tokens(self, key_id: str, tpm: int, tokens: int) -> TokenDecision:
        """Reserves `tokens` in the key's 60 s token window iff used + tokens <= tpm (rejected
        reservations take nothing); `tpm` <= 0 is unlimited."""
        ...

    async def settle_tokens(self, key_id: str, window: float, delta: int) -> None:
        """Adds `delta` (actual - reserved, may be negative) to the window the tokens were
        reserved in, if that window is still the current one."""
        ...

    async def peek_tokens(self, key_id: str, tpm: int) -> TokenDecision: ...

    async def close(self) -> None: ...
