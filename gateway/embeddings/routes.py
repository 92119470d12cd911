"""POST /v1/embeddings over EmbeddingsService."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.response import Response

from gateway.backend import backend_of, call_metadata, unary
from gateway.body import StrictJSON
from gateway.embeddings.convert import embeddings_from_proto, embeddings_request
from gateway.embeddings.schemas import EmbeddingRequest, EmbeddingsResponse
from gateway.encoding import json_response
from gateway.openapi import ERROR_RESPONSES
from raven.v1 import embeddings_service_pb2

__all__ = ["EmbeddingsController"]


class EmbeddingsController(Controller):
    """Vector embeddings of texts or token arrays."""

    path = "/embeddings"
    tags = ["embeddings"]

    @post(
        "",
        operation_id="CreateEmbedding",
        summary="Create embeddings",
        dto=StrictJSON[EmbeddingRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def create_embedding(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[EmbeddingRequest],
    ) -> Response[EmbeddingsResponse]:
        """One vector per input, as floats or (``encoding_format: base64``) little-endian float32."""
        stub = backend_of(request).embeddings
        reply: embeddings_service_pb2.CreateEmbeddingsResponse
        reply, headers = await unary(stub.CreateEmbeddings, embeddings_request(data), call_metadata(request))
        return json_response(embeddings_from_proto(reply, data.encoding_format), headers)
