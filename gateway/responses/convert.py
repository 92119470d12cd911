"""Responses API JSON <-> raven.v1 chat protos: pure functions and one stream translator.

Requests: ``instructions`` becomes a leading system message; ``input`` items become chat messages
(message items by role; consecutive ``function_call`` items one assistant message with tool calls;
``function_call_output`` items tool messages; ``reasoning`` items the reasoning of the next
assistant message). Function tools become chat tools; tool types Raven does not serve
(``web_search``, ``file_search``, ``namespace``, ``custom``, ``mcp`` ...) and the input items of such
tools are ignored, always (Codex sends some on every turn); a ``tool_choice`` naming one is "auto".
``text.format`` is the response format, ``reasoning`` the reasoning config, ``max_output_tokens``
the output bound (sent as ``max_completion_tokens``).

Responses: a chat completion becomes a ``response`` object whose output holds reasoning items, one
message item (output_text) and function_call items, in that order. A reasoning block's signature
and encrypted data travel in the item's ``encrypted_content`` (an envelope Raven reads back when the
client returns the item), so signed reasoning survives a round trip through this dialect.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import time
from collections.abc import Sequence
from typing import Any, Final, TypeVar

import grpc
import msgspec
from google.protobuf.message import DecodeError, EncodeError

from gateway.body import extra_fields
from gateway.chat.convert import struct_value
from gateway.encoding import decimal_number, encode
from gateway.errors import ApiError
from gateway.responses.schemas import (
    ContentPart,
    FunctionCallItem,
    FunctionCallOutputItem,
    MessageItem,
    ReasoningItem,
    ResponsesRequest,
)
from raven.v1 import chat_pb2, chat_service_pb2, usage_pb2

__all__ = [
    "ResponseTranslator",
    "chat_request",
    "history_items",
    "input_items",
    "response_from_completion",
]

logger = logging.getLogger("raven.gateway")

M = TypeVar("M", chat_service_pb2.CreateChatCompletionRequest, chat_service_pb2.StreamChatCompletionRequest)

#: The deepest JSON a google.protobuf.Struct field may carry (see gateway.chat.convert).
_ROLES: Final = frozenset({"user", "assistant", "system", "developer"})
_TEXT_PARTS: Final = frozenset({"input_text", "output_text", "text", "summary_text", "reasoning_text"})
#: Input item types of tools Raven does not serve: ignored, as those tools are.
_IGNORED_ITEMS: Final = frozenset({
    "web_search_call", "file_search_call", "computer_call", "computer_call_output", "code_interpreter_call",
    "image_generation_call", "local_shell_call", "local_shell_call_output", "shell_call", "shell_call_output",
    "apply_patch_call", "apply_patch_call_output", "mcp_list_tools", "mcp_approval_request",
    "mcp_approval_response", "mcp_call", "custom_tool_call", "custom_tool_call_output", "compaction",
    "tool_search_call", "tool_search_output",
})
_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})
#: Request keys that are the Responses API's own and never go upstream.
_OWN_KEYS: Final = frozenset({"include", "store", "previous_response_id", "metadata", "client_metadata",
                              "stream_options", "truncation", "background", "top_logprobs", "max_tool_calls"})
_ENVELOPE: Final = "raven1:"


# ------------------------------------------------------------------------------------ helpers




def _bad(param: str, message: str, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, code=code, param=param)


def _convert(value: Any, type_: type[Any], param: str) -> Any:
    """``value`` as ``type_`` (strict), or the 400 naming the field inside ``param``."""
    try:
        return msgspec.convert(value, type_, strict=True)
    except msgspec.ValidationError as exc:
        text = str(exc)
        text, _, path = text.partition(" - at `$")
        path = path.rstrip("`")
        where = param + path
        if text.startswith("Object missing required field `"):
            name = text.split("`")[1]
            where = f"{where}.{name}"
            return_error = _bad(where, f"Missing required parameter: '{where}'.", "missing_required_parameter")
        else:
            detail = text[0].lower() + text[1:] if text else "invalid value"
            return_error = _bad(where, f"Invalid value for '{where}': {detail}.",
                                "invalid_type" if ", got `" in text else "invalid_value")
        raise return_error from None


def _unseal(encrypted: str) -> chat_pb2.ReasoningPart:
    """The reasoning part an ``encrypted_content`` carries (Raven's envelope, or foreign data)."""
    if encrypted.startswith(_ENVELOPE):
        try:
            signature, data = json.loads(base64.urlsafe_b64decode(encrypted[len(_ENVELOPE):]))
            if isinstance(signature, str) and isinstance(data, str):
                return chat_pb2.ReasoningPart(signature=signature, encrypted=data)
        except (ValueError, TypeError, binascii.Error):
            pass
    return chat_pb2.ReasoningPart(encrypted=encrypted)


def _seal(signature: str, encrypted: str) -> str | None:
    if not signature and not encrypted:
        return None
    if encrypted and not signature:
        return encrypted
    return _ENVELOPE + base64.urlsafe_b64encode(json.dumps([signature, encrypted]).encode()).decode()


# ------------------------------------------------------------------------------- JSON -> proto


def input_items(body: ResponsesRequest) -> list[Any]:
    """This request's own input items (a text input is one user message item)."""
    if body.input is None:
        return []
    if isinstance(body.input, str):
        return [{"type": "message", "role": "user", "content": body.input}]
    return list(body.input)


_ITEM_PREFIX: Final = {"message": "msg", "function_call": "fc", "function_call_output": "fco", "reasoning": "rs"}


def with_item_ids(items: list[Any], response_id: str) -> list[Any]:
    """`items` (this request's own input) with an id on every object item that has none,
    ``<prefix>_<response hex>_in<n>``: unique per stored response and stable once stored, so
    GET /v1/responses/{id}/input_items can page by it (``after``)."""
    hexid = response_id.removeprefix("resp_")
    out: list[Any] = []
    for n, item in enumerate(items):
        if isinstance(item, str):  # a bare string in an input list is a user message
            item = {"type": "message", "role": "user", "content": item}
        if isinstance(item, dict) and not isinstance(item.get("id"), str):
            prefix = _ITEM_PREFIX.get(str(item.get("type") or "message"), "item")
            item = {"id": f"{prefix}_{hexid}_in{n}", **{k: v for k, v in item.items() if k != "id"}}
        out.append(item)
    return out


def listed_item(item: Any) -> Any:
    """An input item as the input_items list shows it: a message's text content as one content
    part (``input_text``; ``output_text`` for an assistant's), the rest as stored."""
    if (isinstance(item, dict) and item.get("type", "message") == "message"
            and isinstance(item.get("content"), str)):
        part = "output_text" if item.get("role") == "assistant" else "input_text"
        return {"type": "message", **item, "content": [{"type": part, "text": item["content"]}]}
    return item


def history_items(stored_input: str, stored_body: str) -> list[Any]:
    """The items a response continues from: the stored response's whole input, then its output."""
    try:
        items = json.loads(stored_input)
        output = json.loads(stored_body).get("output") or []
    except (ValueError, AttributeError):
        raise ApiError(500, "The stored response cannot be read.", code="internal_error") from None
    return [*items, *output]


class _Messages:
    """Builds the chat conversation from input items, merging tool calls into assistant turns."""

    def __init__(self) -> None:
        self.messages: list[chat_pb2.ChatMessage] = []
        self._reasoning: list[chat_pb2.ReasoningPart] = []
        self._open_assistant: chat_pb2.ChatMessage | None = None  # takes further function calls

    def system(self, text: str) -> None:
        self.messages.append(chat_pb2.ChatMessage(role="system", content=text))

    def _assistant(self) -> chat_pb2.ChatMessage:
        message = chat_pb2.ChatMessage(role="assistant")
        if self._reasoning:
            message.reasoning.extend(self._reasoning)
            text = "".join(part.text for part in self._reasoning)
            if text:
                message.reasoning_content = text
            self._reasoning = []
        self.messages.append(message)
        self._open_assistant = message
        return message

    def message(self, item: MessageItem, param: str) -> None:
        if item.role not in _ROLES:
            raise _bad(f"{param}.role", f"Invalid value for '{param}.role': must be one of user, assistant, system "
                       f"or developer, got '{item.role}'.")
        content = item.content
        if item.role == "assistant":
            message = self._assistant()
            text = content if isinstance(content, str) else "".join(
                _part_text(p, f"{param}.content[{j}]") for j, p in enumerate(content))
            message.content = text
            return
        self._open_assistant = None
        message = chat_pb2.ChatMessage(role=item.role)
        if isinstance(content, str):
            message.content = content
        else:
            parts = [_part(p, f"{param}.content[{j}]") for j, p in enumerate(content)]
            if all(p.type == "text" for p in parts):
                message.content = "".join(p.text for p in parts)
            else:
                message.content_parts.extend(parts)
        self.messages.append(message)

    def function_call(self, item: FunctionCallItem) -> None:
        message = self._open_assistant if self._open_assistant is not None else self._assistant()
        message.tool_calls.append(chat_pb2.ToolCall(id=item.call_id, type="function", name=item.name,
                                                    arguments=item.arguments))

    def function_output(self, item: FunctionCallOutputItem, param: str) -> None:
        self._open_assistant = None
        output = item.output
        text = output if isinstance(output, str) else "".join(
            _part_text(p, f"{param}.output[{j}]") for j, p in enumerate(output))
        self.messages.append(chat_pb2.ChatMessage(role="tool", tool_call_id=item.call_id, content=text))

    def reasoning(self, item: ReasoningItem) -> None:
        parts = item.content if item.content else item.summary
        text = "\n\n".join(p.text for p in parts if p.text)
        part = _unseal(item.encrypted_content) if item.encrypted_content else chat_pb2.ReasoningPart()
        part.text = text
        if part.text or part.signature or part.encrypted:
            self._reasoning.append(part)


def _part_text(part: ContentPart, param: str) -> str:
    if part.type in _TEXT_PARTS:
        return part.text or ""
    if part.type == "refusal":
        return part.refusal or ""
    raise _bad(f"{param}.type", f"Invalid value for '{param}.type': a text part (input_text, output_text) is "
               f"expected here, got '{part.type}'.")


def _part(part: ContentPart, param: str) -> chat_pb2.ContentPart:
    if part.type in _TEXT_PARTS or part.type == "refusal":
        return chat_pb2.ContentPart(type="text", text=_part_text(part, param))
    if part.type == "input_image":
        if not part.image_url:
            raise _bad(f"{param}.image_url", f"'{param}': only images given by 'image_url' (a URL or a data: URL) "
                       "are supported; file ids are not.", "unsupported_value")
        proto = chat_pb2.ContentPart(type="image_url", image_url=part.image_url)
        if part.detail:
            proto.detail = part.detail
        return proto
    raise _bad(f"{param}.type", f"Invalid value for '{param}.type': supported content parts are input_text, "
               f"output_text, refusal and input_image, got '{part.type}'.", "unsupported_value")


def _messages(body: ResponsesRequest, history: Sequence[Any], items: Sequence[Any]) -> list[chat_pb2.ChatMessage]:
    out = _Messages()
    if body.instructions:
        out.system(body.instructions)
    for source, param_of in ((history, lambda i: "previous_response_id"), (items, lambda i: f"input[{i}]")):
        for i, raw in enumerate(source):
            param = param_of(i)
            if isinstance(raw, str) and source is items and isinstance(body.input, list):
                raw = {"type": "message", "role": "user", "content": raw}
            if not isinstance(raw, dict):
                raise _bad(param, f"Invalid value for '{param}': an input item must be an object.", "invalid_type")
            kind = raw.get("type", "message")
            if kind == "message":
                out.message(_convert(raw, MessageItem, param), param)
            elif kind == "function_call":
                out.function_call(_convert(raw, FunctionCallItem, param))
            elif kind == "function_call_output":
                out.function_output(_convert(raw, FunctionCallOutputItem, param), param)
            elif kind == "reasoning":
                out.reasoning(_convert(raw, ReasoningItem, param))
            elif kind in _IGNORED_ITEMS:
                continue
            elif kind == "item_reference":
                raise _bad(f"{param}.type", f"'{param}': item references are not supported; send the item itself "
                           "or use previous_response_id.", "unsupported_value")
            else:
                raise _bad(f"{param}.type", f"Invalid value for '{param}.type': unknown input item type '{kind}'.")
    if not out.messages:
        raise _bad("input", "Missing required parameter: 'input'.", "missing_required_parameter")
    return out.messages


def _tools(raw_tools: list[Any]) -> tuple[list[chat_pb2.Tool], list[str]]:
    """The function tools (others are ignored) and their names."""
    tools: list[chat_pb2.Tool] = []
    for i, raw in enumerate(raw_tools):
        param = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise _bad(param, f"Invalid value for '{param}': a tool must be an object.", "invalid_type")
        if raw.get("type") != "function":
            continue  # web_search, file_search, namespace, custom, mcp, ...: not served, tolerated
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise _bad(f"{param}.name", f"Missing required parameter: '{param}.name'.", "missing_required_parameter")
        tool = chat_pb2.Tool(type="function", name=name)
        description = raw.get("description")
        if description is not None:
            if not isinstance(description, str):
                raise _bad(f"{param}.description", f"Invalid value for '{param}.description': expected a string.",
                           "invalid_type")
            tool.description = description
        parameters = raw.get("parameters")
        if parameters is not None:
            if not isinstance(parameters, dict):
                raise _bad(f"{param}.parameters", f"Invalid value for '{param}.parameters': expected an object.",
                           "invalid_type")
            tool.parameters.update(struct_value(parameters, f"{param}.parameters"))
        strict = raw.get("strict")
        if isinstance(strict, bool):
            tool.strict = strict
        tools.append(tool)
    return tools, [t.name for t in tools]


def _tool_choice(choice: str | dict[str, Any], names: list[str]) -> chat_pb2.ToolChoice | None:
    if isinstance(choice, str):
        return chat_pb2.ToolChoice(mode=choice)  # the service checks the vocabulary
    kind = choice.get("type")
    if kind == "function":
        name = choice.get("name")
        if not isinstance(name, str) or not name:
            raise _bad("tool_choice.name", "Missing required parameter: 'tool_choice.name'.",
                       "missing_required_parameter")
        return chat_pb2.ToolChoice(function_name=name)
    if kind == "allowed_tools":
        mode = choice.get("mode", "auto")
        return chat_pb2.ToolChoice(mode=mode if isinstance(mode, str) else "auto")
    if isinstance(kind, str):
        return None  # a hosted tool Raven does not serve: like its tool, ignored ("auto")
    raise _bad("tool_choice", "Invalid value for 'tool_choice': expected a string or an object with a 'type'.")


def _response_format(body: ResponsesRequest) -> chat_pb2.ResponseFormat | None:
    fmt = body.text.format if body.text is not None else None
    if fmt is None:
        return None
    if fmt.type not in _FORMATS:
        raise _bad("text.format.type", "Invalid value for 'text.format.type': must be text, json_object or "
                   f"json_schema, got '{fmt.type}'.")
    proto = chat_pb2.ResponseFormat(type=fmt.type)
    if fmt.type == "json_schema":
        if fmt.schema is None:
            raise _bad("text.format.schema", "Missing required parameter: 'text.format.schema'.",
                       "missing_required_parameter")
        proto.json_schema.name = fmt.name or "response"
        if fmt.description is not None:
            proto.json_schema.description = fmt.description
        proto.json_schema.schema.update(struct_value(fmt.schema, "text.format.schema"))
        if fmt.strict is not None:
            proto.json_schema.strict = fmt.strict
    return proto


def _reasoning(body: ResponsesRequest) -> chat_pb2.ReasoningConfig:
    reasoning = chat_pb2.ReasoningConfig()
    assert body.reasoning is not None
    if body.reasoning.effort is not None:
        reasoning.effort = body.reasoning.effort
    summary = body.reasoning.summary or body.reasoning.generate_summary
    if summary is not None:
        reasoning.summary = summary
    return reasoning


def _extra(body: ResponsesRequest) -> dict[str, Any]:
    """Chat parameters without a proto field, passed like chat's extra body (dropped unless the
    model supports them): unknown top-level keys, and the Responses fields that have a chat twin."""
    extra = {k: v for k, v in extra_fields(body).items() if k not in _OWN_KEYS}
    for key, value in (("parallel_tool_calls", body.parallel_tool_calls), ("prompt_cache_key", body.prompt_cache_key),
                       ("safety_identifier", body.safety_identifier), ("service_tier", body.service_tier),
                       ("verbosity", body.text.verbosity if body.text is not None else None)):
        if value is not None:
            extra[key] = value
    for key, value in extra.items():
        struct_value({key: value}, key)
    return extra


def chat_request(body: ResponsesRequest, history: Sequence[Any], message_type: type[M]) -> M:
    """The chat request for a Responses request continuing ``history`` (previous items, or none).

    Raises:
        ApiError: 400 naming the field for a request the dialect does not allow.
    """
    if body.background:
        raise _bad("background", "Background responses are not supported.", "unsupported_value")
    fields: dict[str, Any] = {"model": body.model, "messages": _messages(body, history, input_items(body))}
    if body.max_output_tokens is not None:
        fields["max_completion_tokens"] = body.max_output_tokens
    for name in ("temperature", "top_p", "user"):
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if body.tools:
        tools, names = _tools(body.tools)
        if tools:
            fields["tools"] = tools
            if body.tool_choice is not None and (choice := _tool_choice(body.tool_choice, names)) is not None:
                fields["tool_choice"] = choice
    elif isinstance(body.tool_choice, str):
        fields["tool_choice"] = chat_pb2.ToolChoice(mode=body.tool_choice)
    if (fmt := _response_format(body)) is not None:
        fields["response_format"] = fmt
    if body.reasoning is not None:
        fields["reasoning"] = _reasoning(body)
    if extra := _extra(body):
        fields["extra_body"] = extra
    try:
        return message_type(**fields)
    except (ValueError, TypeError, OverflowError, DecodeError, EncodeError, RecursionError):
        raise ApiError(400, "Invalid request: a value cannot be represented.", code="invalid_value") from None


# ------------------------------------------------------------------------------- proto -> JSON


def response_id(generation_id: str) -> str:
    """``resp_<hex>`` for the generation ``chatcmpl-<hex>`` (the same hex: one id per generation)."""
    return "resp_" + generation_id.rpartition("-")[2]


def request_echo(body: ResponsesRequest) -> dict[str, Any]:
    """The request fields a response object repeats."""
    fmt: dict[str, Any] = {"type": "text"}
    if body.text is not None and body.text.format is not None:
        fmt = msgspec.to_builtins(body.text.format)
    reasoning: dict[str, Any] = {"effort": None, "summary": None}
    if body.reasoning is not None:
        summary = body.reasoning.summary or body.reasoning.generate_summary
        reasoning = {"effort": body.reasoning.effort, "summary": summary}
    return {
        "instructions": body.instructions,
        "max_output_tokens": body.max_output_tokens,
        "metadata": body.metadata or {},
        "parallel_tool_calls": True if body.parallel_tool_calls is None else body.parallel_tool_calls,
        "previous_response_id": body.previous_response_id,
        "reasoning": reasoning,
        "store": True if body.store is None else body.store,
        "temperature": 1.0 if body.temperature is None else body.temperature,
        "text": {"format": fmt, "verbosity": body.text.verbosity if body.text is not None else None},
        "tool_choice": body.tool_choice if body.tool_choice is not None else "auto",
        "tools": body.tools or [],
        "top_p": 1.0 if body.top_p is None else body.top_p,
        "truncation": body.truncation or "disabled",
        "user": body.user,
        "prompt_cache_key": body.prompt_cache_key,
        "background": False,
        "service_tier": body.service_tier or "default",
    }


def _usage(usage: usage_pb2.Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
        "cost": decimal_number(usage.cost),
    }
    if usage.estimated:
        out["estimated"] = True
    return out


_INCOMPLETE: Final = {"length": "max_output_tokens", "content_filter": "content_filter"}


def _status(finish_reason: str) -> tuple[str, dict[str, str] | None]:
    reason = _INCOMPLETE.get(finish_reason)
    return ("incomplete", {"reason": reason}) if reason else ("completed", None)


def _response(rid: str, created_at: int, model: str, echo: dict[str, Any], *, status: str,
              output: list[dict[str, Any]], usage: dict[str, Any] | None = None,
              error: dict[str, Any] | None = None, incomplete: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "id": rid, "object": "response", "created_at": created_at, "status": status, "error": error,
        "incomplete_details": incomplete, "model": model, "output": output, **echo, "usage": usage,
    }


def _reasoning_item(item_id: str, text: str, signature: str, encrypted: str, status: str) -> dict[str, Any]:
    return {
        "type": "reasoning", "id": item_id, "summary": [],
        "content": [{"type": "reasoning_text", "text": text}] if text else [],
        "encrypted_content": _seal(signature, encrypted), "status": status,
    }


def _message_item(item_id: str, text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def _call_item(item_id: str, call_id: str, name: str, arguments: str, status: str) -> dict[str, Any]:
    return {"type": "function_call", "id": item_id, "call_id": call_id, "name": name, "arguments": arguments,
            "status": status}


def response_from_completion(reply: chat_service_pb2.CreateChatCompletionResponse,
                             echo: dict[str, Any]) -> dict[str, Any]:
    """The ``response`` object of a unary chat completion."""
    rid = response_id(reply.id)
    hexid = rid[5:]
    output: list[dict[str, Any]] = []
    finish = ""
    if reply.choices:
        choice = reply.choices[0]
        finish = choice.finish_reason
        message = choice.message
        parts = list(message.reasoning)
        if not parts and message.HasField("reasoning_content") and message.reasoning_content:
            parts = [chat_pb2.ReasoningPart(text=message.reasoning_content)]
        for i, part in enumerate(parts):
            output.append(_reasoning_item(f"rs_{hexid}_{i}", part.text, part.signature, part.encrypted, "completed"))
        if message.HasField("content") and (message.content or not message.tool_calls):
            output.append(_message_item(f"msg_{hexid}", message.content, "completed"))
        for i, call in enumerate(message.tool_calls):
            output.append(_call_item(f"fc_{hexid}_{i}", call.id, call.name, call.arguments, "completed"))
    status, incomplete = _status(finish)
    return _response(rid, int(reply.created or time.time()), reply.model, echo, status=status, output=output,
                     usage=_usage(reply.usage) if reply.HasField("usage") else None, incomplete=incomplete)


# ------------------------------------------------------------------------------------- stream


def _event(kind: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + encode(payload) + b"\n\n"


class _Item:
    """One output item being streamed."""

    __slots__ = ("arguments", "call_id", "encrypted", "id", "index", "kind", "name", "signature", "text")

    def __init__(self, kind: str, item_id: str, index: int) -> None:
        self.kind, self.id, self.index = kind, item_id, index
        self.text = self.arguments = self.name = self.call_id = self.signature = self.encrypted = ""

    def render(self, status: str) -> dict[str, Any]:
        if self.kind == "reasoning":
            return _reasoning_item(self.id, self.text, self.signature, self.encrypted, status)
        if self.kind == "message":
            return _message_item(self.id, self.text, status)
        return _call_item(self.id, self.call_id, self.name, self.arguments, status)


class ResponseTranslator:
    """Turns one StreamChatCompletion into Responses stream events (each with its sequence_number).

    ``feed`` takes each stream message; after the last one (usage) ``final`` holds the finished
    response object, which ``completed`` announces (the route stores it first when asked to).
    A failure ends the stream with ``response.failed`` (the output so far, status failed, error).
    """

    def __init__(self, echo: dict[str, Any]) -> None:
        self.echo = echo
        self.seq = 0
        self.rid = ""
        self.hex = ""
        self.model = ""
        self.created_at = 0
        self.items: list[_Item] = []
        self.open: _Item | None = None
        self.tools: dict[int, _Item] = {}
        self.reasoning: dict[int, _Item] = {}
        self.finish = ""
        self.final: dict[str, Any] | None = None
        self.ended = False

    def _emit(self, out: list[bytes], kind: str, **payload: Any) -> None:
        out.append(_event(kind, {"type": kind, "sequence_number": self.seq, **payload}))
        self.seq += 1

    def _snapshot(self, status: str, **fields: Any) -> dict[str, Any]:
        return _response(self.rid, self.created_at, self.model, self.echo, status=status,
                         output=[item.render("completed" if status == "completed" else "incomplete")
                                 for item in self.items] if status != "in_progress" else [], **fields)

    def _start(self, message: chat_service_pb2.StreamChatCompletionResponse, out: list[bytes]) -> None:
        self.rid = response_id(message.id)
        self.hex = self.rid[5:]
        self.model = message.model
        self.created_at = int(message.created or time.time())
        snapshot = self._snapshot("in_progress")
        self._emit(out, "response.created", response=snapshot)
        self._emit(out, "response.in_progress", response=snapshot)

    def _close(self, out: list[bytes], status: str = "completed") -> None:
        item, self.open = self.open, None
        if item is None:
            return
        where = {"item_id": item.id, "output_index": item.index}
        if item.kind == "reasoning":
            if item.text:
                self._emit(out, "response.reasoning_text.done", **where, content_index=0, text=item.text)
                self._emit(out, "response.content_part.done", **where, content_index=0,
                           part={"type": "reasoning_text", "text": item.text})
        elif item.kind == "message":
            self._emit(out, "response.output_text.done", **where, content_index=0, text=item.text, logprobs=[])
            self._emit(out, "response.content_part.done", **where, content_index=0,
                       part={"type": "output_text", "text": item.text, "annotations": [], "logprobs": []})
        else:
            self._emit(out, "response.function_call_arguments.done", **where, name=item.name,
                       arguments=item.arguments)
        self._emit(out, "response.output_item.done", output_index=item.index, item=item.render(status))

    def _open(self, out: list[bytes], kind: str, item_id: str) -> _Item:
        self._close(out)
        item = _Item(kind, item_id, len(self.items))
        self.items.append(item)
        self.open = item
        return item

    def _reasoning(self, out: list[bytes], delta: chat_pb2.ChatDelta) -> None:
        index = delta.reasoning.index if delta.HasField("reasoning") else 0
        item = self.reasoning.get(index)
        if item is None:
            item = self._open(out, "reasoning", f"rs_{self.hex}_{index}")
            self.reasoning[index] = item
            self._emit(out, "response.output_item.added", output_index=item.index, item=item.render("in_progress"))
        text = delta.reasoning.text if delta.HasField("reasoning") else delta.reasoning_content
        if delta.HasField("reasoning"):
            item.signature += delta.reasoning.signature
            item.encrypted += delta.reasoning.encrypted
        if text:
            where = {"item_id": item.id, "output_index": item.index}
            if not item.text and item is self.open:
                self._emit(out, "response.content_part.added", **where, content_index=0,
                           part={"type": "reasoning_text", "text": ""})
            item.text += text
            if item is self.open:
                self._emit(out, "response.reasoning_text.delta", **where, content_index=0, delta=text)

    def _text(self, out: list[bytes], text: str) -> None:
        item = self.open
        if item is None or item.kind != "message":
            item = self._open(out, "message", f"msg_{self.hex}")
            where = {"item_id": item.id, "output_index": item.index}
            self._emit(out, "response.output_item.added", output_index=item.index, item={
                "type": "message", "id": item.id, "status": "in_progress", "role": "assistant", "content": []})
            self._emit(out, "response.content_part.added", **where, content_index=0,
                       part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})
        item.text += text
        self._emit(out, "response.output_text.delta", item_id=item.id, output_index=item.index, content_index=0,
                   delta=text, logprobs=[])

    def _tool(self, out: list[bytes], call: chat_pb2.ToolCallDelta) -> None:
        item = self.tools.get(call.index)
        if item is None:
            item = self._open(out, "function_call", f"fc_{self.hex}_{call.index}")
            item.call_id = call.id if call.HasField("id") else f"call_{self.hex}_{call.index}"
            item.name = call.name if call.HasField("name") else ""
            self.tools[call.index] = item
            self._emit(out, "response.output_item.added", output_index=item.index, item=item.render("in_progress"))
        if call.HasField("arguments") and call.arguments:
            item.arguments += call.arguments
            if item is self.open:
                self._emit(out, "response.function_call_arguments.delta", item_id=item.id, output_index=item.index,
                           delta=call.arguments)

    def feed(self, message: chat_service_pb2.StreamChatCompletionResponse) -> list[bytes]:
        """The events of one stream message (none for the final usage message: see ``completed``)."""
        out: list[bytes] = []
        if not self.rid:
            self._start(message, out)
        for choice in message.choices:
            delta = choice.delta
            if delta.HasField("reasoning") or (delta.HasField("reasoning_content") and delta.reasoning_content):
                self._reasoning(out, delta)
            if delta.HasField("content") and delta.content:
                self._text(out, delta.content)
            for call in delta.tool_calls:
                self._tool(out, call)
            if choice.HasField("finish_reason") and choice.finish_reason:
                self.finish = choice.finish_reason
        if message.HasField("error"):
            error = message.error
            out.extend(self._failed(error.code or "upstream_error", error.message,
                                    _usage(message.usage) if message.HasField("usage") else None))
        elif message.HasField("usage"):
            self._close(out)
            status, incomplete = _status(self.finish)
            self.final = self._snapshot(status, usage=_usage(message.usage), incomplete=incomplete)
        return out

    def completed(self) -> bytes:
        """``response.completed`` (or ``response.incomplete``) with the final response."""
        assert self.final is not None
        out: list[bytes] = []
        kind = "response.completed" if self.final["status"] == "completed" else "response.incomplete"
        self._emit(out, kind, response=self.final)
        self.ended = True
        return out[0]

    def _failed(self, code: str, message: str, usage: dict[str, Any] | None) -> list[bytes]:
        out: list[bytes] = []
        self._close(out, "incomplete")
        self._emit(out, "response.failed", response=self._snapshot(
            "failed", usage=usage, error={"code": code, "message": message}))
        self.ended = True
        return out

    def fail(self, exc: BaseException) -> bytes:
        """The call failed after the headers went out (or ended without its usage message)."""
        if isinstance(exc, grpc.aio.AioRpcError):
            error = ApiError.from_rpc_error(exc)
        else:
            logger.error("responses stream failed", exc_info=exc)
            error = ApiError(500, "The server had an error while processing your request.", code="internal_error")
        out: list[bytes] = []
        if not self.rid:  # nothing was sent yet: the response still needs its lifecycle
            self.rid = "resp_" + "0" * 32
        out.extend(self._failed(error.code or "server_error", error.message, None))
        return b"".join(out)
