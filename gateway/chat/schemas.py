"""OpenAI chat completion wire types (request, response, stream chunk) as msgspec Structs.

Request Structs type-check strictly (see gateway.body) but do not check ranges or vocabularies
(temperature bounds, known roles, known models): the service does, and answers INVALID_ARGUMENT.
Response Structs omit ``UNSET`` fields and always write the others (``null`` included).
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.schemas import Int32, Int64, Usage

__all__ = [
    "AssistantMessage",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessage",
    "Choice",
    "ChunkChoice",
    "ChunkDelta",
    "ContentPart",
    "StreamError",
    "ToolCall",
    "ToolCallDelta",
    "ToolDefinition",
]

# ------------------------------------------------------------------------------------ request


class ImageUrl(msgspec.Struct, kw_only=True):
    """The image of an ``image_url`` content part."""

    url: str
    detail: str | None = None


class ContentPart(msgspec.Struct, kw_only=True):
    """One part of a multi-part message: ``{"type": "text", "text"}`` or ``{"type": "image_url", ...}``."""

    type: str
    text: str | None = None
    image_url: ImageUrl | str | None = None


class FunctionCall(msgspec.Struct, kw_only=True):
    """The function of a tool call in an assistant message."""

    name: str
    #: The arguments as JSON text, exactly as the model produced them.
    arguments: str


class MessageToolCall(msgspec.Struct, kw_only=True):
    """A tool call made by the assistant earlier in the conversation."""

    id: str
    type: str = "function"
    function: FunctionCall


class ChatMessage(msgspec.Struct, kw_only=True):
    """One message of the conversation."""

    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[MessageToolCall] | None = None
    #: The reasoning of an earlier assistant turn (DeepSeek / vLLM ``reasoning_content``).
    reasoning_content: str | None = None


class FunctionDefinition(msgspec.Struct, kw_only=True):
    """A function the model may call."""

    name: str
    description: str | None = None
    #: The JSON Schema of the arguments.
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDefinition(msgspec.Struct, kw_only=True):
    """A tool (``type`` is ``"function"``)."""

    type: str = "function"
    function: FunctionDefinition


class FunctionName(msgspec.Struct, kw_only=True):
    """Names the function a named tool choice forces."""

    name: str


class NamedToolChoice(msgspec.Struct, kw_only=True):
    """``{"type": "function", "function": {"name": ...}}``."""

    type: str = "function"
    function: FunctionName


class JsonSchemaFormat(msgspec.Struct, kw_only=True):
    """The schema of a ``json_schema`` response format."""

    name: str = ""
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class ResponseFormat(msgspec.Struct, kw_only=True):
    """``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", "json_schema": {...}}``."""

    type: str
    json_schema: JsonSchemaFormat | None = None


class ChatCompletionRequest(msgspec.Struct, kw_only=True, dict=True):
    """The body of POST /v1/chat/completions.

    Any other top-level key (such as the SDK's ``extra_body`` entries) is passed to the service in
    ``extra_body``; providers that do not support it never see it.
    """

    model: str
    messages: list[ChatMessage]
    stream: bool | None = None
    max_tokens: Int32 | None = None
    #: OpenAI's newer name for ``max_tokens``; used when ``max_tokens`` is absent, and sent to
    #: OpenAI-compatible upstreams under this name.
    max_completion_tokens: Int32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: Int64 | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: str | NamedToolChoice | None = None
    response_format: ResponseFormat | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    user: str | None = None
    #: Fallback models tried in order after ``model`` (OpenRouter-style).
    models: list[str] | None = None
    #: Accepted for compatibility and ignored: the final chunk of a stream always carries usage.
    stream_options: dict[str, Any] | None = None
    #: How much a reasoning model thinks: none, minimal, low, medium, high (mapped per provider).
    reasoning_effort: str | None = None


# ----------------------------------------------------------------------------------- response


class ToolCallFunction(msgspec.Struct, kw_only=True, gc=False):
    """The function part of a tool call."""

    name: str
    arguments: str


class ToolCall(msgspec.Struct, kw_only=True, gc=False):
    """A tool call in a completion."""

    id: str
    type: str
    function: ToolCallFunction


class AssistantMessage(msgspec.Struct, kw_only=True, gc=False):
    """The message of a completion choice."""

    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | UnsetType = UNSET
    #: The model's reasoning, where the provider returns it (DeepSeek-style ``reasoning_content``).
    reasoning_content: str | UnsetType = UNSET


class Choice(msgspec.Struct, kw_only=True, gc=False):
    """A completion choice."""

    index: int
    message: AssistantMessage
    finish_reason: str | None
    native_finish_reason: str | None
    logprobs: None = None


class ChatCompletion(msgspec.Struct, kw_only=True, gc=False):
    """A ``chat.completion``."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    usage: Usage | None
    provider: str | None
    system_fingerprint: None = None


class ToolCallDeltaFunction(msgspec.Struct, kw_only=True, gc=False):
    """A fragment of a tool call's function."""

    name: str | UnsetType = UNSET
    arguments: str | UnsetType = UNSET


class ToolCallDelta(msgspec.Struct, kw_only=True, gc=False):
    """A tool-call fragment: index, id and name first, arguments in pieces."""

    index: int
    id: str | UnsetType = UNSET
    type: str | UnsetType = UNSET
    function: ToolCallDeltaFunction


class ChunkDelta(msgspec.Struct, kw_only=True, gc=False):
    """The incremental part of a streamed message."""

    role: str | UnsetType = UNSET
    content: str | UnsetType = UNSET
    reasoning_content: str | UnsetType = UNSET
    tool_calls: list[ToolCallDelta] | UnsetType = UNSET


class ChunkChoice(msgspec.Struct, kw_only=True, gc=False):
    """A choice of a stream chunk."""

    index: int
    delta: ChunkDelta
    finish_reason: str | None
    native_finish_reason: str | UnsetType = UNSET


class StreamError(msgspec.Struct, kw_only=True, gc=False):
    """A failure reported inside a stream after HTTP 200 was sent."""

    message: str
    type: str
    code: str | None


class ChatCompletionChunk(msgspec.Struct, kw_only=True, gc=False):
    """A ``chat.completion.chunk`` (one SSE event)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | UnsetType = UNSET
    error: StreamError | UnsetType = UNSET
    provider: str | UnsetType = UNSET
