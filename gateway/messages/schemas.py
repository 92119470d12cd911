"""Anthropic Messages API wire types (request, response, stream events, errors) as msgspec Structs.

Content blocks are decoded as plain JSON objects (``dict``), not as typed Structs: Anthropic adds
block types and fields all the time (``server_tool_use``, ``citations``, ``cache_control`` with a
``ttl`` ...), and Raven passes the blocks of an Anthropic client to Anthropic upstreams verbatim.
`gateway.messages.convert` checks the fields it translates and names the one at fault in a 400.
Other top-level keys (``context_management``, ``output_config``, ``service_tier`` ...) are kept
(``dict=True``) and travel as ``extra_body``.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec
from msgspec import UNSET, UnsetType

from gateway.schemas import Int32

__all__ = [
    "AnthropicError",
    "AnthropicErrorBody",
    "CountTokensRequest",
    "CountTokensResponse",
    "Message",
    "MessagesRequest",
    "MessagesUsage",
]

# ------------------------------------------------------------------------------------ request


class InputMessage(msgspec.Struct, kw_only=True):
    """One turn: ``role`` user or assistant (a ``system`` entry is folded into the system prompt),
    ``content`` a string or a list of content blocks."""

    role: str
    content: str | list[dict[str, Any]]


class RequestMetadata(msgspec.Struct, kw_only=True):
    """``metadata``: ``user_id`` is an opaque id of the end user (forwarded as the domain's ``user``)."""

    user_id: str | None = None


class ThinkingConfig(msgspec.Struct, kw_only=True, omit_defaults=True):
    """``thinking``: ``{"type": "enabled", "budget_tokens": N}``, ``adaptive`` or ``disabled``."""

    type: str
    budget_tokens: Int32 | None = None


class ToolChoice(msgspec.Struct, kw_only=True):
    """``tool_choice``: ``auto``, ``any``, ``none`` or ``{"type": "tool", "name": ...}``."""

    type: str
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class _CommonRequest(msgspec.Struct, kw_only=True, dict=True):
    model: str
    messages: list[InputMessage]
    system: str | list[dict[str, Any]] | None = None
    #: Tool definitions as objects: custom tools (``name``, ``description``, ``input_schema``,
    #: ``cache_control``, ``defer_loading`` ...) and server tools (``type``: ``web_search_...``).
    tools: list[dict[str, Any]] | None = None
    tool_choice: ToolChoice | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(_CommonRequest, kw_only=True, dict=True):
    """The body of POST /v1/messages."""

    max_tokens: Int32
    stream: bool | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: Int32 | None = None
    metadata: RequestMetadata | None = None


class CountTokensRequest(_CommonRequest, kw_only=True, dict=True):
    """The body of POST /v1/messages/count_tokens."""


# ----------------------------------------------------------------------------------- response


class MessagesUsage(msgspec.Struct, kw_only=True, gc=False):
    """Anthropic ``usage``: ``input_tokens`` excludes the cache reads and writes counted beside it."""

    input_tokens: int
    output_tokens: int
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0


class Message(msgspec.Struct, kw_only=True, gc=False):
    """A ``message`` object (the unary reply; also the ``message`` of ``message_start``)."""

    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    #: Content blocks: text, thinking, redacted_thinking, tool_use.
    content: list[dict[str, Any]]
    stop_reason: str | None
    stop_sequence: str | None = None
    usage: MessagesUsage
    #: Raven's addition: the provider that served the request.
    provider: str | UnsetType = UNSET


class CountTokensResponse(msgspec.Struct, kw_only=True, gc=False):
    """The reply of POST /v1/messages/count_tokens."""

    input_tokens: int


class AnthropicError(msgspec.Struct, kw_only=True, gc=False):
    """The ``error`` object of an Anthropic error body."""

    type: str
    message: str


class AnthropicErrorBody(msgspec.Struct, kw_only=True, gc=False):
    """Anthropic's error body: ``{"type": "error", "error": {"type", "message"}}``."""

    type: Literal["error"] = "error"
    error: AnthropicError
    request_id: str | UnsetType = UNSET
