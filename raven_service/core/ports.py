"""Ports: the Protocols that adapters (providers, storage, limiters) implement.

Wired together only in `raven_service.server`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from decimal import Decimal
from typing import Protocol, runtime_checkable

from raven_service.core.types import (
    ApiKey,
    ChatEvent,
    ChatResult,
    GeneratedImage,
    ImageRequest,
    ProviderChatRequest,
    StoredFile,
    UsageRecord,
    UsageSummary,
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
class Store(Protocol):
    """Durable state: keys, credits, usage, files, video tasks. SQLite or PostgreSQL."""

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    # keys
    async def insert_key(self, key: ApiKey) -> None: ...

    async def get_key(self, key_id: str) -> ApiKey | None: ...

    async def get_key_by_hash(self, secret_hash: str) -> ApiKey | None: ...

    async def list_keys(self, include_revoked: bool = False) -> list[ApiKey]: ...

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
    ) -> ApiKey | None: ...

    async def count_keys(self) -> int: ...

    # credits: reserve the worst case atomically, settle to the actual cost
    async def reserve_credits(self, key_id: str, amount: Decimal) -> bool:
        """Atomically adds `amount` to the key's reservation if used + reserved + amount <= credits
        (always succeeds for keys without a credit limit). Returns whether it fit."""
        ...

    async def settle_credits(self, key_id: str, reserved: Decimal, actual: Decimal) -> None:
        """Releases `reserved` and adds `actual` to the key's spend, atomically."""
        ...

    # usage
    async def insert_usage(self, records: Sequence[UsageRecord]) -> None: ...

    async def get_usage(self, record_id: str) -> UsageRecord | None: ...

    async def summarize_usage(
        self, key_id: str, start: float | None, end: float | None
    ) -> list[UsageSummary]: ...

    def export_usage(self) -> AsyncIterator[UsageRecord]: ...

    # files
    async def put_file(self, file: StoredFile) -> None: ...

    async def get_file(self, file_id: str) -> StoredFile | None: ...

    # video tasks
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

    async def update_video_task(self, task: VideoTask) -> None: ...

    async def release_video_tasks(self, worker: str) -> int:
        """Drops `worker`'s leases (shutdown) so other workers pick the tasks up at once."""
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


class Lease(Protocol):
    async def release(self) -> None: ...


class Limiter(Protocol):
    """Per-key request-rate and concurrency limits (in-process or Redis)."""

    async def hit_rpm(self, key_id: str, rpm: int) -> RpmDecision: ...

    async def peek_rpm(self, key_id: str, rpm: int) -> RpmDecision: ...

    async def acquire_slot(self, key_id: str, limit: int) -> Lease | None:
        """Takes one of `limit` concurrency slots, or returns None if all are taken."""
        ...

    async def close(self) -> None: ...
