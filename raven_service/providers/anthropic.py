"""The ``anthropic`` provider kind: Anthropic's Messages API, translated both ways.

- Chat: ``POST {base_url}/v1/messages`` (``base_url`` is the API root, e.g.
  ``https://api.anthropic.com``), unary and streamed, with ``x-api-key`` (read from
  ``cfg.api_key_env`` at call time), ``anthropic-version: 2023-06-01`` and the configured headers
  (which win, e.g. an ``anthropic-beta`` header or a proxy's own auth).
- Transport and HTTP-status errors are mapped in `providers._http` (529 ``overloaded_error`` and
  429 are retryable there, ``retry-after`` is parsed, Anthropic's ``{"type": "error", "error":
  {"type", "message"}}`` body gives the message). This module maps only what arrives inside a
  200: the stream's ``error`` event and an error body.

Request translation (OpenAI semantics -> Messages API), `messages_body`:

- ``system`` and ``developer`` messages, wherever they sit, are hoisted into the top-level
  ``system`` string (joined by a blank line); Anthropic has no mid-conversation system turn.
- user / assistant messages become content blocks: text, ``image`` (``base64`` source for
  ``data:`` URLs, ``url`` source otherwise); assistant ``tool_calls`` become ``tool_use`` blocks
  whose ``input`` is the parsed arguments (``""`` -> ``{}``; arguments that are not a JSON object
  travel as ``{"_raw": "<text>"}`` so nothing is lost and the request stays valid).
- ``tool`` messages become ``tool_result`` blocks in a user turn. Consecutive turns of one role
  are merged (Anthropic wants user / assistant alternation), so several tool results land in one
  user message; inside a user turn the ``tool_result`` blocks go first, as Anthropic requires.
  Empty text blocks (which Anthropic rejects) are dropped; message ``name`` has no equivalent.
- ``max_tokens`` is required upstream: the request's, else `DEFAULT_MAX_TOKENS`.
- ``temperature`` is clamped to Anthropic's 0..1; ``top_p`` passes; ``stop`` ->
  ``stop_sequences``; ``user`` -> ``metadata.user_id``.
- ``tools`` -> ``{name, description, input_schema}`` (``{"type": "object"}`` when there are no
  parameters); ``tool_choice`` auto -> ``{type: auto}``, required -> ``{type: any}``, function ->
  ``{type: tool, name}``, none -> ``{type: none}``. ``parallel_tool_calls: false`` (an extra key)
  becomes ``disable_parallel_tool_use``.
- ``response_format`` json_schema goes native: ``output_config.format`` ``{type: json_schema,
  schema}`` (objects closed with ``additionalProperties: false``, as Anthropic requires; merged
  into a passed-through ``output_config``) when the configured ``anthropic_version`` (default
  2023-06-01) is at least `NATIVE_STRUCTURED_OUTPUTS_SINCE`. Older versions, and json_object (no
  native equivalent), get an instruction appended to ``system`` asking for a bare JSON value
  (matching the schema, which is quoted). The reply is not validated here.
- ``reasoning`` (effort / budget_tokens) -> ``thinking: {type: enabled, budget_tokens}`` (effort
  minimal 1024, low 2048, medium 8192, high 16384, xhigh 32000; kept below ``max_tokens``, which
  Anthropic requires; dropped when that leaves less than 1024; ``temperature`` is then not sent);
  effort none -> ``{type: disabled}``. A ``thinking`` of the client's own (extra) wins.
- An assistant turn's signed reasoning goes back first, as ``thinking`` (text + signature) and
  ``redacted_thinking`` (data) blocks; unsigned reasoning (another provider's) is not sent.
- Not sent (no Anthropic equivalent): ``seed``, ``frequency_penalty``, ``presence_penalty``,
  ``strict``, image ``detail``. Of the unknown top-level keys (``extra``) only Anthropic's own
  request fields in `PASSTHROUGH_EXTRA` are passed (``top_k``, ``thinking``, ...); anything else
  is an OpenAI-only knob that Anthropic would reject with a 400.

Response translation: ``text`` blocks -> content (concatenated), ``tool_use`` blocks ->
tool calls (ids passed through unchanged, ``input`` as JSON text), ``thinking`` -> reasoning
(text + signature; streamed as ``thinking_delta`` / ``signature_delta`` -> ReasoningDelta),
``redacted_thinking`` -> reasoning with ``encrypted`` = its data. Server-tool blocks
(``server_tool_use`` with its ``input_json_delta``, ``web_search_tool_result``, ...), citations
and block or delta types added later are skipped: they never end a stream. ``stop_reason`` ->
finish reason per SPEC §8, native kept. ``cache_read_input_tokens`` -> cached_tokens,
``cache_creation_input_tokens`` -> cache_creation_tokens (both also counted in prompt_tokens).

Stream contract (core.ports.ChatProvider): TextDelta / ToolCallDelta events, then exactly one
Finish, then exactly one UsageReport. Tool-call ``index`` is the ordinal of the ``tool_use``
block among tool_use blocks (Anthropic's own block index also counts text blocks). Usage is the
upstream's own: prompt = ``input_tokens`` + cache creation + cache read tokens (from
``message_start``, updated by ``message_delta`` when it carries them), completion = the
cumulative ``output_tokens`` of the last ``message_delta``; Raven estimates (``estimated=True``)
only what never arrived. ``ping`` and unknown event types are ignored.
"""

