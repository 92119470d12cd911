"""Generation proto -> JSON."""

from __future__ import annotations

from gateway.encoding import decimal_number
from gateway.usage.schemas import GenerationRecord
from raven.v1 import usage_service_pb2

__all__ = ["generation_from_proto"]


def generation_from_proto(record: usage_service_pb2.Generation) -> GenerationRecord:
    """The JSON record of a proto Generation."""
    return GenerationRecord(
        id=record.id,
        model=record.model,
        provider=record.provider,
        upstream_model=record.upstream_model,
        prompt_tokens=record.prompt_tokens,
        completion_tokens=record.completion_tokens,
        total_cost=decimal_number(record.total_cost),
        latency_ms=record.latency_ms,
        ttft_ms=record.ttft_ms,
        status=record.status,
        finish_reason=record.finish_reason or None,
        native_finish_reason=record.native_finish_reason or None,
        streamed=record.streamed,
        usage_estimated=record.usage_estimated,
        attempts=list(record.attempts),
        created_at=record.create_time.seconds,
        kind=record.kind,
        error=record.error or None,
    )
