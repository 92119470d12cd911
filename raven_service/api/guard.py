"""The gRPC port's request guard: message size and decodability, answered like any bad request.

grpc's own limit (``grpc.max_receive_message_length``) answers RESOURCE_EXHAUSTED with a bare text,
and a message protobuf cannot decode (too deeply nested, truncated) is an INTERNAL error inside
grpc before any servicer runs. SPEC §10 wants INVALID_ARGUMENT with ErrorInfo reason
``PAYLOAD_TOO_LARGE`` (the gateway's 413) for a message above ``max_body_bytes``, and
INVALID_ARGUMENT for an undecodable one. This interceptor wraps each unary-request handler's
deserializer so that such a message becomes a marker instead of an exception, and the handler then
aborts with the rich status; valid requests pass through unchanged.

The grpc core limit is set above ``max_body_bytes`` (see `core_limit`) so that the guard, not the
core, sees messages up to twice that size.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from raven_service.api.errors import abort
from raven_service.core.errors import InvalidArgument, PayloadTooLarge, RavenError

__all__ = ["RequestGuard", "core_limit"]


def core_limit(max_bytes: int) -> int:
    """grpc's own receive limit: room above `max_bytes` for the guard to answer PAYLOAD_TOO_LARGE."""
    return max(2 * max_bytes, max_bytes + 1024 * 1024)


class _Rejected:
    """Stands in for a request that must not reach the servicer."""

    __slots__ = ("error",)

    def __init__(self, error: RavenError) -> None:
        self.error = error


def _deserializer(inner: Callable[[bytes], Any] | None, max_bytes: int) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        if len(data) > max_bytes:
            return _Rejected(PayloadTooLarge(
                f"The request message is {len(data):,} bytes; at most {max_bytes:,} are accepted."))
        if inner is None:
            return data
        try:
            return inner(data)
        except (DecodeError, RecursionError, ValueError, TypeError):
            return _Rejected(InvalidArgument(
                "The request message cannot be decoded (malformed, or nested deeper than 64 levels).",
                code="invalid_value"))

    return deserialize


def _unary_unary(inner: Callable[[Any, Any], Awaitable[Any]]) -> Callable[[Any, Any], Awaitable[Any]]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if type(request) is _Rejected:
            await abort(context, request.error)
        return await inner(request, context)

    return behavior


def _unary_stream(inner: Callable[[Any, Any], AsyncIterator[Any]]) -> Callable[[Any, Any], AsyncIterator[Any]]:
    async def behavior(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        if type(request) is _Rejected:
            await abort(context, request.error)
        async for message in inner(request, context):
            yield message

    return behavior


class RequestGuard(grpc.aio.ServerInterceptor):
    """Wraps every unary-request handler (see the module docstring); handlers are wrapped once."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._wrapped: dict[str, tuple[Any, Any]] = {}

    def wrap(self, handler: Any) -> Any:
        """The handler with the guarded deserializer (streaming-request handlers unchanged)."""
        if handler is None or handler.request_streaming:
            return handler
        deserialize = _deserializer(handler.request_deserializer, self.max_bytes)
        if handler.response_streaming:
            return handler._replace(request_deserializer=deserialize,
                                    unary_stream=_unary_stream(handler.unary_stream))
        return handler._replace(request_deserializer=deserialize, unary_unary=_unary_unary(handler.unary_unary))

    async def intercept_service(self, continuation: Any, handler_call_details: Any) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_streaming:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self.wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped
