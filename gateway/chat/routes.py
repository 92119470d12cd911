"""POST /v1/chat/completions: unary JSON or SSE stream over ChatService."""

from __future__ import annotations

from typing import Any, Final

from litestar import Controller, Request, post
from litestar.params import JSONBody
from litestar.response import Response, Stream

from gateway.backend import DEADLINE, backend_of, call_metadata, settings_of, unary
from gateway.body import StrictJSON
from gateway.chat.convert import ChunkRenderer, chat_request, completion_from_proto
from gateway.chat.schemas import ChatCompletion, ChatCompletionRequest
from gateway.encoding import json_response
from gateway.errors import forwarded_headers
from gateway.openapi import ERROR_RESPONSES, streaming_operation
from gateway.sse import EventStream, RpcStream, open_stream, sse_events
from raven.v1 import chat_service_pb2

__all__ = ["ChatController"]

#: Fixed headers of an SSE response (exact content type, no proxy buffering).
SSE_HEADERS: Final = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}

_DESCRIPTION = (
    'OpenAI-compatible chat completion. With `"stream": true` the response is `text/event-stream`: '
    "one `data: <chat.completion.chunk>` event per chunk (the first carries `delta.role`, the last "
    "carries `usage`), `: RAVEN PROCESSING` comments while waiting, and `data: [DONE]` at the end. "
    'A failure after the stream started is a chunk with `finish_reason: "error"` and an `error` object.'
)


class ChatController(Controller):
    """Chat completions."""

    path = "/chat/completions"
    tags = ["chat"]

    @post(
        "",
        operation_id="CreateChatCompletion",
        summary="Create a chat completion",
        description=_DESCRIPTION,
        dto=StrictJSON[ChatCompletionRequest],
        return_dto=None,
        status_code=200,
        responses=ERROR_RESPONSES,
        operation_class=streaming_operation("SSE: chat.completion.chunk events, then [DONE]."),
    )
    async def create_chat_completion(
        self, request: Request[Any, Any, Any], data: JSONBody[ChatCompletionRequest]
    ) -> Response[ChatCompletion]:
        """Create a chat completion (``stream: true`` answers with SSE)."""
        metadata = call_metadata(request)
        if data.stream:
            # Litestar documents the 200 from this annotation (ChatCompletion); streaming_operation adds the SSE
            # variant. A Stream is a Response of another content type, so the annotation cannot say it.
            return await _stream(request, data, metadata)  # type: ignore[return-value]
        message = chat_request(data, chat_service_pb2.CreateChatCompletionRequest)
        reply: chat_service_pb2.CreateChatCompletionResponse
        reply, headers = await unary(backend_of(request).chat.CreateChatCompletion, message, metadata)
        return json_response(completion_from_proto(reply), headers)


async def _stream(
    request: Request[Any, Any, Any], data: ChatCompletionRequest, metadata: tuple[tuple[str, str], ...]
) -> Stream:
    """Start the stream; fail with a real HTTP status if the call fails before its first message."""
    keepalive = settings_of(request).keepalive_interval
    message = chat_request(data, chat_service_pb2.StreamChatCompletionRequest)
    call = backend_of(request).chat.StreamChatCompletion(message, metadata=metadata, timeout=DEADLINE[0])
    stream: RpcStream[chat_service_pb2.StreamChatCompletionResponse]
    stream, first = await open_stream(call, keepalive)
    headers = forwarded_headers(stream.initial_metadata)
    headers.update(SSE_HEADERS)
    renderer = ChunkRenderer()
    events = sse_events(
        stream,
        first,
        keepalive=keepalive,
        render=renderer.render,
        render_error=renderer.render_error,
    )
    return EventStream(events, headers=headers, media_type="text/event-stream")
