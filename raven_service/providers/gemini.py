"""The ``gemini`` provider kind: Google's Gemini API (``generativelanguage.googleapis.com``).

- Unary chat: ``POST {base_url}/v1beta/models/{model}:generateContent``.
- Streamed chat: ``POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse``; every SSE
  event is a whole ``GenerateContentResponse`` carrying the next parts, and the body simply ends
  after the chunk with the ``finishReason`` (there is no ``[DONE]``).
- The API key goes in the ``x-goog-api-key`` header (read from ``cfg.api_key_env`` on every call,
  so a rotated key is picked up), never in the URL; it is scrubbed from every error message.
  ``base_url`` is the API root (``https://generativelanguage.googleapis.com``); a root that
  already ends in ``/v1beta`` or ``/v1`` is used as given.

Request translation (OpenAI semantics -> Gemini):

- system / developer messages -> ``systemInstruction`` (all of them, in order, wherever they sit:
  Gemini has one system instruction per request); user -> role ``user``; assistant -> role
  ``model``; tool results -> role ``user`` ``functionResponse`` parts whose ``name`` is looked up
  from the earlier assistant tool call with the same id (else the tool message's own ``name``, else
  ``"function"``), and whose ``response`` is the tool output parsed as a JSON object, or
  ``{"content": <text>}`` when it is not one. Consecutive contents of the same role are merged
  (Gemini wants alternating turns, and all the responses to one set of parallel calls in one
  content).
- Text parts -> ``{text}``; ``data:`` image URLs -> ``{inlineData: {mimeType, data}}``; other
  URLs -> ``{fileData: {fileUri, mimeType}}`` with the type guessed from the path (else
  ``image/jpeg``); ``detail`` is dropped. User ``name`` fields have no Gemini equivalent either.
  Call ids are not sent (Gemini's ``id`` fields are optional and matched by order otherwise).
- Assistant tool calls -> ``{functionCall: {name, args}}`` (args parsed from the JSON text; a
  non-object is wrapped as ``{"value": ...}``). Gemini 3 rejects a model turn whose first function
  call has no ``thoughtSignature``: the adapter remembers the signatures of the calls it handed
  out (a bounded in-process map keyed by tool-call id) and sends them back; for calls it does not
  know (another instance, another provider, a hand-written history) it sends Google's documented
  placeholder ``skip_thought_signature_validator``.
- ``generationConfig``: maxOutputTokens, temperature, topP, stopSequences, seed, frequencyPenalty,
  presencePenalty; ``response_format`` json_object / json_schema -> ``responseMimeType
  "application/json"`` plus, for json_schema, ``responseJsonSchema``. Tool parameter schemas go in
  ``parametersJsonSchema``. Both ``*JsonSchema`` fields take standard JSON Schema, which is what
  OpenAI clients send (``additionalProperties: false`` in strict mode, ``$defs``/``$ref``,
  ``anyOf``, ``$schema``...), whereas ``responseSchema`` / ``parameters`` take Google's OpenAPI
  subset and answer 400 to several of those keywords; rewriting schemas into that subset would
  lose meaning (``$ref``, ``additionalProperties``), so the schemas pass through untouched.
- ``tool_choice`` -> ``toolConfig.functionCallingConfig.mode`` AUTO / ANY / NONE (``required`` ->
  ANY; a named function -> ANY with ``allowedFunctionNames``); sent only with tools.
- Of the unknown top-level keys (``extra``) only Gemini-meaningful ones are used: ``top_k`` ->
  ``topK``, ``generation_config`` / ``generationConfig`` merged under the translated config,
  ``safety_settings`` / ``safetySettings`` and ``cached_content`` / ``cachedContent`` passed
  through. Others (e.g. ``logit_bias``) are dropped: Gemini answers 400 to unknown fields.

Response translation (``candidates[0]``): text parts -> TextDelta; ``thought: true`` parts (thought
summaries, sent with ``includeThoughts``) -> reasoning block 0 (ReasoningDelta, their
``thoughtSignature`` as its signature); each ``functionCall`` part -> a whole tool call (Gemini
never splits one): a ToolCallDelta
with index (call ordinal), id (the part's ``id`` when Gemini gives one, else a minted ``call_`` +
24 alphanumerics) and name, then one ToolCallDelta with all the arguments (``args`` as JSON text).
Other part kinds (executable code, inline images) are ignored.

finish_reason (SPEC §8), the raw value always kept as ``native``:

    STOP, FINISH_REASON_UNSPECIFIED, OTHER, LANGUAGE, MALFORMED_FUNCTION_CALL,
    UNEXPECTED_TOOL_CALL, TOO_MANY_TOOL_CALLS, NO_IMAGE, ... ........... stop (tool_calls if
                                                                          calls were returned)
    MAX_TOKENS .......................................................... length
    SAFETY, RECITATION, BLOCKLIST, PROHIBITED_CONTENT, SPII, IMAGE_SAFETY,
    IMAGE_PROHIBITED_CONTENT, IMAGE_RECITATION .......................... content_filter
    no candidates, promptFeedback.blockReason = R ....................... content_filter (native R)

The "other" reasons are neither a length cut nor a policy block, and ``error`` is reserved for
transport failures (the gateway turns it into an error chunk), so they finish ``stop`` and the
native value tells the client what happened.

``reasoning`` -> ``generationConfig.thinkingConfig``: ``thinkingBudget`` (budget_tokens, or the
effort: minimal 512, low 1024, medium 8192, high 24576, xhigh 32768; none -> 0) and
``includeThoughts`` (true unless the budget is 0); a client's own thinkingConfig wins.

Usage: prompt = ``promptTokenCount`` (+ ``toolUsePromptTokenCount``, billed as input), of which
``cachedContentTokenCount`` -> cached_tokens;
completion = ``candidatesTokenCount`` + ``thoughtsTokenCount`` (thinking is billed as output; the
latter -> reasoning_tokens),
taken from the last response that carries ``usageMetadata`` (Gemini repeats running totals on every
chunk). Zero counts are omitted in Gemini's JSON, so a missing count is 0, except that a missing
``candidatesTokenCount`` next to returned content is estimated. With no usage at all, both sides
are counted with `core.tokens` and flagged ``estimated``.

Stream contract (core.ports.ChatProvider): deltas, then exactly one Finish, then exactly one
UsageReport. Errors: HTTP statuses and transport failures are mapped in `providers._http` (Google's
``{"error": {"code", "message", "status"}}`` body gives the message; 429 RESOURCE_EXHAUSTED, 5xx
retryable); an ``error`` object inside a 200 body or stream is mapped by its ``code``. Once an
event went out nothing is retryable. Stopping the iteration (aclose, cancellation) closes the
upstream connection at once.
"""

