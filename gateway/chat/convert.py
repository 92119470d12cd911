"""Chat JSON <-> raven.v1 protos: pure functions, built field by field (no json_format)."""

from __future__ import annotations

import logging
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError, EncodeError
from msgspec import UNSET

from gateway.body import extra_fields
from gateway.chat.schemas import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessage,
    Choice,
    ChunkChoice,
    ChunkDelta,
    ContentPart,
    ResponseFormat,
    StreamError,
    ToolCall,
    ToolCallDelta,
    ToolCallDeltaFunction,
    ToolCallFunction,
    ToolDefinition,
)
from gateway.encoding import encode
from gateway.errors import ApiError
from gateway.schemas import usage_from_proto
from gateway.sse import data_event
from raven.v1 import chat_pb2, chat_service_pb2

__all__ = ["ChunkRenderer", "chat_request", "chunk_from_proto", "completion_from_proto"]

logger = logging.getLogger("raven.gateway")

M = TypeVar("M", chat_service_pb2.CreateChatCompletionRequest, chat_service_pb2.StreamChatCompletionRequest)

#: The deepest JSON value a google.protobuf.Struct field may carry (tool parameters, a response
#: schema, extra body fields): each object level costs protobuf three message levels and its
#: decoders stop at 100, so deeper values could not cross the wire. Also the schema limit (SPEC §10).
MAX_STRUCT_DEPTH = 32

#: Optional scalar fields copied as they are when present.
_SCALARS = ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "user")


# ------------------------------------------------------------------------------- JSON -> proto


def chat_request(body: ChatCompletionRequest, message_type: type[M]) -> M:
    """The Create/StreamChatCompletionRequest for a request body (both have the same fields).

    Raises:
        ApiError: 400 when a value cannot be represented in the proto.
    """
    try:
        return message_type(**_request_fields(body))
    except (ValueError, TypeError, OverflowError, DecodeError, EncodeError, RecursionError):
        raise ApiError(400, "Invalid request: a value cannot be represented.", code="invalid_value") from None


