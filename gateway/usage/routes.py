"""Usage routes: GET /v1/generation?id=, GET /v1/generations, GET /v1/usage (translation only;
visibility, grouping, percentiles and pagination are the service's UsageService rules)."""

from __future__ import annotations

from typing import Annotated, Any, Final

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.encoding import json_response
from gateway.openapi import ERROR_RESPONSES
from gateway.usage.convert import generation_from_proto, reject_unknown, timestamp_param, usage_row_from_proto
from gateway.usage.schemas import GenerationList, GenerationResponse, UsageResponse
from raven.v1 import usage_service_pb2

__all__ = ["GenerationController", "GenerationsController", "UsageController"]

_INT32 = 2**31
_TIME = "An RFC 3339 time, e.g. 2026-01-01T00:00:00Z."
_KEY_ID = "Another key's id (admin keys only); an admin naming none covers every key."
_USAGE_PARAMS: Final = frozenset({"start", "end", "group_by", "key_id"})
_GENERATIONS_PARAMS: Final = frozenset({"key_id", "model", "status", "since", "until", "limit", "after"})


class GenerationController(Controller):
    """Usage records."""

    path = "/generation"
    tags = ["usage"]

    @get("", operation_id="GetGeneration", summary="Get a generation record", responses=ERROR_RESPONSES)
    async def get_generation(
        self,
        request: Request[Any, Any, Any],
        generation_id: Annotated[str, QueryParameter(name="id", description="A completion / generation id.")],
    ) -> Response[GenerationResponse]:
        """Tokens, cost, latency, provider and status of one generation (the caller's own)."""
        message = usage_service_pb2.GetGenerationRequest(id=generation_id)
        reply: usage_service_pb2.GetGenerationResponse
        reply, headers = await unary(backend_of(request).usage.GetGeneration, message, call_metadata(request))
        return json_response(GenerationResponse(data=generation_from_proto(reply.generation)), headers)


class GenerationsController(Controller):
    """The generation list (logs)."""

    path = "/generations"
    tags = ["usage"]

    @get("", operation_id="ListGenerations", summary="List generation records", responses=ERROR_RESPONSES)
    async def list_generations(
        self,
        request: Request[Any, Any, Any],
        key_id: Annotated[str | None, QueryParameter(description=_KEY_ID)] = None,
        model: Annotated[str | None, QueryParameter(description="Only this model slug.")] = None,
        status: Annotated[str | None, QueryParameter(description="completed, failed or cancelled.")] = None,
        since: Annotated[str | None, QueryParameter(description="Started at or after. " + _TIME)] = None,
        until: Annotated[str | None, QueryParameter(description="Started before. " + _TIME)] = None,
        limit: Annotated[int | None, QueryParameter(ge=-_INT32, le=_INT32 - 1, description="1 to 100 (20).")] = None,
        after: Annotated[str | None, QueryParameter(description="The `next` cursor of the previous page.")] = None,
    ) -> Response[GenerationList]:
        """The caller's generations (an admin's: every key's, or `key_id`'s), newest first."""
        reject_unknown(request.query_params.keys(), _GENERATIONS_PARAMS)
        message = usage_service_pb2.ListGenerationsRequest(
            key_id=key_id or "", model=model or "", status=status or "", limit=limit or 0, after=after or "",
            since_time=timestamp_param("since", since), until_time=timestamp_param("until", until))
        reply: usage_service_pb2.ListGenerationsResponse
        reply, headers = await unary(backend_of(request).usage.ListGenerations, message, call_metadata(request))
        return json_response(
            GenerationList(data=[generation_from_proto(g) for g in reply.generations], has_more=reply.has_more,
                           next=reply.next or None),
            headers,
        )


class UsageController(Controller):
    """Aggregated usage."""

    path = "/usage"
    tags = ["usage"]

    @get("", operation_id="GetUsage", summary="Usage grouped by day, model, key, provider or tag",
         responses=ERROR_RESPONSES)
    async def get_usage(
        self,
        request: Request[Any, Any, Any],
        start: Annotated[str | None, QueryParameter(description="Period start (inclusive). " + _TIME)] = None,
        end: Annotated[str | None, QueryParameter(description="Period end (exclusive). " + _TIME)] = None,
        group_by: Annotated[
            str | None,
            QueryParameter(description="Comma list of day, model, key, provider and at most one tag:<name>."),
        ] = None,
        key_id: Annotated[str | None, QueryParameter(description=_KEY_ID)] = None,
    ) -> Response[UsageResponse]:
        """Requests, errors, tokens, cost and latency percentiles per group (the caller's own key;
        an admin's: every key, or `key_id`'s)."""
        reject_unknown(request.query_params.keys(), _USAGE_PARAMS)
        message = usage_service_pb2.QueryUsageRequest(
            key_id=key_id or "", group_by=(group_by or "").split(","),
            start_time=timestamp_param("start", start), end_time=timestamp_param("end", end))
        reply: usage_service_pb2.QueryUsageResponse
        reply, headers = await unary(backend_of(request).usage.QueryUsage, message, call_metadata(request))
        return json_response(
            UsageResponse(data=[usage_row_from_proto(row, reply.group_by) for row in reply.rows]), headers)