from __future__ import annotations

import base64
import mimetypes
import os
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from typing import Any
from urllib.parse import quote, unquote_to_bytes, urlsplit

import msgspec

from raven_service.core.errors import BROKEN, UpstreamError
from raven_service.core.tokens import count_message_tokens, count_tokens
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    ContentPart,
    EmbeddingRequest,
    EmbeddingResult,
    Finish,
    Message,
    ProviderChatRequest,
    ReasoningDelta,
    ReasoningPart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
    function_tools,
)
from raven_service.providers._client import upstream_client
from raven_service.providers._http import UpstreamClient, error_from_payload
from raven_service.providers._sse import SSEDecoder, SSEEvent
from raven_service.providers._stream import StreamStateBase, next_batch
from raven_service.providers.settings import UpstreamSettings

__all__ = [
    "SKIP_SIGNATURE",
    "GeminiProvider",
    "ThoughtSignatures",
    "create",
    "generate_content_body",
    "normalise_finish",
]

USER_AGENT = "raven-router/0.1"
API_VERSION = "v1beta"
#: Google's documented placeholder for a function call whose thought signature is unknown.
SKIP_SIGNATURE = "skip_thought_signature_validator"
DEFAULT_IMAGE_MIME = "image/jpeg"
_AUTH_HEADERS = frozenset({"authorization", "x-goog-api-key", "proxy-authorization"})
_MAX_BODY = 64 * 1024 * 1024
_DRAIN_GRACE = 0.1  # seconds to wait for the end of a finished body, to keep the connection

_CONTENT_FILTER = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
    }
)
_TOOL_MODES = {"none": "NONE", "auto": "AUTO", "required": "ANY", "function": "ANY"}


# ------------------------------------------------------------------------------------ wire types
class _Wire(msgspec.Struct, rename="camel"):
    """Base of the decoded Gemini shapes: camelCase on the wire, unknown fields ignored."""


class _FunctionCall(_Wire):
    name: str | None = None
    args: dict[str, Any] | None = None
    id: str | None = None


