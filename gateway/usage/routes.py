"""GET /v1/generation?id=...: the usage record of one generation."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, get
from litestar.params import QueryParameter
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.encoding import json_response
from gateway.openapi import ERROR_RESPONSES
from gateway.usage.convert import generation_from_proto
from gateway.usage.schemas import GenerationResponse
from raven.v1 import usage_service_pb2

__all__ = ["GenerationController"]


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
