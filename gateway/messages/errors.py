"""Errors of the Anthropic routes in Anthropic's shape: ``{"type": "error", "error": {"type", "message"}}``.

The HTTP status, the message and the headers (``retry-after``, ``x-ratelimit-*``) are the ones
gateway.errors chooses for every route (one translation of gRPC statuses, in one place); only
the body differs. The error ``type`` follows Anthropic's table for the status.
"""

from __future__ import annotations

from typing import Any, Final

from litestar import Request, Response
from litestar.types import ExceptionHandlersMap

from gateway.backend import REQUEST_ID_STATE_KEY
from gateway.encoding import encode
from gateway.errors import EXCEPTION_HANDLERS, ApiError, as_api_error
from gateway.messages.schemas import AnthropicError, AnthropicErrorBody

__all__ = ["ANTHROPIC_EXCEPTION_HANDLERS", "anthropic_error_type", "error_body", "error_event"]

#: Anthropic's error ``type`` by HTTP status (https://docs.anthropic.com/en/api/errors).
_TYPE_BY_STATUS: Final[dict[int, str]] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    503: "overloaded_error",
    504: "timeout_error",
    529: "overloaded_error",
}


def anthropic_error_type(status_code: int) -> str:
    """The Anthropic error ``type`` for an HTTP status."""
    if (kind := _TYPE_BY_STATUS.get(status_code)) is not None:
        return kind
    return "api_error" if status_code >= 500 else "invalid_request_error"


def error_body(error: ApiError, request_id: str | None = None) -> bytes:
    """The JSON error body for ``error``."""
    body = AnthropicErrorBody(error=AnthropicError(type=anthropic_error_type(error.status_code), message=error.message))
    if request_id:
        body.request_id = request_id
    return encode(body)


def error_event(error: ApiError) -> bytes:
    """An SSE ``error`` event (a failure after the stream started)."""
    return b"event: error\ndata: " + error_body(error) + b"\n\n"


def _handle(request: Request[Any, Any, Any], exc: Exception) -> Response[bytes]:
    error = as_api_error(request, exc)
    rid = request.scope["state"].get(REQUEST_ID_STATE_KEY)
    return Response(
        content=error_body(error, rid),
        status_code=error.status_code,
        headers=error.headers,
        media_type="application/json",
    )


#: ``exception_handlers=`` of the Anthropic routes. Litestar picks the handler of the closest class
#: in the exception's MRO across all layers, so every key of the app's own table is overridden.
ANTHROPIC_EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {key: _handle for key in EXCEPTION_HANDLERS}
