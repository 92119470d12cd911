"""Embeddings wire types (OpenAI's POST /v1/embeddings)."""

from __future__ import annotations

from typing import Literal

import msgspec

from gateway.schemas import Credits, Int32

__all__ = ["EmbeddingData", "EmbeddingRequest", "EmbeddingsResponse", "EmbeddingsUsage"]


class EmbeddingRequest(msgspec.Struct, kw_only=True):
    """The body of POST /v1/embeddings. ``input`` is a string, an array of strings, an array of
    token ids or an array of token-id arrays."""

    model: str
    #: (One list type holding the three item kinds: a msgspec union may hold one array type; the
    #: items must all be of one kind, which the conversion checks.)
    input: str | list[str | Int32 | list[Int32]]
    #: "float" (default) or "base64" (little-endian float32, what the openai SDK asks for).
    encoding_format: str | None = None
    dimensions: Int32 | None = None
    user: str | None = None


class EmbeddingData(msgspec.Struct, kw_only=True, gc=False):
    """One vector."""

    object: Literal["embedding"] = "embedding"
    index: int
    #: A list of floats, or a base64 string of little-endian float32 values.
    embedding: list[float] | str


class EmbeddingsUsage(msgspec.Struct, kw_only=True, gc=False):
    """Input tokens (the only tokens an embedding spends) and the cost."""

    prompt_tokens: int
    total_tokens: int
    cost: Credits


class EmbeddingsResponse(msgspec.Struct, kw_only=True, gc=False):
    """The vectors, one per input, in input order."""

    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingsUsage
    #: The generation id (the key to GET /v1/generation?id=).
    id: str
    provider: str