class _Part(_Wire):
    text: str | None = None
    thought: bool = False
    thought_signature: str | None = None
    function_call: _FunctionCall | None = None


class _Content(_Wire):
    parts: list[_Part] | None = None
    role: str | None = None


class _Candidate(_Wire):
    content: _Content | None = None
    finish_reason: str | None = None
    index: int = 0


class _PromptFeedback(_Wire):
    block_reason: str | None = None


class _Usage(_Wire):
    prompt_token_count: int | None = None
    candidates_token_count: int | None = None
    thoughts_token_count: int | None = None
    tool_use_prompt_token_count: int | None = None
    cached_content_token_count: int | None = None  # of promptTokenCount: read from a (implicit) cache


class _Response(_Wire):
    """A ``GenerateContentResponse`` (or a stream chunk, which has the same shape)."""

    candidates: list[_Candidate] | None = None
    prompt_feedback: _PromptFeedback | None = None
    usage_metadata: _Usage | None = None
    error: Any = None


class _Embedding(_Wire):
    values: list[float] | None = None


class _Embeddings(_Wire):
    """An ``EmbedContentResponse`` (``embedding``) or ``BatchEmbedContentsResponse`` (``embeddings``)."""

    embedding: _Embedding | None = None
    embeddings: list[_Embedding] | None = None
    error: Any = None


_ENCODER = msgspec.json.Encoder()
_EMBEDDINGS = msgspec.json.Decoder(_Embeddings)
_RESPONSE = msgspec.json.Decoder(_Response)
_RESPONSES = msgspec.json.Decoder(list[_Response] | _Response)  # streamGenerateContent without alt=sse
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


# ------------------------------------------------------------------------------ thought signatures
class ThoughtSignatures:
    """A bounded map (LRU) from tool-call id to the ``thoughtSignature`` Gemini attached to that
    call, so the next turn can send it back. In-process only: a call made through another instance
    falls back to `SKIP_SIGNATURE`."""

    __slots__ = ("_items", "_limit")

    def __init__(self, limit: int = 4096) -> None:
        self._items: OrderedDict[str, str] = OrderedDict()
        self._limit = limit

    def put(self, call_id: str, signature: str) -> None:
        self._items[call_id] = signature
        self._items.move_to_end(call_id)
        while len(self._items) > self._limit:
            self._items.popitem(last=False)

    def get(self, call_id: str) -> str | None:
        return self._items.get(call_id)

    def __len__(self) -> int:
        return len(self._items)


# ------------------------------------------------------------------------------ request building
def _image_part(url: str) -> dict[str, Any]:
    """An image URL as a Gemini part: inline data for ``data:`` URLs, a file reference otherwise."""
    if url.startswith("data:"):
        meta, sep, payload = url[5:].partition(",")
        if sep:
            mime, *flags = meta.split(";")
            if "base64" in flags:
                data = "".join(payload.split())
            else:
                data = base64.b64encode(unquote_to_bytes(payload)).decode()
            return {"inlineData": {"mimeType": mime or DEFAULT_IMAGE_MIME, "data": data}}
    guessed, _ = mimetypes.guess_type(urlsplit(url).path)
    return {"fileData": {"mimeType": guessed or DEFAULT_IMAGE_MIME, "fileUri": url}}


def _part(p: ContentPart) -> dict[str, Any] | None:
    if p.type == "image_url":
        return _image_part(p.image_url) if p.image_url else None
    return {"text": p.text} if p.text else None


def _user_parts(m: Message) -> list[dict[str, Any]]:
    if m.parts:
        return [part for p in m.parts if (part := _part(p)) is not None]
    return [{"text": m.content}] if m.content else []


def _args(arguments: str) -> dict[str, Any]:
    """Tool-call arguments (JSON text) as the object Gemini's ``args`` wants."""
    if not arguments.strip():
        return {}
    try:
        value = msgspec.json.decode(arguments)
    except msgspec.DecodeError:
        return {"value": arguments}
    return value if isinstance(value, dict) else {"value": value}


def _model_parts(m: Message, names: dict[str, str], signatures: ThoughtSignatures | None) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = m.text()
    if text:
        parts.append({"text": text})
    for call in m.tool_calls:
        names[call.id] = call.name
        part: dict[str, Any] = {"functionCall": {"name": call.name, "args": _args(call.arguments)}}
        signature = signatures.get(call.id) if signatures is not None else None
        if signature:
            part["thoughtSignature"] = signature
        parts.append(part)
    return parts


