"""POST /v1/messages and POST /v1/messages/count_tokens: Anthropic's Messages API over ChatService.

Auth is the same key as every route, sent as ``x-api-key`` (what Anthropic clients send with
``ANTHROPIC_API_KEY``) or ``Authorization: Bearer`` (``ANTHROPIC_AUTH_TOKEN``); the auth-first hook
of the /v1 router applies unchanged. ``anthropic-version`` is accepted whatever its value (Raven
speaks one version of the wire format) and ``anthropic-beta`` values are passed to Anthropic
upstreams. Errors, including the 401 of a bad key and the 429s of limits, have Anthropic's shape.
"""

from __future__ import annotations

from typing import Any, Final

import grpc
from litestar import Controller, Request, post
from litestar.openapi import ResponseSpec
from litestar.params import JSONBody
from litestar.response import Response, Stream

from gateway.backend import DEADLINE, backend_of, call_metadata, settings_of, unary
from gateway.body import StrictJSON
from gateway.encoding import json_response
from gateway.errors import as_api_error, forwarded_headers
from gateway.messages.convert import (
    PING,
    EventRenderer,
    count_request,
    message_from_proto,
    messages_request,
    rename_fields,
    split_betas,
)
from gateway.messages.errors import ANTHROPIC_EXCEPTION_HANDLERS
from gateway.messages.schemas import (
    AnthropicErrorBody,
    CountTokensRequest,
    CountTokensResponse,
    Message,
    MessagesRequest,
)
from gateway.openapi import streaming_operation
from gateway.sse import EventStream, RpcStream, open_stream, sse_events
from raven.v1 import chat_service_pb2

__all__ = ["MessagesController"]

SSE_HEADERS: Final = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}

_ERRORS: Final = {
    400: "Malformed JSON, wrong types or a value the service rejects (invalid_request_error).",
    401: "Missing, invalid or revoked API key (authentication_error).",
    402: "The key has no credits left (billing_error).",
    403: "The key may not do this (permission_error).",
    404: "Unknown model (not_found_error).",
    413: "The request body is too large (request_too_large).",
    429: "Rate or concurrency limit exceeded; see retry-after (rate_limit_error).",
    500: "Internal error (api_error).",
    502: "Upstream provider error after fallbacks (api_error).",
    503: "Raven is temporarily unavailable (overloaded_error).",
    504: "Upstream timeout (timeout_error).",
}
#: Every error of these routes has Anthropic's error body.
ERROR_RESPONSES: Final = {
    status: ResponseSpec(data_container=AnthropicErrorBody, description=text, generate_examples=False)
    for status, text in _ERRORS.items()
}

_DESCRIPTION = (
    "Anthropic Messages API (`anthropic-version: 2023-06-01`), for every chat model of the catalogue. "
    'Authenticate with `x-api-key` or `Authorization: Bearer`. With `"stream": true` the response is '
    "`text/event-stream` with Anthropic's events: `message_start`, `content_block_start` / `content_block_delta` "
    "/ `content_block_stop`, `message_delta` (stop_reason, usage), `message_stop`, and `ping` while waiting. "
    'Errors: `{"type": "error", "error": {"type", "message"}}`.'
)


class MessagesController(Controller):
    """Anthropic Messages API."""

    path = "/messages"
    tags = ["messages"]
    exception_handlers = ANTHROPIC_EXCEPTION_HANDLERS

    @post(
        "",
        operation_id="CreateMessage",
        summary="Create a message (Anthropic Messages API)",
        description=_DESCRIPTION,
        dto=StrictJSON[MessagesRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
        operation_class=streaming_operation("SSE: Anthropic message stream events."),
    )
    async def create_message(
        self, request: Request[Any, Any, Any], data: JSONBody[MessagesRequest]
    ) -> Response[Message]:
        """Create a message (``stream: true`` answers with Anthropic's SSE events)."""
        metadata = call_metadata(request)
        betas = split_betas(request.headers.get("anthropic-beta"))
        if data.stream:
            return await _stream(request, data, metadata, betas)  # type: ignore[return-value]
        message, origins = messages_request(data, chat_service_pb2.CreateChatCompletionRequest, betas)
        reply: chat_service_pb2.CreateChatCompletionResponse
        try:
            reply, headers = await unary(backend_of(request).chat.CreateChatCompletion, message, metadata)
        except grpc.aio.AioRpcError as exc:
            raise rename_fields(as_api_error(request, exc), origins) from None
        return json_response(message_from_proto(reply), headers)

    @post(
        "/count_tokens",
        operation_id="CountMessageTokens",
        summary="Count the input tokens of a message request",
        description="Anthropic's count_tokens, with Raven's token estimator (the count admission reserves for).",
        dto=StrictJSON[CountTokensRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
    )
    async def count_tokens(
        self, request: Request[Any, Any, Any], data: JSONBody[CountTokensRequest]
    ) -> Response[CountTokensResponse]:
        """Count the input tokens of a request without creating a message."""
        reply: chat_service_pb2.CountTokensResponse
        message, origins = count_request(data)
        try:
            reply, headers = await unary(backend_of(request).chat.CountTokens, message, call_metadata(request))
        except grpc.aio.AioRpcError as exc:
            raise rename_fields(as_api_error(request, exc), origins) from None
        return json_response(CountTokensResponse(input_tokens=reply.input_tokens), headers)


async def _stream(
    request: Request[Any, Any, Any],
    data: MessagesRequest,
    metadata: tuple[tuple[str, str], ...],
    betas: list[str],
) -> Stream:
    """Start the stream; fail with a real HTTP status if the call fails before its first message."""
    keepalive = settings_of(request).keepalive_interval
    message, origins = messages_request(data, chat_service_pb2.StreamChatCompletionRequest, betas)
    call = backend_of(request).chat.StreamChatCompletion(message, metadata=metadata, timeout=DEADLINE[0])
    stream: RpcStream[chat_service_pb2.StreamChatCompletionResponse]
    try:
        stream, first = await open_stream(call, keepalive)
    except grpc.aio.AioRpcError as exc:
        raise rename_fields(as_api_error(request, exc), origins) from None
    headers = forwarded_headers(stream.initial_metadata)
    headers.update(SSE_HEADERS)
    renderer = EventRenderer()
    events = sse_events(
        stream,
        first,
        keepalive=keepalive,
        render=renderer.render,
        render_error=renderer.render_error,
        done=b"",
        keepalive_frame=PING,
    )
    return EventStream(events, headers=headers, media_type="text/event-stream")
