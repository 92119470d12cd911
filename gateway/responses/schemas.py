"""OpenAI Responses API wire types (request, input items, response object) as msgspec Structs.

The request's top level is decoded strictly (gateway.body); `input` items and `tools` are decoded
one by one in gateway.responses.convert, so that a bad item is a 400 naming it (``input[2].role``)
and tool types Raven does not serve (``web_search``, ``namespace``, ...) are tolerated.
Response objects are plain dicts built in convert (their shape varies per item type).
"""

from __future__ import annotations

from typing import Any

import msgspec

from gateway.schemas import Int32

__all__ = [
    "ContentPart",
    "FunctionCallItem",
    "FunctionCallOutputItem",
    "MessageItem",
    "ReasoningItem",
    "ReasoningParam",
    "ResponsesRequest",
    "TextFormat",
    "TextParam",
]


class TextFormat(msgspec.Struct, kw_only=True):
    """``text.format``: ``{"type": "text" | "json_object"}`` or ``{"type": "json_schema", name, schema, ...}``."""

    type: str
    name: str | None = None
    description: str | None = None
    schema: dict[str, Any] | None = None
    strict: bool | None = None


class TextParam(msgspec.Struct, kw_only=True):
    """``text``: the output format (and a verbosity hint)."""

    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningParam(msgspec.Struct, kw_only=True):
    """``reasoning``: how much to think, and whether to summarise it."""

    effort: str | None = None
    summary: str | None = None
    #: The former name of ``summary``.
    generate_summary: str | None = None


class ResponsesRequest(msgspec.Struct, kw_only=True, dict=True):
    """The body of POST /v1/responses.

    Any other top-level key is passed to the service in ``extra_body`` as for chat (providers that
    do not support it never see it).
    """

    model: str
    #: A text (one user message) or a list of input items.
    input: str | list[Any] | None = None
    instructions: str | None = None
    tools: list[Any] | None = None
    tool_choice: str | dict[str, Any] | None = None
    text: TextParam | None = None
    reasoning: ReasoningParam | None = None
    max_output_tokens: Int32 | None = None
    temperature: float | None = None
    top_p: float | None = None
    parallel_tool_calls: bool | None = None
    #: Keep the response for GET and previous_response_id (default true).
    store: bool | None = None
    previous_response_id: str | None = None
    stream: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    prompt_cache_key: str | None = None
    safety_identifier: str | None = None
    #: Accepted and ignored: Raven always returns what it has (e.g. reasoning.encrypted_content).
    include: list[str] | None = None
    #: Accepted; only "disabled" (the default) is served.
    truncation: str | None = None
    service_tier: str | None = None
    max_tool_calls: Int32 | None = None
    top_logprobs: Int32 | None = None
    stream_options: dict[str, Any] | None = None
    background: bool | None = None
    #: Codex CLI's per-turn client metadata: accepted, never forwarded.
    client_metadata: dict[str, Any] | None = None


# --------------------------------------------------------------------------------- input items


class ContentPart(msgspec.Struct, kw_only=True):
    """One content part of a message item (input_text, output_text, input_image, refusal, ...)."""

    type: str
    text: str | None = None
    refusal: str | None = None
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class MessageItem(msgspec.Struct, kw_only=True):
    """``{"type": "message", "role", "content"}`` (``type`` may be omitted)."""

    type: str = "message"
    id: str | None = None
    role: str
    content: str | list[ContentPart]
    status: str | None = None


class FunctionCallItem(msgspec.Struct, kw_only=True):
    """A function call the model made earlier."""

    type: str
    id: str | None = None
    call_id: str
    name: str
    arguments: str
    status: str | None = None


class FunctionCallOutputItem(msgspec.Struct, kw_only=True):
    """The result of a function call, sent back by the client."""

    type: str
    id: str | None = None
    call_id: str
    output: str | list[ContentPart]
    status: str | None = None


class SummaryPart(msgspec.Struct, kw_only=True):
    """A summary or content part of a reasoning item."""

    type: str
    text: str = ""


class ReasoningItem(msgspec.Struct, kw_only=True):
    """A reasoning item of an earlier output (its ``encrypted_content`` is sent back upstream)."""

    type: str
    id: str | None = None
    summary: list[SummaryPart] = []
    content: list[SummaryPart] | None = None
    encrypted_content: str | None = None
    status: str | None = None