def _function_response(m: Message, names: dict[str, str]) -> dict[str, Any]:
    name = names.get(m.tool_call_id or "") or m.name or "function"
    text = m.text()
    try:
        value = msgspec.json.decode(text) if text else None
    except msgspec.DecodeError:
        value = None
    response = value if isinstance(value, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _contents(
    messages: Sequence[Message], signatures: ThoughtSignatures | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(system instruction parts, contents) for `messages`."""
    names: dict[str, str] = {}  # tool_call_id -> function name, from earlier assistant turns
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    for m in messages:
        if m.role in ("system", "developer"):
            text = m.text()
            if text:
                system.append({"text": text})
            continue
        if m.role == "assistant":
            role, parts = "model", _model_parts(m, names, signatures)
        elif m.role == "tool":
            role, parts = "user", [_function_response(m, names)]
        else:
            role, parts = "user", _user_parts(m)
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    for content in contents:  # Gemini 3 wants a signature on the first function call of a model turn
        if content["role"] == "model":
            first = next((p for p in content["parts"] if "functionCall" in p), None)
            if first is not None and "thoughtSignature" not in first:
                first["thoughtSignature"] = SKIP_SIGNATURE
    return system, contents


def _generation_config(r: ChatRequest) -> dict[str, Any]:
    config: dict[str, Any] = {}
    extra = r.extra
    for key in ("generationConfig", "generation_config"):
        if isinstance(extra.get(key), dict):
            config.update(extra[key])
    if isinstance(extra.get("top_k"), int) and not isinstance(extra["top_k"], bool):
        config["topK"] = extra["top_k"]
    for name, wire in (
        ("max_tokens", "maxOutputTokens"),
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("seed", "seed"),
        ("frequency_penalty", "frequencyPenalty"),
        ("presence_penalty", "presencePenalty"),
    ):
        value = getattr(r, name)
        if value is not None:
            config[wire] = value
    if r.stop:
        config["stopSequences"] = list(r.stop)
    rf = r.response_format
    if rf is not None and rf.type in ("json_object", "json_schema"):
        config["responseMimeType"] = "application/json"
        if rf.type == "json_schema" and rf.schema:
            config["responseJsonSchema"] = rf.schema
    if (rc := r.reasoning) is not None and "thinkingConfig" not in config:
        budget = rc.budget_tokens if rc.budget_tokens is not None else _EFFORT_BUDGET.get(rc.effort or "")
        if rc.effort == "none":
            budget = 0
        thinking: dict[str, Any] = {"includeThoughts": budget != 0}
        if budget is not None:
            thinking["thinkingBudget"] = budget
        config["thinkingConfig"] = thinking
    return config


#: thinkingBudget for an OpenAI-style reasoning effort (the values of Gemini's own OpenAI layer).
_EFFORT_BUDGET = {"minimal": 512, "low": 1024, "medium": 8192, "high": 24576, "xhigh": 32768}


def _tools(r: ChatRequest, body: dict[str, Any]) -> None:
    fn_tools = function_tools(r.tools)  # Anthropic server tools are not for this upstream
    if not fn_tools:
        return
    declarations = []
    for t in fn_tools:
        decl: dict[str, Any] = {"name": t.name}
        if t.description:
            decl["description"] = t.description
        if t.parameters:
            decl["parametersJsonSchema"] = t.parameters
        declarations.append(decl)
    body["tools"] = [{"functionDeclarations": declarations}]
    tc = r.tool_choice
    if tc is not None:
        calling: dict[str, Any] = {"mode": _TOOL_MODES[tc.mode]}
        if tc.mode == "function" and tc.name:
            calling["allowedFunctionNames"] = [tc.name]
        body["toolConfig"] = {"functionCallingConfig": calling}


def generate_content_body(r: ChatRequest, signatures: ThoughtSignatures | None = None) -> dict[str, Any]:
    """The ``GenerateContentRequest`` for `r` (the same for the unary and the streaming call; the
    model is in the URL). `signatures` supplies thought signatures for earlier tool calls."""
    system, contents = _contents(r.messages, signatures)
    body: dict[str, Any] = {"contents": contents}
    if system:
        body["systemInstruction"] = {"parts": system}
    _tools(r, body)
    config = _generation_config(r)
    if config:
        body["generationConfig"] = config
    for keys, wire in ((("safety_settings", "safetySettings"), "safetySettings"),
                       (("cached_content", "cachedContent"), "cachedContent")):
        for key in keys:
            if r.extra.get(key) is not None:
                body[wire] = r.extra[key]
    return body


# ---------------------------------------------------------------------------- response translation
def normalise_finish(native: str | None, made_tool_calls: bool = False) -> str:
    """The core finish reason for a Gemini ``finishReason`` (see the module docstring)."""
    if native == "MAX_TOKENS":
        return "length"
    if native in _CONTENT_FILTER:
        return "content_filter"
    return "tool_calls" if made_tool_calls else "stop"


def mint_call_id() -> str:
    """A fresh ``call_`` + 24 alphanumerics id, for function calls Gemini gives no id."""
    return "call_" + os.urandom(12).hex()


class _Translation(StreamStateBase):
    """Per-request translation state: Gemini responses in, core events out (into `out`).

    Used for whole responses (unary) and for stream chunks alike."""

    __slots__ = ("blocked", "calls", "finish_native", "signatures", "text", "thought_signature", "thoughts",
                 "usage")

    def __init__(self, provider: str, secrets: Sequence[str], signatures: ThoughtSignatures | None) -> None:
        super().__init__(provider, secrets)
        self.signatures = signatures
        self.text: list[str] = []
        self.thoughts: list[str] = []
        self.thought_signature = ""
        self.calls: list[ToolCall] = []
        self.usage: _Usage | None = None
        self.finish_native: str | None = None
        self.blocked: str | None = None  # promptFeedback.blockReason of a response without candidates

    @property
    def finished(self) -> bool:
        return self.finish_native is not None or self.blocked is not None

    def on_event(self, event: SSEEvent) -> None:
        self.handle_data(event.data)

    def failed(self, error: Any) -> UpstreamError:
        """The error for an ``error`` object; never retryable once events went out."""
        err = error_from_payload(self.provider, error, secrets=self.secrets)
        if self.emitted:
            err.retryable = False
        return err

    def handle_data(self, data: bytes) -> None:
        """Translates one SSE event's data (one GenerateContentResponse)."""
        if not data.strip() or data.strip() == b"[DONE]":  # some Gemini-fronting proxies add [DONE]
            return
        try:
            response = _RESPONSE.decode(data)
        except _DECODE_ERRORS:
            snippet = data[:80].decode("utf-8", "replace")
            raise self.malformed(f"a malformed stream event: {snippet!r}") from None
        self.handle(response)

    def handle(self, response: _Response) -> None:
        """Translates one response / chunk."""
        if response.error is not None:
            raise self.failed(response.error)
        if response.usage_metadata is not None:
            self.usage = response.usage_metadata
        candidates = response.candidates
        if not candidates:
            feedback = response.prompt_feedback
            if feedback is not None and feedback.block_reason:
                self.blocked = feedback.block_reason
            return
        candidate = next((c for c in candidates if c.index == 0), candidates[0])
        content = candidate.content
        if content is not None and content.parts:
            for part in content.parts:
                self._part(part)
        if candidate.finish_reason:
            self.finish_native = candidate.finish_reason

    def _part(self, part: _Part) -> None:
        if part.thought:  # a thought summary (includeThoughts): reasoning block 0
            if part.text or part.thought_signature:
                self.thoughts.append(part.text or "")
                self.thought_signature = part.thought_signature or self.thought_signature
                self.out.append(ReasoningDelta(index=0, text=part.text or "", signature=part.thought_signature or ""))
                self.emitted = True
            return
        fc = part.function_call
        if fc is not None:
            call_id = fc.id or mint_call_id()
            name = fc.name or ""
            arguments = _ENCODER.encode(fc.args if fc.args is not None else {}).decode()
            index = len(self.calls)
            self.calls.append(ToolCall(id=call_id, name=name, arguments=arguments))
            self.out.append(ToolCallDelta(index=index, id=call_id, name=name))
            self.out.append(ToolCallDelta(index=index, arguments=arguments))
            if part.thought_signature and self.signatures is not None:
                self.signatures.put(call_id, part.thought_signature)
            self.emitted = True
        elif part.text:
            self.text.append(part.text)
            self.out.append(TextDelta(text=part.text))
            self.emitted = True

    def finish(self) -> Finish:
        if self.finish_native is None and self.blocked is not None:
            return Finish(reason="content_filter", native=self.blocked)
        return Finish(reason=normalise_finish(self.finish_native, bool(self.calls)), native=self.finish_native or "")

    def usage_report(self, request: ChatRequest) -> UsageReport:
        usage = self.usage
        prompt = completion = None
        if usage is not None and usage.prompt_token_count is not None:
            prompt = usage.prompt_token_count + (usage.tool_use_prompt_token_count or 0)
            if usage.candidates_token_count is not None or not (self.text or self.calls):
                completion = (usage.candidates_token_count or 0) + (usage.thoughts_token_count or 0)
        cached = (usage.cached_content_token_count or 0) if usage is not None else 0
        reasoning = (usage.thoughts_token_count or 0) if usage is not None else 0
        if prompt is not None and completion is not None:
            return UsageReport(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
                               reasoning_tokens=reasoning)
        if prompt is None:
            prompt = count_message_tokens(request.messages, request.tools)
        if completion is None:
            completion = count_tokens("".join(self.text)) + sum(count_tokens(c.arguments) for c in self.calls)
            completion += reasoning if reasoning else count_tokens("".join(self.thoughts))
        return UsageReport(prompt_tokens=prompt, completion_tokens=completion, estimated=True, cached_tokens=cached,
                           reasoning_tokens=reasoning)

    def result(self, request: ChatRequest) -> ChatResult:
        finish = self.finish()
        usage = self.usage_report(request)
        text = "".join(self.text)
        return ChatResult(
            content=None if self.calls and not text else text,
            tool_calls=tuple(self.calls),
            finish_reason=finish.reason,
            native_finish_reason=finish.native,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=usage.estimated,
            reasoning=(ReasoningPart(text="".join(self.thoughts), signature=self.thought_signature),)
            if self.thoughts else (),
            cached_tokens=usage.cached_tokens,
            reasoning_tokens=usage.reasoning_tokens,
        )


# ------------------------------------------------------------------------------------- the adapter
class GeminiProvider:
    """Chat adapter for the Gemini API (one per configured provider); implements
    `core.ports.ChatProvider`. Holds one pooled HTTP session (created lazily in the running loop)
    and the thought-signature map; `aclose()` closes the session."""

    def __init__(self, name: str, cfg: UpstreamSettings, *, http: UpstreamClient | None = None) -> None:
        self.name = name
        self.cfg = cfg
        base = cfg.base_url.rstrip("/")
        self.base_url = base
        self._root = base if base.endswith(("/v1beta", "/v1")) else f"{base}/{API_VERSION}"
        self._http = http or upstream_client(name, cfg)
        self._static_secrets = tuple(v for k, v in cfg.headers.items() if k.lower() in _AUTH_HEADERS)
        self._http.secrets = self._static_secrets
        self.signatures = ThoughtSignatures()
        self._key: str | None = None
        self._hdr_json: dict[str, str] = {}
        self._hdr_sse: dict[str, str] = {}
        self._build_headers(None)

    # -- URLs, credentials and headers
    def url(self, upstream_model: str, *, stream: bool) -> str:
        """The method URL for `upstream_model` (``gemini-2.5-flash``, ``models/...`` or
        ``tunedModels/...``)."""
        model = upstream_model.strip("/")
        if not model.startswith(("models/", "tunedModels/")):
            model = "models/" + model
        path = f"{self._root}/{quote(model, safe='/')}"
        return f"{path}:streamGenerateContent?alt=sse" if stream else f"{path}:generateContent"

    def _build_headers(self, key: str | None) -> None:
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Content-Type": "application/json"}
        if key:
            headers["x-goog-api-key"] = key
        headers.update(self.cfg.headers)  # configured headers win
        self._hdr_json = headers
        self._hdr_sse = {**headers, "Accept": "text/event-stream"}
        self._key = key
        self._http.secrets = (*self._static_secrets, key) if key else self._static_secrets

    def _headers(self, *, stream: bool) -> dict[str, str]:
        """Prebuilt headers with the API key read from the environment now."""
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

    def _translation(self) -> _Translation:
        return _Translation(self.name, self._http.secrets, self.signatures)

    def _body(self, req: ProviderChatRequest) -> bytes:
        return _ENCODER.encode(generate_content_body(req.request, self.signatures))

    # -- chat
    async def embed(self, upstream_model: str, req: EmbeddingRequest) -> EmbeddingResult:
        """``embedContent`` for one text, ``batchEmbedContents`` for several; ``dimensions`` ->
        ``outputDimensionality``. Gemini takes no token arrays (a 400 here) and reports no token
        count, so the prompt tokens are counted by Raven (``estimated``)."""
        if req.token_arrays:
            msg = "This model does not accept token arrays as 'input'; send text."
            raise UpstreamError(msg, provider=self.name, status=400, kind="rejected", public=msg)
        path = self.url(upstream_model, stream=False).rsplit(":", 1)[0]
        model = path.rsplit("/models/", 1)[-1] if "/models/" in path else upstream_model

        def one(text: str) -> dict[str, Any]:
            item: dict[str, Any] = {"content": {"parts": [{"text": text}]}}
            if req.dimensions is not None:
                item["outputDimensionality"] = req.dimensions
            return item

        if len(req.texts) == 1:
            url, payload = path + ":embedContent", one(req.texts[0])
        else:
            url = path + ":batchEmbedContents"
            payload = {"requests": [{"model": f"models/{model}", **one(t)} for t in req.texts]}
        resp = await self._http.send("POST", url, headers=self._headers(stream=False), body=_ENCODER.encode(payload))
        async with resp:
            raw = await resp.read(_MAX_BODY)
        try:
            reply = _EMBEDDINGS.decode(raw)
        except _DECODE_ERRORS:
            raise self._translation().malformed("a malformed embeddings response") from None
        if reply.error is not None:
            raise error_from_payload(self.name, reply.error, secrets=self._http.secrets)
        items = reply.embeddings if reply.embeddings is not None else ([reply.embedding] if reply.embedding else [])
        vectors = tuple(tuple(e.values or ()) for e in items)
        return EmbeddingResult(vectors=vectors, prompt_tokens=sum(count_tokens(t) for t in req.texts),
                               usage_estimated=True)

    async def complete(self, req: ProviderChatRequest) -> ChatResult:
        """One whole completion from ``generateContent``."""
        headers = self._headers(stream=False)
        url = self.url(req.upstream_model, stream=False)
        resp = await self._http.send("POST", url, headers=headers, body=self._body(req))
        async with resp:
            raw = await resp.read(_MAX_BODY)
        state = self._translation()
        try:
            response = _RESPONSE.decode(raw)
        except _DECODE_ERRORS:
            raise state.malformed("a malformed GenerateContentResponse") from None
        state.handle(response)
        if not response.candidates and state.blocked is None:
            raise state.malformed("a response without candidates")
        return state.result(req.request)

    async def stream(self, req: ProviderChatRequest) -> AsyncIterator[ChatEvent]:
        """Streams the completion from ``streamGenerateContent?alt=sse``; see the module docstring
        for the event contract. Stopping the iteration closes the upstream connection at once."""
        headers = self._headers(stream=True)
        url = self.url(req.upstream_model, stream=True)
        resp = await self._http.send("POST", url, headers=headers, body=self._body(req))
        try:
            state = self._translation()
            if resp.content_type == "application/json":  # a JSON array: the upstream ignored alt=sse
                self._whole(state, await resp.read(_MAX_BODY))
                for event in state.out:
                    yield event
            else:
                decoder = SSEDecoder()
                while (batch := await next_batch(self.name, resp, state, decoder)) is not None:
                    for event in batch:
                        yield event
            yield state.finish()
            yield state.usage_report(req.request)
            if not resp.at_eof:
                await resp.finish(_DRAIN_GRACE)  # let the connection go back to the pool
        finally:
            resp.close()

    @staticmethod
    def _whole(state: _Translation, raw: bytes) -> None:
        try:
            decoded = _RESPONSES.decode(raw)
        except _DECODE_ERRORS:
            raise state.malformed("a malformed streamGenerateContent body") from None
        for response in decoded if isinstance(decoded, list) else [decoded]:
            state.handle(response)
        if not state.finished:
            raise state.malformed("a streamGenerateContent body without a finishReason")

    async def aclose(self) -> None:
        """Closes the upstream connection pool."""
        await self._http.aclose()


def create(name: str, cfg: UpstreamSettings) -> GeminiProvider:
    """The composition root's factory (raven_service.wiring) for ``kind = "gemini"``."""
    return GeminiProvider(name, cfg)
