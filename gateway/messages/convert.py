"""Anthropic Messages JSON <-> raven.v1 ChatService protos: pure translation, no business rules.

Request (Messages -> the domain's chat shape, field by field; the per-field table is in the README's
conformance matrix):

- ``system`` (a string or text blocks) and every ``role: "system"`` entry of ``messages`` (Claude
  Code sends one) become system messages at the start, in order.
- A user turn is split where it holds ``tool_result`` blocks: each becomes a ``tool`` message
  (``tool_call_id`` = ``tool_use_id``), the other blocks a user message of text / image parts.
  ``document`` blocks with text sources become text (best effort); PDFs, files and block types
  Raven does not know have no neutral form and are left to Anthropic upstreams.
- An assistant turn: text blocks -> ``content``, ``tool_use`` -> ``tool_calls`` (``input`` as JSON
  text), ``thinking`` -> reasoning (text + signature), ``redacted_thinking`` -> reasoning
  (``encrypted``).
- Every message also carries the exact blocks it came from (``anthropic_content``, a JSON text)
  and every tool its exact definition (``anthropic_tool``): Anthropic upstreams get those
  verbatim (cache_control, signatures, citations, server tools, unknown types), the other
  providers the translated fields.
- ``tool_choice`` auto / any / none / tool -> auto / required / none / the named function
  (``disable_parallel_tool_use`` -> ``parallel_tool_calls: false``); ``stop_sequences`` -> ``stop``;
  ``metadata.user_id`` -> ``user``; ``thinking`` -> reasoning (enabled: ``budget_tokens``; disabled:
  effort "none"; adaptive: ``output_config.effort`` when given) and, verbatim, ``thinking`` in
  ``extra_body``; ``top_k`` and every other top-level key (``context_management``, ``output_config``,
  ``service_tier`` ...) -> ``extra_body`` (passed to upstreams whose model lists it as supported).

Response: reasoning -> ``thinking`` / ``redacted_thinking`` blocks, then the text block, then
``tool_use`` blocks; finish reasons -> ``stop_reason`` (the upstream's own value when it is one of
Anthropic's); usage -> ``input_tokens`` (without cache reads and writes), ``output_tokens``,
``cache_read_input_tokens``, ``cache_creation_input_tokens``. `EventRenderer` turns a chat chunk
stream into Anthropic's event stream.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import grpc
import msgspec
from google.protobuf.message import DecodeError, EncodeError

from gateway.body import extra_fields
from gateway.chat.convert import struct_value
from gateway.encoding import encode
from gateway.errors import ApiError
from gateway.messages.errors import error_event
from gateway.messages.schemas import (
    CountTokensRequest,
    InputMessage,
    Message,
    MessagesRequest,
    MessagesUsage,
    ToolChoice,
)
from raven.v1 import chat_pb2, chat_service_pb2, usage_pb2

__all__ = [
    "EventRenderer",
    "Origins",
    "count_request",
    "message_from_proto",
    "messages_request",
    "rename_fields",
    "split_betas",
    "stop_reason",
]

logger = logging.getLogger("raven.gateway")

M = TypeVar("M", chat_service_pb2.CreateChatCompletionRequest, chat_service_pb2.StreamChatCompletionRequest)

#: Anthropic's own stop reasons: an upstream's native value among them is passed unchanged.
ANTHROPIC_STOP_REASONS: Final = frozenset(
    {"end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal", "model_context_window_exceeded"}
)
_STOP_BY_FINISH: Final = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "content_filter": "refusal",
}
_TOOL_CHOICE: Final = {"auto": "auto", "any": "required", "none": "none"}
_EFFORTS: Final = frozenset({"low", "medium", "high", "max"})
_encode_json: Final = msgspec.json.Encoder().encode
_decode_json: Final = msgspec.json.Decoder().decode


def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)




# ------------------------------------------------------------------------------- JSON -> proto


@dataclass(slots=True)
class Origins:
    """Where each message of the translated request came from in the Messages body, so that a
    field the service rejects is named as the client wrote it (``messages[3].tool_call_id`` of the
    chat shape is ``messages[1].content[0].tool_use_id`` here)."""

    #: per chat message: ``system``, ``messages[i]`` or ``messages[i].content[j]`` (a tool_result)
    messages: list[str] = field(default_factory=list)
    #: per chat message: the block each content part came from
    parts: list[list[str]] = field(default_factory=list)
    #: per chat message: the ``tool_use`` block of each tool call
    calls: list[list[str]] = field(default_factory=list)

    def add(self, origin: str, parts: list[str] | None = None, calls: list[str] | None = None) -> None:
        self.messages.append(origin)
        self.parts.append(parts or [])
        self.calls.append(calls or [])

    def param(self, param: str) -> str:
        """The Messages name of a chat-shaped request field (the same name when it has none)."""
        if (top := _TOP_PARAMS.get(param)) is not None:
            return top
        if (m := _TOOL_PARAM.match(param)) is not None:
            rest = m[2]
            for chat, ours in _TOOL_FIELDS:
                if rest.startswith(chat):
                    return f"tools[{m[1]}]{ours}{rest[len(chat) :]}"
            return f"tools[{m[1]}]"
        if (m := _MESSAGE_PARAM.match(param)) is None or int(m[1]) >= len(self.messages):
            return param
        n, rest = int(m[1]), m[2]
        base = self.messages[n]
        if rest.startswith(".tool_call_id") and ".content[" in base:
            return f"{base}.tool_use_id"
        if (sub := _INDEXED.match(rest)) is not None:
            k, tail = int(sub[2]), sub[3]
            blocks = self.calls[n] if sub[1] == "tool_calls" else self.parts[n]
            if k >= len(blocks):
                return base
            for chat, ours in _CALL_FIELDS if sub[1] == "tool_calls" else _PART_FIELDS:
                if tail.startswith(chat):
                    return blocks[k] + ours
            return blocks[k]
        if rest in (".role", ".content") and base.startswith("messages[") and ".content[" not in base:
            return base + rest
        return base


def rename_fields(error: ApiError, origins: Origins) -> ApiError:
    """``error`` with the field it names (``param`` and the quoted name in the message) as the
    Messages body spells it; a 400 of the service names fields of the chat shape."""
    if error.status_code != 400 or not error.param:
        return error
    ours = origins.param(error.param)
    if ours == error.param:
        return error
    message = error.message.replace(f"'{error.param}'", f"'{ours}'")
    return ApiError(error.status_code, message, code=error.code, param=ours, headers=error.headers)


_TOP_PARAMS: Final = {
    "stop": "stop_sequences",
    "user": "metadata.user_id",
    "max_completion_tokens": "max_tokens",
    "reasoning": "thinking",
    "reasoning.budget_tokens": "thinking.budget_tokens",
    "parallel_tool_calls": "tool_choice.disable_parallel_tool_use",
}
_TOOL_PARAM: Final = re.compile(r"^tools\[(\d+)\](?:\.function)?(.*)$")
_TOOL_FIELDS: Final = ((".parameters", ".input_schema"), (".name", ".name"), (".description", ".description"))
_MESSAGE_PARAM: Final = re.compile(r"^messages\[(\d+)\](.*)$")
_INDEXED: Final = re.compile(r"^\.(tool_calls|content|content_parts)\[(\d+)\](.*)$")
_CALL_FIELDS: Final = ((".function.arguments", ".input"), (".function.name", ".name"), (".id", ".id"))
_PART_FIELDS: Final = ((".text", ".text"), (".image_url", ".source"))


def split_betas(header: str | None) -> list[str]:
    """The values of an ``anthropic-beta`` header (comma separated)."""
    if not header:
        return []
    return [b.strip() for b in header.split(",") if b.strip()]


def _block_type(block: dict[str, Any], where: str) -> str:
    kind = block.get("type")
    if not isinstance(kind, str) or not kind:
        raise _bad(
            f"{where}.type",
            f"'{where}.type' is required: each content block is an object with a 'type'.",
            "missing_required_parameter",
        )
    return kind


def _str_field(block: dict[str, Any], name: str, where: str, *, required: bool = True) -> str:
    value = block.get(name)
    if isinstance(value, str):
        return value
    if value is None and not required:
        return ""
    if value is None:
        raise _bad(f"{where}.{name}", f"'{where}.{name}' is required.", "missing_required_parameter")
    raise _bad(f"{where}.{name}", f"'{where}.{name}' must be a string.", "invalid_type")


def _image_part(block: dict[str, Any], where: str) -> chat_pb2.ContentPart | None:
    source = block.get("source")
    if not isinstance(source, dict):
        raise _bad(f"{where}.source", f"'{where}.source' must be an object.", "invalid_type")
    kind = source.get("type")
    if kind == "base64":
        media = _str_field(source, "media_type", f"{where}.source")
        data = _str_field(source, "data", f"{where}.source")
        return chat_pb2.ContentPart(type="image_url", image_url=f"data:{media};base64,{data}")
    if kind == "url":
        return chat_pb2.ContentPart(type="image_url", image_url=_str_field(source, "url", f"{where}.source"))
    return None  # a Files API reference: Anthropic upstreams only


def _blocks_text(blocks: Any) -> str:
    """The text of a list of text blocks (other blocks skipped)."""
    if isinstance(blocks, str):
        return blocks
    if not isinstance(blocks, list):
        return ""
    return "\n".join(
        b["text"] for b in blocks if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str)
    )


def _document_text(block: dict[str, Any]) -> str:
    """Best effort: the text of a ``document`` (text or content source) or ``search_result`` block."""
    source = block.get("source")
    text = ""
    if block.get("type") == "search_result":
        text = _blocks_text(block.get("content"))
    elif isinstance(source, dict):
        if source.get("type") == "text" and isinstance(source.get("data"), str):
            text = source["data"]
        elif source.get("type") == "content":
            text = _blocks_text(source.get("content"))
    title = block.get("title")
    if text and isinstance(title, str) and title:
        return f"{title}\n\n{text}"
    return text


def _user_part(block: dict[str, Any], kind: str, where: str) -> chat_pb2.ContentPart | None:
    if kind == "text":
        return chat_pb2.ContentPart(type="text", text=_str_field(block, "text", where))
    if kind == "image":
        return _image_part(block, where)
    if kind in ("document", "search_result"):
        text = _document_text(block)
        return chat_pb2.ContentPart(type="text", text=text) if text else None
    return None  # no neutral form (server tool results, container uploads, types added later)


def _user_message(blocks: list[dict[str, Any]], parts: list[chat_pb2.ContentPart]) -> chat_pb2.ChatMessage:
    if not parts:  # nothing a non-Anthropic upstream can read: say so rather than send an empty turn
        kinds = ", ".join(sorted({b["type"] for b in blocks}))
        parts = [chat_pb2.ContentPart(type="text", text=f"[content not available to this model: {kinds}]")]
    return chat_pb2.ChatMessage(role="user", content_parts=parts, anthropic_content=_encode_json(blocks).decode())


def _pending_origin(where: str, part_blocks: list[str]) -> list[str]:
    return part_blocks or [where]


def _tool_result(block: dict[str, Any], where: str) -> chat_pb2.ChatMessage:
    call_id = _str_field(block, "tool_use_id", where)
    message = chat_pb2.ChatMessage(role="tool", tool_call_id=call_id, anthropic_content=_encode_json([block]).decode())
    content = block.get("content")
    if isinstance(content, list):
        parts = []
        for k, item in enumerate(content):
            if not isinstance(item, dict):
                raise _bad(
                    f"{where}.content[{k}]", f"'{where}.content[{k}]' must be a content block object.", "invalid_type"
                )
            part = _user_part(item, _block_type(item, f"{where}.content[{k}]"), f"{where}.content[{k}]")
            if part is not None:
                parts.append(part)
        if any(p.type != "text" for p in parts):
            message.content_parts.extend(parts)
        else:
            message.content = "\n".join(p.text for p in parts)
    elif isinstance(content, str):
        message.content = content
    elif content is not None:
        raise _bad(f"{where}.content", f"'{where}.content' must be a string or a list of blocks.", "invalid_type")
    else:
        message.content = ""
    if block.get("is_error") is True and message.HasField("content"):
        message.content = f"Error: {message.content}" if message.content else "Error"
    return message


def _user_turn(content: list[dict[str, Any]], where: str, out: list[chat_pb2.ChatMessage], origins: Origins) -> None:
    pending: list[dict[str, Any]] = []
    parts: list[chat_pb2.ContentPart] = []
    part_blocks: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        if kind == "tool_result":
            if pending:
                out.append(_user_message(pending, parts))
                origins.add(where, _pending_origin(where, part_blocks))
                pending, parts, part_blocks = [], [], []
            out.append(_tool_result(block, at))
            origins.add(at, [f"{at}.content[{k}]" for k in range(len(out[-1].content_parts))])
            continue
        pending.append(block)
        if (part := _user_part(block, kind, at)) is not None:
            parts.append(part)
            part_blocks.append(at)
    if pending:
        out.append(_user_message(pending, parts))
        origins.add(where, _pending_origin(where, part_blocks))


def _assistant_turn(content: list[dict[str, Any]], where: str, origins: Origins) -> chat_pb2.ChatMessage:
    message = chat_pb2.ChatMessage(role="assistant", anthropic_content=_encode_json(content).decode())
    texts: list[str] = []
    calls: list[str] = []
    for j, block in enumerate(content):
        at = f"{where}.content[{j}]"
        kind = _block_type(block, at)
        if kind == "text":
            texts.append(_str_field(block, "text", at))
        elif kind == "tool_use":
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise _bad(f"{at}.input", f"'{at}.input' must be an object.", "invalid_type")
            calls.append(at)
            message.tool_calls.append(
                chat_pb2.ToolCall(
                    id=_str_field(block, "id", at),
                    type="function",
                    name=_str_field(block, "name", at),
                    arguments=_encode_json(arguments).decode(),
                )
            )
        elif kind == "thinking":
            message.reasoning.append(
                chat_pb2.ReasoningPart(
                    text=_str_field(block, "thinking", at), signature=_str_field(block, "signature", at, required=False)
                )
            )
        elif kind == "redacted_thinking":
            message.reasoning.append(chat_pb2.ReasoningPart(encrypted=_str_field(block, "data", at)))
        # server_tool_use, web_search_tool_result ...: Anthropic upstreams only (anthropic_content)
    if texts:
        message.content = "".join(texts)
    origins.add(where, calls=calls)
    return message


def _system_message(system: str | list[dict[str, Any]], where: str) -> chat_pb2.ChatMessage:
    if isinstance(system, str):
        return chat_pb2.ChatMessage(role="system", content=system)
    texts = []
    for j, block in enumerate(system):
        at = f"{where}[{j}]" if where == "system" else f"{where}.content[{j}]"
        if _block_type(block, at) == "text":
            texts.append(_str_field(block, "text", at))
    return chat_pb2.ChatMessage(
        role="system", content="\n\n".join(texts), anthropic_content=_encode_json(system).decode()
    )


def _chat_messages(
    system: str | list[dict[str, Any]] | None, turns: list[InputMessage], origins: Origins
) -> list[chat_pb2.ChatMessage]:
    head: list[chat_pb2.ChatMessage] = []
    heads = Origins()
    if system is not None and system != "" and system != []:
        head.append(_system_message(system, "system"))
        heads.add("system")
    out: list[chat_pb2.ChatMessage] = []
    for i, turn in enumerate(turns):
        where = f"messages[{i}]"
        content = turn.content
        if isinstance(content, list) and not content:
            raise _bad(f"{where}.content", f"'{where}.content' must not be empty.")
        if turn.role == "system":  # Claude Code sends one: it belongs to the system prompt
            head.append(_system_message(content, where))
            heads.add(where)
        elif turn.role == "user":
            if isinstance(content, str):
                out.append(chat_pb2.ChatMessage(role="user", content=content))
                origins.add(where)
            else:
                _user_turn(content, where, out, origins)
        elif turn.role == "assistant":
            if isinstance(content, str):
                out.append(chat_pb2.ChatMessage(role="assistant", content=content))
                origins.add(where)
            else:
                out.append(_assistant_turn(content, where, origins))
        else:
            raise _bad(f"{where}.role", f"'{where}.role' must be 'user' or 'assistant', got '{turn.role[:40]}'.")
    origins.messages[:0], origins.parts[:0], origins.calls[:0] = heads.messages, heads.parts, heads.calls
    return head + out


def _tool(tool: dict[str, Any], index: int) -> chat_pb2.Tool:
    where = f"tools[{index}]"
    kind = tool.get("type")
    if kind is not None and not isinstance(kind, str):
        raise _bad(f"{where}.type", f"'{where}.type' must be a string.", "invalid_type")
    proto = chat_pb2.Tool(name=_str_field(tool, "name", where), anthropic_tool=_encode_json(tool).decode())
    if kind in (None, "", "custom"):
        proto.type = "function"
        schema = tool.get("input_schema")
        if schema is not None:
            if not isinstance(schema, dict):
                raise _bad(f"{where}.input_schema", f"'{where}.input_schema' must be an object.", "invalid_type")
            proto.parameters.update(struct_value(schema, f"{where}.input_schema"))
        description = tool.get("description")
        if isinstance(description, str):
            proto.description = description
    else:
        proto.type = kind  # a server tool (web_search_20250305 ...): Anthropic upstreams only
    return proto


def _reasoning(body: MessagesRequest | CountTokensRequest, extra: dict[str, Any]) -> chat_pb2.ReasoningConfig | None:
    thinking = body.thinking
    if thinking is None:
        return None
    if thinking.type == "enabled":
        config = chat_pb2.ReasoningConfig()
        if thinking.budget_tokens is not None:
            config.budget_tokens = thinking.budget_tokens
        return config
    if thinking.type == "disabled":
        return chat_pb2.ReasoningConfig(effort="none")
    if thinking.type == "adaptive":
        output = extra.get("output_config")
        effort = output.get("effort") if isinstance(output, dict) else None
        if effort in _EFFORTS:
            return chat_pb2.ReasoningConfig(effort="high" if effort == "max" else effort)
        return None
    raise _bad("thinking.type", f"'thinking.type' must be enabled, adaptive or disabled, got '{thinking.type[:40]}'.")


def _tool_choice(choice: ToolChoice, extra: dict[str, Any]) -> chat_pb2.ToolChoice:
    if choice.disable_parallel_tool_use:
        extra["parallel_tool_calls"] = False
    if choice.type == "tool":
        if not choice.name:
            raise _bad(
                "tool_choice.name", "'tool_choice.name' is required for type 'tool'.", "missing_required_parameter"
            )
        return chat_pb2.ToolChoice(function_name=choice.name)
    if choice.type in _TOOL_CHOICE:
        return chat_pb2.ToolChoice(mode=_TOOL_CHOICE[choice.type])
    raise _bad("tool_choice.type", f"'tool_choice.type' must be auto, any, tool or none, got '{choice.type[:40]}'.")


def _request_fields(body: MessagesRequest | CountTokensRequest, origins: Origins) -> dict[str, Any]:
    extra = dict(extra_fields(body))
    fields: dict[str, Any] = {"model": body.model, "messages": _chat_messages(body.system, body.messages, origins)}
    if body.tools:
        fields["tools"] = [_tool(tool, i) for i, tool in enumerate(body.tools)]
    if isinstance(body, CountTokensRequest):
        return fields
    fields["max_tokens"] = body.max_tokens
    fields["dialect"] = "messages"
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if body.top_p is not None:
        fields["top_p"] = body.top_p
    if body.top_k is not None:
        extra["top_k"] = body.top_k
    if body.stop_sequences:
        fields["stop"] = body.stop_sequences
    if body.metadata is not None and body.metadata.user_id is not None:
        fields["user"] = body.metadata.user_id
    if body.tool_choice is not None:
        fields["tool_choice"] = _tool_choice(body.tool_choice, extra)
    if (reasoning := _reasoning(body, extra)) is not None:
        fields["reasoning"] = reasoning
    if body.thinking is not None:
        extra["thinking"] = msgspec.to_builtins(body.thinking)
    if extra:
        for key, value in extra.items():
            struct_value({key: value}, key)
        fields["extra_body"] = extra
    return fields


def messages_request(body: MessagesRequest, message_type: type[M], betas: list[str]) -> tuple[M, Origins]:
    """The Create/StreamChatCompletionRequest for a Messages request body, and where its messages
    came from (to name the fields of the service's 400s as the client wrote them).

    Raises:
        ApiError: 400 naming the field when the body cannot be translated.
    """
    origins = Origins()
    fields = _request_fields(body, origins)
    if betas:
        fields["anthropic_beta"] = betas
    try:
        return message_type(**fields), origins
    except (ValueError, TypeError, OverflowError, DecodeError, EncodeError, RecursionError):
        raise ApiError(400, "Invalid request: a value cannot be represented.", code="invalid_value") from None


def count_request(body: CountTokensRequest) -> tuple[chat_service_pb2.CountTokensRequest, Origins]:
    """The CountTokensRequest for a count_tokens body, and where its messages came from."""
    origins = Origins()
    try:
        return chat_service_pb2.CountTokensRequest(**_request_fields(body, origins)), origins
    except (ValueError, TypeError, OverflowError, DecodeError, EncodeError, RecursionError):
        raise ApiError(400, "Invalid request: a value cannot be represented.", code="invalid_value") from None


# ------------------------------------------------------------------------------- proto -> JSON


def stop_reason(finish: str, native: str, stop_sequence: str = "") -> str | None:
    """Anthropic's ``stop_reason`` for a chat finish reason (the native one when it is Anthropic's;
    ``stop_sequence`` when the provider said which sequence stopped the text)."""
    if native in ANTHROPIC_STOP_REASONS:
        return native
    if finish == "stop" and stop_sequence:
        return "stop_sequence"
    return _STOP_BY_FINISH.get(finish, "end_turn" if finish else None)


def usage_json(usage: usage_pb2.Usage) -> MessagesUsage:
    """Anthropic usage: the prompt split into plain input, cache reads and cache writes."""
    cached, created = usage.cached_tokens, usage.cache_creation_tokens
    return MessagesUsage(
        input_tokens=max(0, usage.prompt_tokens - cached - created),
        output_tokens=usage.completion_tokens,
        cache_creation_input_tokens=created,
        cache_read_input_tokens=cached,
    )


def _tool_input(arguments: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = _decode_json(arguments)
    except msgspec.DecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def _reasoning_block(part: chat_pb2.ReasoningPart) -> dict[str, Any]:
    if part.encrypted and not part.text:
        return {"type": "redacted_thinking", "data": part.encrypted}
    return {"type": "thinking", "thinking": part.text, "signature": part.signature}


def message_from_proto(reply: chat_service_pb2.CreateChatCompletionResponse) -> Message:
    """The Anthropic ``message`` of a unary reply."""
    content: list[dict[str, Any]] = []
    stop: str | None = None
    sequence: str | None = None
    if reply.choices:
        choice = reply.choices[0]
        message = choice.message
        content.extend(_reasoning_block(part) for part in message.reasoning)
        if message.HasField("content") and message.content:
            content.append({"type": "text", "text": message.content})
        content.extend(
            {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
            for c in message.tool_calls
        )
        stop = stop_reason(choice.finish_reason, choice.native_finish_reason, choice.stop_sequence)
        sequence = choice.stop_sequence if stop == "stop_sequence" and choice.stop_sequence else None
    return Message(
        id=reply.id,
        model=reply.model,
        content=content,
        stop_reason=stop,
        stop_sequence=sequence,
        usage=usage_json(reply.usage) if reply.HasField("usage") else MessagesUsage(input_tokens=0, output_tokens=0),
        provider=reply.provider or msgspec.UNSET,
    )


# ------------------------------------------------------------------------------------- stream


def _event(name: bytes, payload: bytes) -> bytes:
    return b"event: " + name + b"\ndata: " + payload + b"\n\n"


PING: Final = _event(b"ping", b'{"type":"ping"}')
_STOP_EVENT: Final = _event(b"message_stop", b'{"type":"message_stop"}')
_TEXT: Final = "text"
_THINKING: Final = "thinking"
_TOOL: Final = "tool_use"


class EventRenderer:
    """Renders one chat chunk stream as Anthropic's events (see the module docstring).

    Blocks are opened as the deltas change kind: reasoning -> ``thinking`` (``thinking_delta``,
    ``signature_delta``) or ``redacted_thinking``; text -> ``text`` (``text_delta``); each tool call
    -> ``tool_use`` (``input_json_delta``). The finish chunk closes the open block; the usage
    message gives ``message_delta`` (stop_reason, usage) and ``message_stop``; an in-band error
    (or a failed call) gives an ``error`` event.
    """

    __slots__ = ("_block", "_index", "_kind", "_reasoning", "_sequence", "_started", "_stop", "_tools", "id", "model")

    def __init__(self) -> None:
        """Start before message_start."""
        self.id = ""
        self.model = ""
        self._started = False
        self._index = -1  # index of the open (or last) content block
        self._kind = ""  # kind of the open block ("" = none open)
        self._block = -1  # the reasoning ordinal or tool index the open block belongs to
        self._tools: dict[int, int] = {}  # tool-call index -> block index
        self._reasoning = -1
        self._stop: str | None = None
        self._sequence: str | None = None

    def _message_start(self, message: chat_service_pb2.StreamChatCompletionResponse) -> bytes:
        self._started = True
        self.id, self.model = message.id, message.model
        start = {
            "type": "message_start",
            "message": {
                "id": message.id,
                "type": "message",
                "role": "assistant",
                "model": message.model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {  # Raven's count at admission; message_delta brings the upstream's split
                    "input_tokens": message.prompt_tokens_estimate,
                    "output_tokens": 0,
                    "cache_creation_input_tokens": 0,
                    "cache_read_input_tokens": 0,
                },
            },
        }
        return _event(b"message_start", encode(start))

    def _close(self) -> bytes:
        if not self._kind:
            return b""
        self._kind = ""
        return _event(b"content_block_stop", b'{"type":"content_block_stop","index":%d}' % self._index)

    def _open(self, kind: str, block: dict[str, Any], owner: int = -1) -> bytes:
        frames = self._close()
        self._index += 1
        self._kind, self._block = kind, owner
        start = {"type": "content_block_start", "index": self._index, "content_block": block}
        return frames + _event(b"content_block_start", encode(start))

    def _delta(self, index: int, delta: bytes) -> bytes:
        return _event(b"content_block_delta", b'{"type":"content_block_delta","index":%d,"delta":%s}' % (index, delta))

    def _reasoning_frames(self, r: chat_pb2.ReasoningDelta) -> bytes:
        frames = b""
        if r.encrypted and not r.text:
            frames += self._open("redacted", {"type": "redacted_thinking", "data": r.encrypted})
            return frames + self._close()
        if self._kind != _THINKING or self._block != r.index:
            frames += self._open(_THINKING, {"type": "thinking", "thinking": "", "signature": ""}, r.index)
        if r.text:
            frames += self._delta(self._index, b'{"type":"thinking_delta","thinking":' + encode(r.text) + b"}")
        if r.signature:
            frames += self._delta(self._index, b'{"type":"signature_delta","signature":' + encode(r.signature) + b"}")
        return frames

    def _tool_frames(self, call: chat_pb2.ToolCallDelta) -> bytes:
        frames = b""
        index = self._tools.get(call.index)
        if index is None:
            frames += self._open(_TOOL, {"type": "tool_use", "id": call.id, "name": call.name, "input": {}}, call.index)
            index = self._tools[call.index] = self._index
        if call.HasField("arguments") and call.arguments:
            frames += self._delta(index, b'{"type":"input_json_delta","partial_json":' + encode(call.arguments) + b"}")
        return frames

    def render(self, message: chat_service_pb2.StreamChatCompletionResponse) -> bytes:
        """One stream message -> its events."""
        frames = b"" if self._started else self._message_start(message)
        for choice in message.choices:
            delta = choice.delta
            if delta.HasField("reasoning"):
                frames += self._reasoning_frames(delta.reasoning)
            elif delta.HasField("reasoning_content") and delta.reasoning_content:
                frames += self._reasoning_frames(chat_pb2.ReasoningDelta(text=delta.reasoning_content))
            if delta.HasField("content") and delta.content:
                if self._kind != _TEXT:
                    frames += self._open(_TEXT, {"type": "text", "text": ""})
                frames += self._delta(self._index, b'{"type":"text_delta","text":' + encode(delta.content) + b"}")
            for call in delta.tool_calls:
                frames += self._tool_frames(call)
            if choice.HasField("finish_reason") and choice.finish_reason != "error":
                frames += self._close()
                native = choice.native_finish_reason if choice.HasField("native_finish_reason") else ""
                sequence = choice.stop_sequence if choice.HasField("stop_sequence") else ""
                self._stop = stop_reason(choice.finish_reason, native, sequence)
                self._sequence = sequence if self._stop == "stop_sequence" and sequence else None
        if message.HasField("error"):
            error = message.error
            frames += self._close()
            return frames + error_event(_stream_error(error.message, error.code))
        if message.HasField("usage"):
            frames += self._close()
            ending = {
                "type": "message_delta",
                "delta": {"stop_reason": self._stop or "end_turn", "stop_sequence": self._sequence},
                "usage": msgspec.to_builtins(usage_json(message.usage)),
            }
            frames += _event(b"message_delta", encode(ending)) + _STOP_EVENT
        return frames

    def render_error(self, exc: BaseException) -> bytes:
        """The call failed after the headers went out -> an ``error`` event."""
        if isinstance(exc, grpc.aio.AioRpcError):
            error = ApiError.from_rpc_error(exc)
        else:
            logger.error("messages stream failed", exc_info=exc)
            error = ApiError(500, "The server had an error while processing your request.", code="internal_error")
        return self._close() + error_event(error)


def _stream_error(message: str, code: str) -> ApiError:
    """An in-band stream failure (the upstream failed after the first event) as an ApiError."""
    status = 529 if "overloaded" in code else 429 if "rate_limit" in code else 500
    return ApiError(status, message or "The upstream failed during the stream.", code=code or None)
