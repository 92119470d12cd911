"""JSON out: one msgspec encoder (decimals as JSON numbers) and the response helper."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec
from litestar import Response

__all__ = ["decimal_number", "encode", "json_response"]

_ENCODER: Final = msgspec.json.Encoder(decimal_format="number")

#: Serialise a msgspec Struct (or builtins) to JSON bytes; ``Decimal`` becomes a JSON number.
encode: Final = _ENCODER.encode

_ZERO: Final = Decimal(0)


def decimal_number(text: str) -> Decimal:
    """An exact decimal string from a proto (``"0.000123"``) as a Decimal; "" or junk -> 0."""
    if not text:
        return _ZERO
    try:
        value = Decimal(text)
    except InvalidOperation:
        return _ZERO
    return value if value.is_finite() else _ZERO


def json_response(content: Any, headers: Mapping[str, str] | None = None, status_code: int = 200) -> Response[Any]:
    """A JSON response whose body is encoded here (the route's annotation documents its schema)."""
    return Response(content=encode(content), status_code=status_code, headers=headers, media_type="application/json")
