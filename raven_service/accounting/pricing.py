"""Costs as exact decimals from catalogue prices."""

from __future__ import annotations

from decimal import Decimal

from raven_service.core.types import ModelInfo

_MILLION = Decimal(1_000_000)
QUANTUM = Decimal("1e-12")


def chat_cost(model: ModelInfo, prompt_tokens: int, completion_tokens: int) -> Decimal:
    cost = (model.price_input_per_mtok * prompt_tokens + model.price_output_per_mtok * completion_tokens) / _MILLION
    return cost.quantize(QUANTUM).normalize() if cost else Decimal(0)


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
