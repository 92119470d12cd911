"""Usage wire types: GET /v1/generation (OpenRouter-style), /v1/generations, /v1/usage."""

from __future__ import annotations

import msgspec
from msgspec import UNSET, UnsetType

from gateway.schemas import Credits

__all__ = ["GenerationList", "GenerationRecord", "GenerationResponse", "UsageResponse", "UsageRow"]


class GenerationRecord(msgspec.Struct, kw_only=True, gc=False):
    """Usage, cost, latency and provider of one completion, image or video generation."""

    id: str
    model: str
    provider: str
    upstream_model: str
    prompt_tokens: int
    completion_tokens: int
    #: Credits charged.
    total_cost: Credits
    latency_ms: int
    ttft_ms: int
    #: completed, failed or cancelled.
    status: str
    finish_reason: str | None
    native_finish_reason: str | None
    streamed: bool
    usage_estimated: bool
    #: Every attempt, as "provider/model:outcome".
    attempts: list[str]
    #: Unix seconds.
    created_at: int
    #: chat, image or video.
    kind: str
    error: str | None


class GenerationResponse(msgspec.Struct, kw_only=True, gc=False):
    """``{"data": {...}}``."""

    data: GenerationRecord


class GenerationList(msgspec.Struct, kw_only=True, gc=False):
    """GET /v1/generations: ``{"data": [...], "has_more": bool, "next": "<cursor for after>"}``."""

    data: list[GenerationRecord]
    has_more: bool
    #: Pass as ``after`` for the next page; null on the last page.
    next: str | None


class UsageRow(msgspec.Struct, kw_only=True, gc=False, omit_defaults=True):
    """Usage of one group. A dimension appears only when grouped by it; ``tag`` is null for keys
    without the grouped tag."""

    #: UTC day, ``YYYY-MM-DD``.
    day: str | UnsetType = UNSET
    model: str | UnsetType = UNSET
    key_id: str | UnsetType = UNSET
    provider: str | UnsetType = UNSET
    tag: str | UnsetType | None = UNSET
    requests: int
    #: Failed generations (cancelled ones are not errors).
    errors: int
    prompt_tokens: int
    completion_tokens: int
    #: Credits, an exact decimal string.
    cost: str
    latency_ms_p50: int | None
    latency_ms_p95: int | None
    #: Of generations that had a first token.
    ttft_ms_p50: int | None


class UsageResponse(msgspec.Struct, kw_only=True, gc=False):
    """``{"data": [rows]}``, ordered by day, model, key, provider, tag."""

    data: list[UsageRow]
