"""Usage protos <-> JSON and query parameters."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Final

from google.protobuf import timestamp_pb2
from msgspec import UNSET

from gateway.encoding import decimal_number
from gateway.errors import ApiError
from gateway.usage.schemas import GenerationRecord, UsageRow
from raven.v1 import usage_service_pb2

__all__ = ["generation_from_proto", "reject_unknown", "timestamp_param", "usage_row_from_proto"]


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


_RFC3339: Final = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$")


def timestamp_param(name: str, value: str | None) -> timestamp_pb2.Timestamp | None:
    """An RFC 3339 query parameter (``2026-01-01T00:00:00Z``, any offset) as a Timestamp; a
    malformed one is a 400 naming the parameter."""
    if value is None:
        return None
    parsed = None
    if _RFC3339.match(value):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        except ValueError:
            parsed = None
    if parsed is None:
        raise ApiError(400, f"'{name}' must be an RFC 3339 time such as 2026-01-01T00:00:00Z.", code="invalid_value",
                       param=name)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(parsed.astimezone(dt.UTC))
    return stamp


def reject_unknown(query: Iterable[str], allowed: frozenset[str]) -> None:
    """A query parameter the route does not define is a 400 naming it (a typo such as
    ``group-by`` must not silently answer the ungrouped totals)."""
    for name in query:
        if name not in allowed:
            raise ApiError(400, f"Unknown query parameter '{name[:64]}'.", code="unknown_parameter", param=name[:64])


def usage_row_from_proto(row: usage_service_pb2.UsageRow, group_by: Iterable[str]) -> UsageRow:
    """The JSON row: each grouped dimension present (``tag`` null when the key lacks it)."""
    grouped = set(group_by)
    tagged = any(g.startswith("tag:") for g in grouped)
    return UsageRow(
        day=row.day if "day" in grouped else UNSET,
        model=row.model if "model" in grouped else UNSET,
        key_id=row.key_id if "key" in grouped else UNSET,
        provider=row.provider if "provider" in grouped else UNSET,
        tag=(row.tag if row.HasField("tag") else None) if tagged else UNSET,
        requests=row.requests,
        errors=row.errors,
        prompt_tokens=row.prompt_tokens,
        completion_tokens=row.completion_tokens,
        cost=row.cost or "0",
        latency_ms_p50=row.latency_ms_p50 if row.HasField("latency_ms_p50") else None,
        latency_ms_p95=row.latency_ms_p95 if row.HasField("latency_ms_p95") else None,
        ttft_ms_p50=row.ttft_ms_p50 if row.HasField("ttft_ms_p50") else None,
    )