from __future__ import annotations

import base64
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import unquote_to_bytes

import msgspec

from raven_service.core.errors import BROKEN, UpstreamError
from raven_service.core.tokens import count_message_tokens, count_tokens
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    ContentPart,
    Finish,
    Message,
    ProviderChatRequest,
    ReasoningDelta,
    ReasoningPart,
    ResponseFormat,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
)
from raven_service.providers._client import upstream_client
from raven_service.providers._http import UpstreamClient, error_from_payload
from raven_service.providers._sse import SSEDecoder, SSEEvent
from raven_service.providers._stream import StreamStateBase, next_batch, result_events
from raven_service.providers.settings import UpstreamSettings

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "PASSTHROUGH_EXTRA",
    "AnthropicProvider",
    "create",
    "messages_body",
    "mint_call_id",
    "normalise_stop_reason",
]

ANTHROPIC_VERSION = "2023-06-01"
#: The first ``anthropic-version`` whose Messages API takes ``output_config.format`` (native
#: structured outputs); a provider configured with an older ``anthropic_version`` gets emulation.
NATIVE_STRUCTURED_OUTPUTS_SINCE = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
USER_AGENT = "raven-router/0.1"
MESSAGES_PATH = "/v1/messages"
#: Top-level Messages API fields that may arrive in `ChatRequest.extra` and are passed through.
PASSTHROUGH_EXTRA = frozenset({"top_k", "thinking", "metadata", "service_tier", "container", "mcp_servers",
                               "context_management", "output_config"})
_AUTH_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
_MAX_BODY = 64 * 1024 * 1024
_DRAIN_GRACE = 0.1  # seconds to wait after message_stop for the end of the body (keeps the connection)

_FINISH: dict[str, str] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

#: Anthropic error `type` -> the HTTP status Anthropic uses for it (errors sent inside a 200).
_ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}

_JSON_OBJECT_INSTRUCTION = (
    "Respond with a single valid JSON object and nothing else: no prose before or after it and no "
    "Markdown code fences."
)
_JSON_SCHEMA_INSTRUCTION = (
    "Respond with a single valid JSON value that conforms to the following JSON Schema{name}, and nothing "
    "else: no prose before or after it and no Markdown code fences.\n{schema}"
)


# ------------------------------------------------------------------------------------ wire types
# Only what we read is declared; unknown fields are ignored (Anthropic adds fields over time).
class _Usage(msgspec.Struct):
    input_tokens: int | None = None
    output_tokens: int | None = None
    cache_creation_input_tokens: int | None = None
    cache_read_input_tokens: int | None = None


class _Block(msgspec.Struct):
    type: str = ""
    text: str | None = None  # text
    id: str | None = None  # tool_use
    name: str | None = None  # tool_use
    input: Any = None  # tool_use
    thinking: str | None = None  # thinking
    signature: str | None = None  # thinking
    data: str | None = None  # redacted_thinking


class _Message(msgspec.Struct):
    type: str = ""  # "message", or "error" for an error body
    content: list[_Block] | None = None
    stop_reason: str | None = None
    stop_sequence: str | None = None
    usage: _Usage | None = None
    error: Any = None


