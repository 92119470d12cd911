"""JSON out: one msgspec encoder (decimals as JSON numbers) and the response helper."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any, Final

import msgspec
from litestar import Response
from litestar.types import ASGIApp, HTTPResponseBodyEvent, HTTPResponseStartEvent, Receive, Scope, Send

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


class EncodedJSON(Response[bytes]):
    """A JSON body encoded here, sent as it is.

    A `Response` to Litestar (the routes' annotations document their schemas), but it is its own
    ASGI app: `to_asgi_response` returns it as it is, with its header list built once, instead of a
    new `ASGIResponse` that re-encodes the headers (about 5 % of a chat completion's CPU in the
    gateway, by py-spy). The routes set no cookies, background tasks or route-level headers, which
    `to_asgi_response` would otherwise merge in.
    """

    __slots__ = ("_raw_headers", "_status")

    def __init__(self, body: bytes, headers: Mapping[str, str] | None = None, status_code: int = 200) -> None:
        super().__init__(body, status_code=status_code, media_type="application/json")
        raw = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        if headers:
            raw.extend((name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in headers.items())
        self._raw_headers = raw
        self._status = status_code

    def to_asgi_response(self, app: Any, request: Any, **kwargs: Any) -> ASGIApp:  # type: ignore[override]
        return self

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: HTTPResponseStartEvent = {"type": "http.response.start", "status": self._status,
                                         "headers": self._raw_headers}
        await send(start)
        body: HTTPResponseBodyEvent = {"type": "http.response.body", "more_body": False,
                                       "body": b"" if scope.get("method") == "HEAD" else self.content}
        await send(body)


def json_response(content: Any, headers: Mapping[str, str] | None = None, status_code: int = 200) -> Response[Any]:
    """A JSON response whose body is encoded here (the route's annotation documents its schema)."""
    return EncodedJSON(encode(content), headers, status_code)
