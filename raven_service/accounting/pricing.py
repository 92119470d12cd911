"""Costs as exact decimals from catalogue prices."""

from __future__ import annotations

from decimal import Decimal

from raven_service.core.types import ModelInfo

_MILLION = Decimal(1_000_000)
QUANTUM = Decimal("1e-12")


def chat_cost(model: ModelInfo, prompt_tokens: int, completion_tokens: int, *, cached_tokens: int = 0,
              cache_creation_tokens: int = 0) -> Decimal:
    """The cost of a completion. `cached_tokens` (read from a prompt cache) and
    `cache_creation_tokens` (written to one) are parts of `prompt_tokens`, priced at the model's
    cache-read / cache-write rates (the plain input rate where the catalogue names none); the rest
    of the prompt at the input rate. Reasoning tokens are completion tokens."""
    cached = max(0, min(cached_tokens, prompt_tokens))
    written = max(0, min(cache_creation_tokens, prompt_tokens - cached))
    plain = prompt_tokens - cached - written
    price_in = model.price_input_per_mtok
    read_price = model.price_cached_input_per_mtok if model.price_cached_input_per_mtok is not None else price_in
    write_price = model.price_cache_write_per_mtok if model.price_cache_write_per_mtok is not None else price_in
    cost = (price_in * plain + read_price * cached + write_price * written
            + model.price_output_per_mtok * completion_tokens) / _MILLION
    return cost.quantize(QUANTUM).normalize() if cost else Decimal(0)


def embedding_cost(model: ModelInfo, input_tokens: int) -> Decimal:
    """Embeddings are priced per input token."""
    return chat_cost(model, input_tokens, 0)


def image_cost(model: ModelInfo, n: int) -> Decimal:
    return model.price_per_image * n


def video_cost(model: ModelInfo, seconds: int) -> Decimal:
    return model.price_per_video_second * seconds


def fmt(amount: Decimal) -> str:
    """A decimal as a plain string without exponent ("0.00000336")."""
    if not amount:
        return "0"
    text = format(amount.normalize(), "f")
    return text