class _Delta(msgspec.Struct):
    type: str = ""  # text_delta | input_json_delta | thinking_delta | signature_delta | ... (content_block_delta)
    text: str | None = None
    partial_json: str | None = None
    thinking: str | None = None  # thinking_delta
    signature: str | None = None  # signature_delta
    stop_reason: str | None = None  # message_delta
    stop_sequence: str | None = None  # message_delta


class _Event(msgspec.Struct):
    type: str = ""
    message: _Message | None = None  # message_start
    index: int | None = None  # content_block_*
    content_block: _Block | None = None  # content_block_start
    delta: _Delta | None = None  # content_block_delta, message_delta
    usage: _Usage | None = None  # message_delta
    error: Any = None  # error


_ENCODER = msgspec.json.Encoder()
_EVENT = msgspec.json.Decoder(_Event)
_MESSAGE = msgspec.json.Decoder(_Message)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


# ------------------------------------------------------------------------------ request building
def _image_source(url: str) -> dict[str, str]:
    """An image ``source``: ``base64`` for a ``data:`` URL, ``url`` otherwise."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        if sep:
            params = header.split(";")
            media_type = params[0].strip().lower()
            if any(p.strip().lower() == "base64" for p in params[1:]):
                b64 = "".join(data.split())
            else:  # a percent-encoded data URL: Anthropic wants base64
                b64 = base64.b64encode(unquote_to_bytes(data)).decode()
            return {"type": "base64", "media_type": media_type, "data": b64}
    return {"type": "url", "url": url}


def _part_blocks(parts: Sequence[ContentPart]) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    for p in parts:
        if p.type == "image_url":
            blocks.append({"type": "image", "source": _image_source(p.image_url)})
        elif p.text.strip():
            blocks.append({"type": "text", "text": p.text})
    return blocks


def _content_blocks(m: Message) -> list[dict[str, Any]]:
    if m.parts:
        return _part_blocks(m.parts)
    return [{"type": "text", "text": m.content}] if m.content and m.content.strip() else []


def _tool_input(arguments: str) -> dict[str, Any]:
    """A tool call's arguments as the object Anthropic's ``input`` must be."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def _tool_result(m: Message) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": m.tool_call_id or ""}
    if m.parts:
        content: list[dict[str, Any]] | str = _part_blocks(m.parts)
    else:
        content = m.content or ""
    if content:
        block["content"] = content
    return block


def _turns(messages: Sequence[Message]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system blocks, alternating user / assistant turns). A message carrying the Anthropic blocks
    it came from (`Message.anthropic_content`, set by Raven's own /v1/messages) sends those."""
    system: list[dict[str, Any]] = []
    turns: list[dict[str, Any]] = []
    for m in messages:
        native: list[dict[str, Any]] | None = msgspec.json.decode(m.anthropic_content) if m.anthropic_content else None
        if m.role in ("system", "developer"):
            if native is not None:
                system.extend(native)
            elif (text := m.text()).strip():
                system.append({"type": "text", "text": text})
            continue
        if native is not None:
            role, blocks = ("assistant" if m.role == "assistant" else "user"), native
        elif m.role == "tool":
            role, blocks = "user", [_tool_result(m)]
        elif m.role == "assistant":
            role, blocks = "assistant", _reasoning_blocks(m) + _content_blocks(m)
            blocks.extend(
                {"type": "tool_use", "id": c.id, "name": c.name, "input": _tool_input(c.arguments)}
                for c in m.tool_calls
            )
        else:
            role, blocks = "user", _content_blocks(m)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": role, "content": blocks})
    for turn in turns:
        blocks = turn["content"]
        if turn["role"] == "user" and len(blocks) > 1:
            # tool_result blocks must open the user turn (stable: both groups keep their order)
            turn["content"] = [b for b in blocks if b["type"] == "tool_result"] + [
                b for b in blocks if b["type"] != "tool_result"
            ]
    return system, turns


def _reasoning_blocks(m: Message) -> list[dict[str, Any]]:
    """An assistant turn's reasoning as the blocks Anthropic wants back before its text and tool_use:
    signed ``thinking`` and ``redacted_thinking``. Unsigned reasoning (another provider's) is not
    sent: Anthropic rejects thinking blocks without a valid signature."""
    blocks: list[dict[str, Any]] = []
    for part in m.reasoning:
        if part.encrypted:
            blocks.append({"type": "redacted_thinking", "data": part.encrypted})
        elif part.signature:
            blocks.append({"type": "thinking", "thinking": part.text, "signature": part.signature})
    return blocks


#: Thinking budgets (tokens) for an OpenAI-style reasoning effort.
_EFFORT_BUDGET = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384, "xhigh": 32000}
_MIN_BUDGET = 1024  # Anthropic's smallest thinking budget


