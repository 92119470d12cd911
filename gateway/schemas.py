"""Wire types shared by several endpoints (usage, list envelopes, proto integer ranges)."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Final

import msgspec
from msgspec import UNSET, UnsetType

from gateway.encoding import decimal_number
from raven.v1 import usage_pb2

__all__ = ["CompletionTokensDetails", "Credits", "Int32", "Int64", "PromptTokensDetails", "Usage", "usage_from_proto"]

_INT32: Final = 2**31
_INT64: Final = 2**63

#: A JSON integer that fits a proto int32 (the range of the wire type, not a business limit).
Int32 = Annotated[int, msgspec.Meta(ge=-_INT32, le=_INT32 - 1)]
#: A JSON integer that fits a proto int64.
Int64 = Annotated[int, msgspec.Meta(ge=-_INT64, le=_INT64 - 1)]
#: An exact decimal amount of credits, written as a JSON number (see gateway.encoding); the schema
#: override tells Litestar, which documents Decimal as a string by default.
Credits = Annotated[
    Decimal,
    msgspec.Meta(description="Credits, an exact decimal.", extra_json_schema={"extra": {"type": "number"}}),
]


class PromptTokensDetails(msgspec.Struct, kw_only=True, gc=False):
    """Parts of ``prompt_tokens``: read from the provider's prompt cache (priced at the cached
    rate); Raven's extension ``cache_creation_tokens``: written to it (Anthropic)."""

    cached_tokens: int
    cache_creation_tokens: int | UnsetType = UNSET


class CompletionTokensDetails(msgspec.Struct, kw_only=True, gc=False):
    """Parts of ``completion_tokens``: spent on reasoning."""

    reasoning_tokens: int


class Usage(msgspec.Struct, kw_only=True, gc=False):
    """Token usage and cost of one generation."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    #: Cost in credits.
    cost: Credits
    #: Present (true) when the upstream reported no usage and Raven counted the tokens.
    estimated: bool | UnsetType = UNSET
    prompt_tokens_details: PromptTokensDetails | UnsetType = UNSET
    completion_tokens_details: CompletionTokensDetails | UnsetType = UNSET


def usage_from_proto(usage: usage_pb2.Usage, *, details: bool = False) -> Usage:
    """The JSON usage object of a proto Usage; with `details`, OpenAI's token details objects
    (always written, as OpenAI does for chat completions)."""
    out = Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
        cost=decimal_number(usage.cost),
        estimated=True if usage.estimated else UNSET,
    )
    if details:
        out.prompt_tokens_details = PromptTokensDetails(
            cached_tokens=usage.cached_tokens,
            cache_creation_tokens=usage.cache_creation_tokens if usage.cache_creation_tokens else UNSET,
        )
        out.completion_tokens_details = CompletionTokensDetails(reasoning_tokens=usage.reasoning_tokens)
    return out
