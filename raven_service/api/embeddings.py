"""EmbeddingsService servicer: proto <-> domain."""

from __future__ import annotations

from raven.v1 import embeddings_service_pb2, embeddings_service_pb2_grpc
from raven_service.api import convert
from raven_service.api.context import unary_call
from raven_service.app.admission import Admitter
from raven_service.app.embeddings import EmbeddingsUseCase
from raven_service.core.types import EmbeddingRequest
from raven_service.policy.auth import Authenticator


def embedding_request(pb: embeddings_service_pb2.CreateEmbeddingsRequest) -> EmbeddingRequest:
    return EmbeddingRequest(
        model=pb.model,
        texts=tuple(pb.input),
        token_arrays=tuple(tuple(t.tokens) for t in pb.token_input),
        dimensions=pb.dimensions if pb.HasField("dimensions") else None,
        user=pb.user if pb.HasField("user") else None,
    )


class EmbeddingsServicer(embeddings_service_pb2_grpc.EmbeddingsServiceServicer):
    def __init__(self, auth: Authenticator, embeddings: EmbeddingsUseCase, admitter: Admitter) -> None:
        self._auth = auth
        self._embeddings = embeddings
        self._admitter = admitter

    @unary_call
    async def CreateEmbeddings(self, request: embeddings_service_pb2.CreateEmbeddingsRequest, context, principal):
        done = await self._embeddings.create(
            principal, embedding_request(request),
            encoding_format=request.encoding_format if request.HasField("encoding_format") else None,
        )
        r = done.result
        return embeddings_service_pb2.CreateEmbeddingsResponse(
            id=done.id,
            model=done.model,
            provider=done.provider,
            data=[embeddings_service_pb2.Embedding(index=i, embedding=v) for i, v in enumerate(r.vectors)],
            usage=convert.usage(r.prompt_tokens, 0, done.cost, r.usage_estimated),
        )