def _thinking(r: ChatRequest, body: dict[str, Any]) -> None:
    """`r.reasoning` -> ``thinking`` (unless the request passed Anthropic's own ``thinking``): a budget
    from ``budget_tokens`` or the effort, kept below ``max_tokens`` as Anthropic requires; effort
    "none" or a budget of 0 -> disabled. Extended thinking allows no temperature: it is dropped."""
    rc = r.reasoning
    if rc is None or "thinking" in body:
        return
    budget = rc.budget_tokens if rc.budget_tokens is not None else _EFFORT_BUDGET.get(rc.effort or "", 0)
    if rc.effort == "none" or budget == 0:
        body["thinking"] = {"type": "disabled"}
        return
    budget = min(max(budget, _MIN_BUDGET), body["max_tokens"] - 1)
    if budget < _MIN_BUDGET:
        return  # max_tokens leaves no room for thinking
    body["thinking"] = {"type": "enabled", "budget_tokens": budget}
    body.pop("temperature", None)


def _closed_objects(schema: Any) -> Any:
    """A JSON Schema with ``additionalProperties: false`` on every object that leaves it open, as
    Anthropic's structured outputs require (what OpenAI's strict mode requires too)."""
    if isinstance(schema, list):
        return [_closed_objects(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _closed_objects(v) if k not in ("enum", "const", "default", "examples") else v
           for k, v in schema.items()}
    if out.get("type") == "object" and "additionalProperties" not in out:
        out["additionalProperties"] = False
    return out


def _native_format(rf: ResponseFormat, body: dict[str, Any]) -> bool:
    """``output_config.format`` for a json_schema response format (merged into a passed-through
    ``output_config``); False for formats with no native equivalent (json_object, text)."""
    if rf.type != "json_schema":
        return False
    config = body.get("output_config")
    config = dict(config) if isinstance(config, dict) else {}
    config["format"] = {"type": "json_schema", "schema": _closed_objects(rf.schema or {"type": "object"})}
    body["output_config"] = config
    return True


def _format_instruction(rf: ResponseFormat) -> str:
    if rf.type == "json_object":
        return _JSON_OBJECT_INSTRUCTION
    if rf.type == "json_schema":
        schema = _ENCODER.encode(rf.schema or {}).decode()
        return _JSON_SCHEMA_INSTRUCTION.format(name=f" (named {rf.name!r})" if rf.name else "", schema=schema)
    return ""


def _tools(r: ChatRequest, body: dict[str, Any], parallel: Any) -> None:
    if not r.tools:
        return
    tools = []
    for t in r.tools:
        if t.anthropic:  # the client's own definition (cache_control, defer_loading, server tools)
            tools.append(msgspec.json.decode(t.anthropic))
            continue
        schema = dict(t.parameters) if t.parameters else {}
        schema.setdefault("type", "object")
        tool: dict[str, Any] = {"name": t.name}
        if t.description:
            tool["description"] = t.description
        tool["input_schema"] = schema
        tools.append(tool)
    body["tools"] = tools
    choice: dict[str, Any] | None = None
    tc = r.tool_choice
    if tc is not None:
        if tc.mode == "required":
            choice = {"type": "any"}
        elif tc.mode == "function":
            choice = {"type": "tool", "name": tc.name or ""}
        else:  # "auto" | "none": the same word in Anthropic's API
            choice = {"type": tc.mode}
    if parallel is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    if choice is not None:
        body["tool_choice"] = choice


def messages_body(
    upstream_model: str, r: ChatRequest, *, stream: bool, default_max_tokens: int = DEFAULT_MAX_TOKENS,
    native_structured_outputs: bool = True,
) -> dict[str, Any]:
    """The Messages API request body for `r`; see the module docstring for the mapping."""
    body: dict[str, Any] = {k: v for k, v in r.extra.items() if k in PASSTHROUGH_EXTRA} if r.extra else {}
    system, turns = _turns(r.messages)
    rf = r.response_format
    if rf is not None and not (native_structured_outputs and _native_format(rf, body)) and (
        instruction := _format_instruction(rf)
    ):
        system.append({"type": "text", "text": instruction})
    body["model"] = upstream_model
    body["max_tokens"] = r.max_tokens if r.max_tokens is not None else default_max_tokens
    if system:
        # plain texts stay one string, as before; blocks with more (cache_control ...) go as blocks
        plain = all(b.get("type") == "text" and len(b) == 2 and isinstance(b.get("text"), str) for b in system)
        body["system"] = "\n\n".join(b["text"] for b in system) if plain else system
    body["messages"] = turns
    if r.temperature is not None:
        body["temperature"] = min(1.0, max(0.0, float(r.temperature)))
    if r.top_p is not None:
        body["top_p"] = r.top_p
    if r.stop:
        body["stop_sequences"] = list(r.stop)
    _tools(r, body, r.extra.get("parallel_tool_calls") if r.extra else None)
    if r.user is not None:
        metadata = body.get("metadata")
        body["metadata"] = {**(metadata if isinstance(metadata, dict) else {}), "user_id": r.user}
    _thinking(r, body)
    if stream:
        body["stream"] = True
    return body


# ---------------------------------------------------------------------------- response translation
def normalise_stop_reason(native: str | None, made_tool_calls: bool = False) -> str:
    """The core finish reason for an Anthropic ``stop_reason`` (SPEC §8): end_turn, stop_sequence,
    pause_turn -> stop; max_tokens -> length; tool_use -> tool_calls; refusal -> content_filter;
    anything else -> stop. A reply that made tool calls and would finish "stop" finishes
    "tool_calls" (what OpenAI clients look for before running tools)."""
    reason = _FINISH.get(native, "stop") if native else "stop"
    return "tool_calls" if reason == "stop" and made_tool_calls else reason


def mint_call_id() -> str:
    """A fresh ``call_`` + 24 hex characters id, for a tool_use block that came without one."""
    return "call_" + os.urandom(12).hex()


def _block_key(ev: _Event) -> int:
    return ev.index if ev.index is not None else -1


def _json_text(value: Any) -> str:
    return _ENCODER.encode(value if value is not None else {}).decode()


def _estimate_prompt(r: ChatRequest) -> int:
    return count_message_tokens(r.messages, r.tools)


def _payload_error(provider: str, error: Any, secrets: Sequence[str]) -> UpstreamError:
    """The core error for an Anthropic error object received inside a 200 (stream event or body);
    carries the HTTP status Anthropic uses for that error type."""
    err = error_from_payload(provider, error, secrets=secrets)
    kind = error.get("type") if isinstance(error, dict) else None
    status = _ERROR_STATUS.get(kind) if isinstance(kind, str) else None
    if status is not None:
        err.status = status
        if status == 429 or status >= 500:
            err.retryable = True
        if status == 429:
            err.code = "upstream_rate_limited"
    return err


class _Call:
    """A streamed tool_use block being reassembled."""

    __slots__ = ("args", "ordinal")

    def __init__(self, ordinal: int) -> None:
        self.ordinal = ordinal
        self.args: list[str] = []


class _StreamState(StreamStateBase):
    """Per-stream translation state: Anthropic events in, core events out (into `out`)."""

    __slots__ = ("cache_creation", "cache_read", "calls", "input_tokens", "output_tokens", "stop_reason",
                 "stop_sequence", "text", "thinking")

    def __init__(self, provider: str, secrets: Sequence[str]) -> None:
        super().__init__(provider, secrets)
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}  # Anthropic block index -> call
        self.thinking: dict[int, int] = {}  # Anthropic block index -> reasoning block ordinal
        self.input_tokens: int | None = None
        self.cache_creation = 0
        self.cache_read = 0
        self.output_tokens: int | None = None
        self.stop_reason: str | None = None
        self.stop_sequence = ""

    @property
    def finished(self) -> bool:
        return self.stop_reason is not None

    def on_event(self, event: SSEEvent) -> None:
        self.handle(event.event, event.data)

    def failed(self, error: Any) -> UpstreamError:
        """The error for an ``error`` event; never retryable once events went out."""
        err = _payload_error(self.provider, error, self.secrets)
        if self.emitted:
            err.retryable = False
        return err

    def usage(self, u: _Usage | None) -> None:
        if u is None:
            return
        if u.input_tokens is not None:
            self.input_tokens = u.input_tokens
        if u.cache_creation_input_tokens is not None:
            self.cache_creation = u.cache_creation_input_tokens
        if u.cache_read_input_tokens is not None:
            self.cache_read = u.cache_read_input_tokens
        if u.output_tokens is not None:
            self.output_tokens = u.output_tokens

    def handle(self, name: str, data: bytes) -> None:
        """Translates one SSE event (`name` is its ``event:`` field)."""
        try:
            ev = _EVENT.decode(data)
        except _DECODE_ERRORS:
            if name == "error":
                raise self.failed(data[:500].decode("utf-8", "replace")) from None
            snippet = data[:80].decode("utf-8", "replace")
            raise self.malformed(f"a malformed stream event: {snippet!r}") from None
        kind = ev.type or name
        if kind == "content_block_delta":
            self._delta(ev)
        elif kind == "content_block_start":
            self._start(ev)
        elif kind == "content_block_stop":
            call = self.calls.get(_block_key(ev))
            if call is not None and not call.args:  # a call without input: "{}", never ""
                call.args.append("{}")
                self._emit(ToolCallDelta(index=call.ordinal, arguments="{}"))
        elif kind == "message_start":
            if ev.message is not None:
                self.usage(ev.message.usage)
        elif kind == "message_delta":
            if ev.delta is not None and ev.delta.stop_reason:
                self.stop_reason = ev.delta.stop_reason
                self.stop_sequence = ev.delta.stop_sequence or ""
            self.usage(ev.usage)
        elif kind == "message_stop":
            self.done = True
        elif kind == "error":
            raise self.failed(ev.error if ev.error is not None else "unknown error")
        # "ping" and event types added after this was written are ignored

    def _emit(self, event: ChatEvent) -> None:
        self.out.append(event)
        self.emitted = True

    def _start(self, ev: _Event) -> None:
        block = ev.content_block
        if block is None:
            return
        if block.type == "text":
            if block.text:
                self.text.append(block.text)
                self._emit(TextDelta(text=block.text))
        elif block.type == "tool_use":
            call = self.calls[_block_key(ev)] = _Call(len(self.calls))
            # The input normally streams as input_json_delta after an empty {}; take a non-empty one.
            args = _json_text(block.input) if isinstance(block.input, dict) and block.input else ""
            if args:
                call.args.append(args)
            self._emit(ToolCallDelta(index=call.ordinal, id=block.id or mint_call_id(), name=block.name or "",
                                     arguments=args))
        elif block.type in ("thinking", "redacted_thinking"):
            ordinal = self.thinking[_block_key(ev)] = len(self.thinking)
            text, signature, data = block.thinking or "", block.signature or "", block.data or ""
            if text or signature or data:
                self.text.append(text)
                self._emit(ReasoningDelta(index=ordinal, text=text, signature=signature, encrypted=data))
        # server_tool_use, web_search_tool_result, mcp_tool_use, ... (Anthropic runs those tools
        # itself): not client tool calls; skipped, with their deltas, and the stream goes on

    def _delta(self, ev: _Event) -> None:
        delta = ev.delta
        if delta is None:
            return
        if delta.type == "text_delta":
            if delta.text:
                self.text.append(delta.text)
                self._emit(TextDelta(text=delta.text))
        elif delta.type == "input_json_delta":
            call = self.calls.get(_block_key(ev))
            # a server_tool_use / mcp_tool_use block streams its input too: not a client call, skipped
            if call is not None and delta.partial_json:
                call.args.append(delta.partial_json)
                self._emit(ToolCallDelta(index=call.ordinal, arguments=delta.partial_json))
        elif delta.type in ("thinking_delta", "signature_delta"):
            ordinal = self.thinking.get(_block_key(ev))
            if ordinal is None:  # a thinking delta without its block start: a block of its own
                ordinal = self.thinking[_block_key(ev)] = len(self.thinking)
            if delta.thinking:
                self.text.append(delta.thinking)
                self._emit(ReasoningDelta(index=ordinal, text=delta.thinking))
            if delta.signature:
                self._emit(ReasoningDelta(index=ordinal, signature=delta.signature))
        # citations_delta and delta types added after this was written: not surfaced

    def ending(self, request: ChatRequest) -> tuple[Finish, UsageReport]:
        """The closing Finish and UsageReport."""
        native = self.stop_reason or ""
        finish = Finish(reason=normalise_stop_reason(native, bool(self.calls)), native=native,
                        stop_sequence=self.stop_sequence)
        prompt = self.input_tokens
        completion = self.output_tokens
        if prompt is not None and completion is not None:
            return finish, UsageReport(
                prompt_tokens=prompt + self.cache_creation + self.cache_read, completion_tokens=completion,
                cached_tokens=self.cache_read, cache_creation_tokens=self.cache_creation,
            )
        prompt = _estimate_prompt(request) if prompt is None else prompt + self.cache_creation + self.cache_read
        if completion is None:
            completion = count_tokens("".join(self.text)) + sum(
                count_tokens("".join(c.args)) for c in self.calls.values()
            )
        return finish, UsageReport(prompt_tokens=prompt, completion_tokens=completion, estimated=True,
                                   cached_tokens=self.cache_read, cache_creation_tokens=self.cache_creation)