def json_depth(value: Any) -> int:
    """The nesting depth of a JSON value (a scalar is 0, ``{}`` is 1), without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        depth += 1
        deepest = max(deepest, depth)
        stack.extend((child, depth) for child in children)
    return deepest


def struct_value(value: dict[str, Any], param: str) -> dict[str, Any]:
    """``value`` if a google.protobuf.Struct can carry it, else the 400 naming ``param`` (shared by
    every dialect that sends a JSON schema or free JSON through a Struct)."""
    if json_depth(value) > MAX_STRUCT_DEPTH:
        raise ApiError(400, f"'{param}' is nested too deeply (at most {MAX_STRUCT_DEPTH} levels).",
                       code="invalid_value", param=param)
    return value


def _request_fields(body: ChatCompletionRequest) -> dict[str, Any]:
    fields: dict[str, Any] = {"model": body.model, "messages": [_message(m) for m in body.messages]}
    if body.max_tokens is not None:
        fields["max_tokens"] = body.max_tokens
    if body.max_completion_tokens is not None:
        fields["max_completion_tokens"] = body.max_completion_tokens
    if body.reasoning_effort is not None:
        fields["reasoning"] = chat_pb2.ReasoningConfig(effort=body.reasoning_effort)
    for name in _SCALARS:
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if body.stop is not None:
        fields["stop"] = [body.stop] if isinstance(body.stop, str) else body.stop
    if body.tools:
        fields["tools"] = [_tool(tool, i) for i, tool in enumerate(body.tools)]
    if body.tool_choice is not None:
        choice = body.tool_choice
        fields["tool_choice"] = (
            chat_pb2.ToolChoice(mode=choice)
            if isinstance(choice, str)
            else chat_pb2.ToolChoice(function_name=choice.function.name)
        )
    if body.response_format is not None:
        fields["response_format"] = _response_format(body.response_format)
    if body.models:
        fields["models"] = body.models
    if extra := extra_fields(body):
        for key, value in extra.items():
            struct_value({key: value}, key)
        fields["extra_body"] = extra
    return fields


def _message(message: ChatMessage) -> chat_pb2.ChatMessage:
    proto = chat_pb2.ChatMessage(role=message.role)
    content = message.content
    if isinstance(content, str):
        proto.content = content
    elif content:
        proto.content_parts.extend([_part(part) for part in content])
    if message.name is not None:
        proto.name = message.name
    if message.tool_call_id is not None:
        proto.tool_call_id = message.tool_call_id
    if message.tool_calls:
        proto.tool_calls.extend(
            [
                chat_pb2.ToolCall(id=c.id, type=c.type, name=c.function.name, arguments=c.function.arguments)
                for c in message.tool_calls
            ]
        )
    if message.reasoning_content:
        proto.reasoning_content = message.reasoning_content
    return proto


def _part(part: ContentPart) -> chat_pb2.ContentPart:
    proto = chat_pb2.ContentPart(type=part.type)
    if part.text is not None:
        proto.text = part.text
    image = part.image_url
    if isinstance(image, str):
        proto.image_url = image
    elif image is not None:
        proto.image_url = image.url
        if image.detail is not None:
            proto.detail = image.detail
    return proto


def _tool(tool: ToolDefinition, index: int) -> chat_pb2.Tool:
    function = tool.function
    proto = chat_pb2.Tool(type=tool.type, name=function.name)
    if function.description is not None:
        proto.description = function.description
    if function.parameters is not None:
        proto.parameters.update(struct_value(function.parameters, f"tools[{index}].function.parameters"))
    if function.strict is not None:
        proto.strict = function.strict
    return proto


def _response_format(fmt: ResponseFormat) -> chat_pb2.ResponseFormat:
    proto = chat_pb2.ResponseFormat(type=fmt.type)
    if (spec := fmt.json_schema) is not None:
        proto.json_schema.name = spec.name
        if spec.description is not None:
            proto.json_schema.description = spec.description
        if spec.schema is not None:
            proto.json_schema.schema.update(struct_value(spec.schema, "response_format.json_schema.schema"))
        if spec.strict is not None:
            proto.json_schema.strict = spec.strict
    return proto


# ------------------------------------------------------------------------------- proto -> JSON


def completion_from_proto(reply: chat_service_pb2.CreateChatCompletionResponse) -> ChatCompletion:
    """The ``chat.completion`` JSON object of a unary reply."""
    return ChatCompletion(
        id=reply.id,
        created=reply.created,
        model=reply.model,
        choices=[_choice(choice) for choice in reply.choices],
        usage=usage_from_proto(reply.usage, details=True) if reply.HasField("usage") else None,
        provider=reply.provider or None,
    )


def _choice(choice: chat_pb2.ChatChoice) -> Choice:
    message = choice.message
    tool_calls = [
        ToolCall(id=c.id, type=c.type or "function", function=ToolCallFunction(name=c.name, arguments=c.arguments))
        for c in message.tool_calls
    ]
    return Choice(
        index=choice.index,
        message=AssistantMessage(
            role="assistant",
            content=message.content if message.HasField("content") else None,
            tool_calls=tool_calls or UNSET,
            reasoning_content=message.reasoning_content if message.reasoning_content else UNSET,
        ),
        finish_reason=choice.finish_reason or None,
        native_finish_reason=choice.native_finish_reason or None,
    )


def chunk_from_proto(message: chat_service_pb2.StreamChatCompletionResponse) -> ChatCompletionChunk:
    """The ``chat.completion.chunk`` JSON object of one stream message."""
    chunk = ChatCompletionChunk(
        id=message.id,
        created=message.created,
        model=message.model,
        choices=[_chunk_choice(choice) for choice in message.choices],
    )
    if message.HasField("usage"):
        chunk.usage = usage_from_proto(message.usage, details=True)
    if message.HasField("error"):
        error = message.error
        chunk.error = StreamError(message=error.message, type=error.type or "api_error", code=error.code or None)
    if message.provider:
        chunk.provider = message.provider
    return chunk


def _chunk_choice(choice: chat_pb2.ChunkChoice) -> ChunkChoice:
    delta = choice.delta
    out = ChunkDelta()
    if delta.HasField("role"):
        out.role = delta.role
    if delta.HasField("content"):
        out.content = delta.content
    if delta.HasField("reasoning_content"):
        out.reasoning_content = delta.reasoning_content
    if delta.tool_calls:
        out.tool_calls = [_tool_call_delta(call) for call in delta.tool_calls]
    result = ChunkChoice(
        index=choice.index,
        delta=out,
        finish_reason=choice.finish_reason if choice.HasField("finish_reason") else None,
    )
    if choice.HasField("native_finish_reason"):
        result.native_finish_reason = choice.native_finish_reason
    return result


def _tool_call_delta(call: chat_pb2.ToolCallDelta) -> ToolCallDelta:
    function = ToolCallDeltaFunction()
    if call.HasField("name"):
        function.name = call.name
    if call.HasField("arguments"):
        function.arguments = call.arguments
    out = ToolCallDelta(index=call.index, function=function)
    if call.HasField("id"):
        out.id = call.id
    if call.HasField("type"):
        out.type = call.type
    return out


class ChunkRenderer:
    """Renders one stream's messages as SSE events; remembers id/model/created for a final error."""

    __slots__ = ("created", "id", "model")

    def __init__(self) -> None:
        """Start with no message seen."""
        self.id = ""
        self.model = ""
        self.created = 0

    def render(self, message: chat_service_pb2.StreamChatCompletionResponse) -> bytes:
        """One message -> one ``data:`` event."""
        if message.id:
            self.id, self.model, self.created = message.id, message.model, message.created
        return data_event(encode(chunk_from_proto(message)))

    def render_error(self, exc: BaseException) -> bytes:
        """The call failed after the headers went out -> a chunk with finish_reason "error"."""
        if isinstance(exc, grpc.aio.AioRpcError):
            error = ApiError.from_rpc_error(exc)
        else:
            logger.error("chat stream failed", exc_info=exc)
            error = ApiError(500, "The server had an error while processing your request.", code="internal_error")
        chunk = ChatCompletionChunk(
            id=self.id,
            created=self.created,
            model=self.model,
            choices=[ChunkChoice(index=0, delta=ChunkDelta(), finish_reason="error")],
            error=StreamError(message=error.message, type=error.type, code=error.code),
        )
        return data_event(encode(chunk))
