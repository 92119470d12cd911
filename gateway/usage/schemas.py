"""Generation record wire types (OpenRouter-style GET /v1/generation)."""

from __future__ import annotations

import msgspec

from gateway.schemas import Credits

__all__ = ["GenerationRecord", "GenerationResponse"]


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