# ------------------------------------------------------------------------------------- the adapter
class AnthropicProvider:
    """Chat adapter for Anthropic's Messages API (one per configured provider).

    Implements `core.ports.ChatProvider`. Holds one pooled HTTP session (created lazily in the
    running loop); `aclose()` closes it.
    """

    def __init__(
        self,
        name: str,
        cfg: UpstreamSettings,
        *,
        http: UpstreamClient | None = None,
        default_max_tokens: int = DEFAULT_MAX_TOKENS,
    ) -> None:
        self.name = name
        self.cfg = cfg
        self.base_url = cfg.base_url.rstrip("/")
        self.default_max_tokens = default_max_tokens
        #: ``[providers.NAME] anthropic_version`` (the header sent), default `ANTHROPIC_VERSION`.
        self.anthropic_version: str = getattr(cfg, "anthropic_version", "") or ANTHROPIC_VERSION
        self.native_structured_outputs = self.anthropic_version >= NATIVE_STRUCTURED_OUTPUTS_SINCE
        self._url = self.base_url + MESSAGES_PATH
        self._http = http or upstream_client(name, cfg)
        self._static_secrets = tuple(v for k, v in cfg.headers.items() if k.lower() in _AUTH_HEADERS)
        self._http.secrets = self._static_secrets
        self._key: str | None = None
        self._hdr_json: dict[str, str] = {}
        self._hdr_sse: dict[str, str] = {}
        self._build_headers(None)

    # -- credentials and headers
    def _build_headers(self, key: str | None) -> None:
        headers = {
            "User-Agent": USER_AGENT,
            "Accept": "application/json",
            "Content-Type": "application/json",
            "anthropic-version": self.anthropic_version,
        }
        if key:
            headers["x-api-key"] = key
        headers.update(self.cfg.headers)  # configured headers win (anthropic-beta, a proxy's auth ...)
        self._hdr_json = headers
        self._hdr_sse = {**headers, "Accept": "text/event-stream"}
        self._key = key
        self._http.secrets = (*self._static_secrets, key) if key else self._static_secrets

    def _request_headers(self, req: ProviderChatRequest, stream: bool) -> dict[str, str]:
        """`_headers`, plus the client's ``anthropic-beta`` values after the configured ones."""
        headers = self._headers(stream)
        betas = req.request.anthropic_beta
        if not betas:
            return headers
        key = next((k for k in headers if k.lower() == "anthropic-beta"), "anthropic-beta")
        configured = [b.strip() for b in headers.get(key, "").split(",") if b.strip()]
        merged = configured + [b for b in betas if b not in configured]
        return {**headers, key: ",".join(merged)}

    def _headers(self, stream: bool) -> dict[str, str]:
        """The request headers, with the API key read from the environment now (a rotated key is
        picked up without a restart)."""
        env = self.cfg.api_key_env
        if env:
            key = os.environ.get(env)
            if not key:
                raise UpstreamError(
                    f"provider {self.name!r} has no API key: the environment variable {env} is not set",
                    provider=self.name,
                    retryable=False,
                    code="upstream_auth_missing",
                    kind=BROKEN,
                )
            if key != self._key:
                self._build_headers(key)
        return self._hdr_sse if stream else self._hdr_json

    def _malformed(self, what: str) -> UpstreamError:
        return UpstreamError(f"upstream {self.name!r} sent {what}", provider=self.name, retryable=False, kind=BROKEN)

    def _body(self, req: ProviderChatRequest, *, stream: bool) -> bytes:
        body = messages_body(req.upstream_model, req.request, stream=stream,
                             default_max_tokens=self.default_max_tokens,
                             native_structured_outputs=self.native_structured_outputs)
        return _ENCODER.encode(body)

    # -- unary
    def _result(self, request: ChatRequest, raw: bytes) -> ChatResult:
        try:
            message = _MESSAGE.decode(raw)
        except _DECODE_ERRORS:
            raise self._malformed("a malformed message") from None
        if message.type == "error" or message.error is not None:
            raise _payload_error(self.name, message.error, self._http.secrets)
        texts: list[str] = []
        calls: list[ToolCall] = []
        reasoning: list[ReasoningPart] = []
        for block in message.content or ():
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use":
                call_id = block.id or mint_call_id()
                calls.append(ToolCall(id=call_id, name=block.name or "", arguments=_json_text(block.input)))
            elif block.type == "thinking":
                reasoning.append(ReasoningPart(text=block.thinking or "", signature=block.signature or ""))
            elif block.type == "redacted_thinking":
                reasoning.append(ReasoningPart(encrypted=block.data or ""))
            # server_tool_use, web_search_tool_result, ...: run by Anthropic, not client calls
        content = "".join(texts) if texts else None
        native = message.stop_reason or ""
        usage = message.usage
        prompt = usage.input_tokens if usage is not None else None
        completion = usage.output_tokens if usage is not None else None
        estimated = prompt is None or completion is None
        if prompt is None:
            prompt = _estimate_prompt(request)
        elif usage is not None:
            prompt += (usage.cache_creation_input_tokens or 0) + (usage.cache_read_input_tokens or 0)
        if completion is None:
            completion = count_tokens(content) + sum(count_tokens(c.arguments) for c in calls) + sum(
                count_tokens(r.text) for r in reasoning
            )
        return ChatResult(
            content=content,
            tool_calls=tuple(calls),
            finish_reason=normalise_stop_reason(native, bool(calls)),
            native_finish_reason=native,
            stop_sequence=message.stop_sequence or "",
            prompt_tokens=prompt,
            completion_tokens=completion,
            usage_estimated=estimated,
            reasoning=tuple(reasoning),
            cached_tokens=(usage.cache_read_input_tokens or 0) if usage is not None else 0,
            cache_creation_tokens=(usage.cache_creation_input_tokens or 0) if usage is not None else 0,
        )

    async def complete(self, req: ProviderChatRequest) -> ChatResult:
        """One whole completion from the non-streaming call."""
        headers = self._request_headers(req, stream=False)
        resp = await self._http.send("POST", self._url, headers=headers, body=self._body(req, stream=False))
        async with resp:
            raw = await resp.read(_MAX_BODY)
        return self._result(req.request, raw)

    # -- streaming
    async def stream(self, req: ProviderChatRequest) -> AsyncIterator[ChatEvent]:
        """Streams the completion; see the module docstring for the event contract. Stopping the
        iteration (aclose, cancellation) closes the upstream connection at once."""
        headers = self._request_headers(req, stream=True)
        resp = await self._http.send("POST", self._url, headers=headers, body=self._body(req, stream=True))
        try:
            if resp.content_type == "application/json":  # a whole message (or error) instead of events
                for event in result_events(self._result(req.request, await resp.read(_MAX_BODY))):
                    yield event
                return
            state = _StreamState(self.name, self._http.secrets)
            decoder = SSEDecoder()
            while (batch := await next_batch(self.name, resp, state, decoder)) is not None:
                for event in batch:
                    yield event
            finish, usage = state.ending(req.request)
            yield finish
            yield usage
            if not resp.at_eof:
                await resp.finish(_DRAIN_GRACE)  # let the connection go back to the pool
        finally:
            resp.close()

    async def aclose(self) -> None:
        """Closes the upstream connection pool."""
        await self._http.aclose()


def create(name: str, cfg: UpstreamSettings) -> AnthropicProvider:
    """The composition root's factory (raven_service.wiring) for ``kind = "anthropic"``."""
    return AnthropicProvider(name, cfg)
