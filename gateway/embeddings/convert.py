"""Embeddings JSON <-> protos: pure functions."""

from __future__ import annotations

import base64
import sys
from array import array

from gateway.embeddings.schemas import EmbeddingData, EmbeddingRequest, EmbeddingsResponse, EmbeddingsUsage
from gateway.encoding import decimal_number
from gateway.errors import ApiError
from raven.v1 import embeddings_service_pb2

__all__ = ["embeddings_from_proto", "embeddings_request"]


def embeddings_request(body: EmbeddingRequest) -> embeddings_service_pb2.CreateEmbeddingsRequest:
    """The CreateEmbeddingsRequest for a body; the service validates the values (empty input,
    dimensions, encoding_format); only shapes the proto cannot carry are refused here."""
    pb = embeddings_service_pb2.CreateEmbeddingsRequest(model=body.model)
    value = body.input
    if isinstance(value, str):
        pb.input.append(value)
    elif value and all(isinstance(v, str) for v in value):
        pb.input.extend(value)  # type: ignore[arg-type]
    elif value and all(isinstance(v, int) for v in value):
        pb.token_input.add().tokens.extend(value)  # type: ignore[arg-type]
    elif value and all(isinstance(v, list) for v in value):
        for tokens in value:
            pb.token_input.add().tokens.extend(tokens)  # type: ignore[arg-type]
    elif value:
        raise ApiError(400, "'input' must be a string, an array of strings or an array of token ids, not a mix.",
                       code="invalid_value", param="input")
    if body.encoding_format is not None:
        pb.encoding_format = body.encoding_format
    if body.dimensions is not None:
        pb.dimensions = body.dimensions
    if body.user is not None:
        pb.user = body.user
    return pb


def _base64(vector: list[float]) -> str:
    """Little-endian float32, base64: what OpenAI answers for ``encoding_format: base64``."""
    values = array("f", vector)
    if sys.byteorder != "little":
        values.byteswap()
    return base64.b64encode(values.tobytes()).decode()


def embeddings_from_proto(reply: embeddings_service_pb2.CreateEmbeddingsResponse,
                          encoding_format: str | None) -> EmbeddingsResponse:
    as_base64 = encoding_format == "base64"
    data = [
        EmbeddingData(index=e.index, embedding=_base64(list(e.embedding)) if as_base64 else list(e.embedding))
        for e in reply.data
    ]
    usage = reply.usage
    return EmbeddingsResponse(
        data=data,
        model=reply.model,
        usage=EmbeddingsUsage(prompt_tokens=usage.prompt_tokens, total_tokens=usage.total_tokens,
                              cost=decimal_number(usage.cost)),
        id=reply.id,
        provider=reply.provider,
    )
