"""The ``openai`` provider kind: any OpenAI-compatible upstream (OpenAI, DeepSeek, vLLM, Ollama,
llama.cpp server, Groq, Together, ...).

- Chat: ``POST {base_url}/chat/completions``, unary and streamed. Streams always ask for
  ``stream_options.include_usage`` so usage is the upstream's own count; Raven estimates (and
  flags ``estimated``) only when none arrives.
- Images: ``POST {base_url}/images/generations`` asking for ``b64_json``; results are PNG bytes.
- Video: the OpenAI job API, ``POST {base_url}/videos``, ``GET {base_url}/videos/{id}`` and
  ``GET {base_url}/videos/{id}/content``.

Layout: wire Structs for what we decode (tolerant: unknown fields are ignored and only the fields
used are declared), request translation (`chat_body`), stream translation (`_StreamState`), and
the adapter class. Transport and status errors are mapped in `providers._http`, never here.

The output bound goes under the name the client used (``max_tokens`` or
``max_completion_tokens``: gpt-5 and the o-series reject ``max_tokens``); ``reasoning.effort`` ->
``reasoning_effort``. ``reasoning_content`` (DeepSeek, vLLM) or ``reasoning`` (OpenRouter, Ollama)
in messages and deltas -> reasoning; ``usage.prompt_tokens_details.cached_tokens`` (DeepSeek:
``prompt_cache_hit_tokens``) -> cached_tokens and ``completion_tokens_details.reasoning_tokens`` ->
reasoning_tokens. Reasoning of earlier assistant turns is not sent back (DeepSeek rejects it).

Stream contract (core.ports.ChatProvider): TextDelta / ToolCallDelta events, then exactly one
Finish, then exactly one UsageReport, whatever order the upstream sent its finish_reason and its
usage chunk in. Upstream tool-call ids pass through unchanged; ``call_...`` ids are minted only
for a call whose first fragment carries none. finish_reason is normalised (stop, length,
tool_calls, content_filter; ``function_call`` -> tool_calls; anything else -> stop) with the raw
value kept as ``native``; a reply that made tool calls finishes with ``tool_calls`` even when the
upstream said ``stop`` (some servers, e.g. older vLLM and Ollama, do).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import os
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp
import msgspec
from yarl import URL

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
    GeneratedImage,
    ImageRequest,
    Message,
    ProviderChatRequest,
    ReasoningDelta,
    ReasoningPart,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
    VideoRequest,
    VideoResult,
    VideoState,
    function_tools,
)
from raven_service.providers._client import upstream_client
from raven_service.providers._http import UpstreamClient, error_from_payload
from raven_service.providers._sse import SSEDecoder, SSEEvent
from raven_service.providers._stream import StreamStateBase, next_batch, result_events
from raven_service.providers.settings import UpstreamSettings

__all__ = ["OpenAICompatProvider", "VideoStatus", "chat_body", "create", "normalise_finish"]

USER_AGENT = "raven-router/0.1"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: Models that always answer b64 and reject the ``response_format`` parameter.
_NO_RESPONSE_FORMAT_PREFIXES = ("gpt-image",)
_AUTH_HEADERS = frozenset({"authorization", "api-key", "x-api-key", "proxy-authorization"})
_MAX_BODY = 256 * 1024 * 1024  # unary bodies (images, videos) larger than this are refused
_DRAIN_GRACE = 0.1  # seconds to wait after [DONE] for the end of the body, to keep the connection

_FINISH: dict[str, str] = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "content_filter": "content_filter",
    "function_call": "tool_calls",
}

_VIDEO_STATES: dict[str, VideoState] = {
    "queued": VideoState.QUEUED,
    "pending": VideoState.QUEUED,
    "in_progress": VideoState.RUNNING,
    "running": VideoState.RUNNING,
    "processing": VideoState.RUNNING,
    "completed": VideoState.SUCCEEDED,
    "succeeded": VideoState.SUCCEEDED,
    "failed": VideoState.FAILED,
    "cancelled": VideoState.FAILED,
    "canceled": VideoState.FAILED,
    "expired": VideoState.FAILED,
}


# ------------------------------------------------------------------------------------ wire types
class _Part(msgspec.Struct):
    type: str = ""
    text: str | None = None


_Content = str | list[_Part] | None  # some servers (e.g. Mistral) send content as a list of parts


class _Function(msgspec.Struct):
    name: str | None = None
    arguments: str | dict[str, Any] | None = None  # a few servers send an object, not JSON text


class _ToolCall(msgspec.Struct):
    index: int | None = None
    id: str | None = None
    function: _Function | None = None


class _PromptDetails(msgspec.Struct):
    cached_tokens: int | None = None


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int | None = None


class _Usage(msgspec.Struct):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: _PromptDetails | None = None
    completion_tokens_details: _CompletionDetails | None = None
    prompt_cache_hit_tokens: int | None = None  # DeepSeek's name for cached prompt tokens

    def details(self) -> tuple[int, int]:
        """(cached prompt tokens, reasoning tokens); 0 where the upstream reports none."""
        pd, cd = self.prompt_tokens_details, self.completion_tokens_details
        cached = (pd.cached_tokens if pd is not None else None) or self.prompt_cache_hit_tokens or 0
        reasoning = cd.reasoning_tokens if cd is not None and cd.reasoning_tokens is not None else 0
        return cached, reasoning


class _Delta(msgspec.Struct):
    content: _Content = None
    tool_calls: list[_ToolCall] | None = None
    reasoning_content: str | None = None  # DeepSeek, vLLM, SGLang, ...
    reasoning: str | None = None  # OpenRouter, newer vLLM and Ollama


class _StreamChoice(msgspec.Struct):
    index: int = 0
    delta: _Delta | None = None
    finish_reason: str | None = None


class _XGroq(msgspec.Struct):
    usage: _Usage | None = None


class _Chunk(msgspec.Struct):
    choices: list[_StreamChoice] | None = None
    usage: _Usage | None = None
    error: Any = None
    x_groq: _XGroq | None = None  # Groq's older place for stream usage


class _Message(msgspec.Struct):
    content: _Content = None
    tool_calls: list[_ToolCall] | None = None
    reasoning_content: str | None = None
    reasoning: str | None = None


class _Choice(msgspec.Struct):
    index: int = 0
    message: _Message | None = None
    finish_reason: str | None = None


class _Completion(msgspec.Struct):
    choices: list[_Choice] | None = None
    usage: _Usage | None = None
    error: Any = None


class _ImageItem(msgspec.Struct):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _Images(msgspec.Struct):
    data: list[_ImageItem] | None = None
    error: Any = None


class _Video(msgspec.Struct):
    id: str | None = None
    status: str | None = None
    progress: float | None = None
    error: Any = None


class _EmbeddingItem(msgspec.Struct):
    index: int = 0
    embedding: list[float] | None = None


class _Embeddings(msgspec.Struct):
    data: list[_EmbeddingItem] | None = None
    usage: _Usage | None = None
    error: Any = None


_ENCODER = msgspec.json.Encoder()
_EMBEDDINGS = msgspec.json.Decoder(_Embeddings)
_CHUNK = msgspec.json.Decoder(_Chunk)
_COMPLETION = msgspec.json.Decoder(_Completion)
_IMAGES = msgspec.json.Decoder(_Images)
_VIDEO = msgspec.json.Decoder(_Video)
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError)


# ------------------------------------------------------------------------------ request building
def _part(p: ContentPart) -> dict[str, Any]:
    if p.type == "image_url":
        image: dict[str, str] = {"url": p.image_url}
        if p.detail:
            image["detail"] = p.detail
        return {"type": "image_url", "image_url": image}
    return {"type": "text", "text": p.text}


def _message(m: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.parts:
        out["content"] = [_part(p) for p in m.parts]
    elif m.tool_calls and not m.content:
        out["content"] = None
    else:
        out["content"] = m.content or ""
    if m.name:
        out["name"] = m.name
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in m.tool_calls
        ]
    return out


def _params(r: ChatRequest, body: dict[str, Any]) -> None:
    """Adds the optional parameters `r` sets (the router already dropped unsupported ones)."""
    if r.max_tokens is not None:
        body[r.max_tokens_name] = r.max_tokens  # the client's name: gpt-5 / o-series reject max_tokens
    for name in ("temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "user"):
        value = getattr(r, name)
        if value is not None:
            body[name] = value
    if r.reasoning is not None and r.reasoning.effort is not None and "reasoning_effort" not in body:
        body["reasoning_effort"] = r.reasoning.effort
    if r.stop:
        body["stop"] = list(r.stop)
    if fn_tools := function_tools(r.tools):  # Anthropic server tools are not for this upstream
        tools = []
        for t in fn_tools:
            fn: dict[str, Any] = {"name": t.name}
            if t.description is not None:
                fn["description"] = t.description
            if t.parameters is not None:
                fn["parameters"] = t.parameters
            if t.strict is not None:
                fn["strict"] = t.strict
            tools.append({"type": "function", "function": fn})
        body["tools"] = tools
    if r.tool_choice is not None:
        tc = r.tool_choice
        body["tool_choice"] = (
            {"type": "function", "function": {"name": tc.name or ""}} if tc.mode == "function" else tc.mode
        )
    rf = r.response_format
    if rf is not None:
        if rf.type == "json_schema":
            spec: dict[str, Any] = {"name": rf.name or "response", "schema": rf.schema or {}}
            if rf.strict is not None:
                spec["strict"] = rf.strict
            body["response_format"] = {"type": "json_schema", "json_schema": spec}
        else:
            body["response_format"] = {"type": rf.type}


def chat_body(upstream_model: str, r: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The upstream request body: `r.extra` passed through at the top level, then the model,
    messages and set parameters (which win over same-named extra keys). Streams always carry
    ``stream_options.include_usage = true`` (other stream options in extra are kept)."""
    body: dict[str, Any] = dict(r.extra) if r.extra else {}
    body["model"] = upstream_model
    body["messages"] = [_message(m) for m in r.messages]
    _params(r, body)
    if stream:
        body["stream"] = True
        opts = body.get("stream_options")
        body["stream_options"] = {**opts, "include_usage": True} if isinstance(opts, dict) else {"include_usage": True}
    else:
        body.pop("stream", None)
        body.pop("stream_options", None)
    return body


# ---------------------------------------------------------------------------- response translation
def normalise_finish(native: str | None, made_tool_calls: bool = False) -> str:
    """The core finish reason for an upstream ``finish_reason``."""
    reason = _FINISH.get(native, "stop") if native else "stop"
    if reason == "stop" and made_tool_calls:
        return "tool_calls"
    return reason


def mint_call_id() -> str:
    """A fresh ``call_`` + 24 alphanumerics id, for upstreams that give none."""
    return "call_" + os.urandom(12).hex()


def _text(content: _Content) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    return "".join(p.text for p in content if p.text and p.type in ("text", ""))


def _arguments(value: str | dict[str, Any] | None) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    return _ENCODER.encode(value).decode()


def _estimate_prompt(r: ChatRequest) -> int:
    return count_message_tokens(r.messages, r.tools)


class _Call:
    """A streamed tool call being reassembled."""

    __slots__ = ("args", "id", "named")

    def __init__(self, call_id: str, named: bool) -> None:
        self.id = call_id
        self.named = named
        self.args: list[str] = []


class _StreamState(StreamStateBase):
    """Per-stream translation state: upstream chunks in, core events out (into `out`)."""

    __slots__ = ("calls", "finish_native", "text", "usage")

    def __init__(self, provider: str, secrets: Sequence[str]) -> None:
        super().__init__(provider, secrets)
        self.text: list[str] = []
        self.calls: dict[int, _Call] = {}
        self.usage: _Usage | None = None
        self.finish_native: str | None = None

    @property
    def finished(self) -> bool:
        return self.finish_native is not None

    def on_event(self, event: SSEEvent) -> None:
        self.handle(event.event, event.data)

    def failed(self, error: Any) -> UpstreamError:
        """The error for an `error` payload; never retryable once events went out."""
        err = error_from_payload(self.provider, error, secrets=self.secrets)
        if self.emitted:
            err.retryable = False
        return err

    def handle(self, event: str, data: bytes) -> None:
        """Translates one SSE event's data."""
        if not data:
            return
        if data[0] == 0x5B and data.strip() == b"[DONE]":  # "["
            self.done = True
            return
        if event == "error":  # `event: error` framing (some servers)
            try:
                obj = msgspec.json.decode(data)
            except msgspec.DecodeError:
                obj = data[:500].decode("utf-8", "replace")
            raise self.failed(obj.get("error", obj) if isinstance(obj, dict) else obj)
        try:
            chunk = _CHUNK.decode(data)
        except _DECODE_ERRORS:
            snippet = data[:80].decode("utf-8", "replace")
            raise self.malformed(f"a malformed stream event: {snippet!r}") from None
        if chunk.error is not None:
            raise self.failed(chunk.error)
        usage = chunk.usage if chunk.usage is not None else (chunk.x_groq.usage if chunk.x_groq else None)
        if usage is not None:
            self.usage = usage
        if chunk.choices:
            for choice in chunk.choices:
                if choice.index == 0:
                    self._choice(choice)

    def _choice(self, choice: _StreamChoice) -> None:
        delta = choice.delta
        if delta is not None:
            thought = delta.reasoning_content or delta.reasoning
            if thought:
                self.text.append(thought)
                self.out.append(ReasoningDelta(index=0, text=thought))
                self.emitted = True
            content = delta.content
            if content:
                text = content if isinstance(content, str) else _text(content)
                if text:
                    self.text.append(text)
                    self.out.append(TextDelta(text=text))
                    self.emitted = True
            if delta.tool_calls:
                self._tool_calls(delta.tool_calls)
        if choice.finish_reason:
            self.finish_native = choice.finish_reason

    def _index(self, tc: _ToolCall) -> int:
        if tc.index is not None:
            return tc.index
        # No index (a few servers): a new id starts a new call, anything else continues the last.
        if tc.id is not None and all(c.id != tc.id for c in self.calls.values()):
            return len(self.calls)
        return max(self.calls, default=0)

    def _tool_calls(self, fragments: list[_ToolCall]) -> None:
        out = self.out
        for tc in fragments:
            index = self._index(tc)
            fn = tc.function
            name = fn.name if fn is not None else None
            args = _arguments(fn.arguments) if fn is not None else ""
            call = self.calls.get(index)
            if call is None:
                call = self.calls[index] = _Call(tc.id or mint_call_id(), bool(name))
                out.append(ToolCallDelta(index=index, id=call.id, name=name or None, arguments=args))
            elif name and not call.named:
                call.named = True
                out.append(ToolCallDelta(index=index, name=name, arguments=args))
            elif args:
                out.append(ToolCallDelta(index=index, arguments=args))
            else:
                continue
            if args:
                call.args.append(args)
            self.emitted = True

    def ending(self, request: ChatRequest) -> tuple[Finish, UsageReport]:
        """The closing Finish and UsageReport."""
        finish = Finish(reason=normalise_finish(self.finish_native, bool(self.calls)), native=self.finish_native or "")
        usage = self.usage
        prompt = usage.prompt_tokens if usage is not None else None
        completion = usage.completion_tokens if usage is not None else None
        if prompt is not None and completion is not None and usage is not None:
            cached, reasoning = usage.details()
            return finish, UsageReport(prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached,
                                       reasoning_tokens=reasoning)
        if prompt is None:
            prompt = _estimate_prompt(request)
        if completion is None:
            completion = count_tokens("".join(self.text)) + sum(
                count_tokens("".join(c.args)) for c in self.calls.values()
            )
        return finish, UsageReport(prompt_tokens=prompt, completion_tokens=completion, estimated=True)


@dataclass(slots=True)
class VideoStatus:
    """An upstream video job's state (satisfies `core.ports.VideoPoll`)."""

    state: VideoState
    progress: int = 0
    error: str = ""


def _to_png(data: bytes) -> bytes:
    from PIL import Image  # lazy: only for upstreams answering JPEG / WebP

    with Image.open(io.BytesIO(data)) as image:
        out = io.BytesIO()
        image.save(out, format="PNG")
    return out.getvalue()


# ------------------------------------------------------------------------------------- the adapter
class OpenAICompatProvider:
    """Chat, image and video adapter for OpenAI-compatible upstreams (one per configured provider).

    Implements `core.ports.ChatProvider`, `ImageProvider` and `VideoProvider`. Holds one pooled
    HTTP session (created lazily in the running loop); `aclose()` closes it.
    """

    def __init__(self, name: str, cfg: UpstreamSettings, *, http: UpstreamClient | None = None) -> None:
        self.name = name
        self.cfg = cfg
        base = cfg.base_url.rstrip("/")
        self.base_url = base
        self._chat_url = base + "/chat/completions"
        self._images_url = base + "/images/generations"
        self._embeddings_url = base + "/embeddings"
        self._videos_url = base + "/videos"
        self._origin = URL(base).origin() if base else None
        self._http = http or upstream_client(name, cfg)
        self._static_secrets = tuple(v for k, v in cfg.headers.items() if k.lower() in _AUTH_HEADERS)
        self._http.secrets = self._static_secrets
        self._key: str | None = None
        self._hdr_json: dict[str, str] = {}
        self._hdr_sse: dict[str, str] = {}
        self._hdr_plain: dict[str, str] = {}
        self._build_headers(None)

    # -- credentials and headers
    def _build_headers(self, key: str | None) -> None:
        plain = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if key:
            plain["Authorization"] = f"Bearer {key}"
        plain.update(self.cfg.headers)  # configured headers win (e.g. a custom auth scheme)
        self._hdr_plain = plain
        self._hdr_json = {**plain, "Content-Type": "application/json"}
        self._hdr_sse = {**self._hdr_json, "Accept": "text/event-stream"}
        self._key = key
        self._http.secrets = (*self._static_secrets, key) if key else self._static_secrets

    def _headers(self, kind: str) -> dict[str, str]:
        """Prebuilt headers ("json", "sse" or "plain"), with the API key read from the environment
        now (so a rotated key is picked up without a restart)."""
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
        return self._hdr_sse if kind == "sse" else self._hdr_json if kind == "json" else self._hdr_plain

    def _malformed(self, what: str) -> UpstreamError:
        return UpstreamError(f"upstream {self.name!r} sent {what}", provider=self.name, retryable=False, kind=BROKEN)

    async def _post_json(self, url: str, payload: dict[str, Any]) -> bytes:
        headers = self._headers("json")
        resp = await self._http.send("POST", url, headers=headers, body=_ENCODER.encode(payload))
        async with resp:
            return await resp.read(_MAX_BODY)

    async def _get(self, url: str, headers: dict[str, str], *, follow: bool = False) -> tuple[bytes, str]:
        resp = await self._http.send("GET", url, headers=headers, follow_redirects=follow)
        async with resp:
            return await resp.read(_MAX_BODY), resp.content_type

    # -- chat
    def _result(self, request: ChatRequest, raw: bytes) -> ChatResult:
        try:
            completion = _COMPLETION.decode(raw)
        except _DECODE_ERRORS:
            raise self._malformed("a malformed chat completion") from None
        if completion.error is not None:
            raise error_from_payload(self.name, completion.error, secrets=self._http.secrets)
        choices = completion.choices or []
        choice = next((c for c in choices if c.index == 0), choices[0] if choices else None)
        if choice is None or choice.message is None:
            raise self._malformed("a chat completion without choices")
        msg = choice.message
        content = msg.content if msg.content is None or isinstance(msg.content, str) else _text(msg.content)
        calls = tuple(
            ToolCall(
                id=tc.id or mint_call_id(),
                name=(tc.function.name if tc.function else None) or "",
                arguments=_arguments(tc.function.arguments if tc.function else None),
            )
            for tc in msg.tool_calls or ()
        )
        native = choice.finish_reason or ""
        thought = msg.reasoning_content or msg.reasoning
        reasoning = (ReasoningPart(text=thought),) if thought else ()
        usage = completion.usage
        cached, reasoning_tokens = usage.details() if usage is not None else (0, 0)
        prompt = usage.prompt_tokens if usage is not None else None
        completion_tokens = usage.completion_tokens if usage is not None else None
        estimated = prompt is None or completion_tokens is None
        if prompt is None:
            prompt = _estimate_prompt(request)
        if completion_tokens is None:
            completion_tokens = count_tokens(content) + sum(count_tokens(c.arguments) for c in calls) + count_tokens(
                thought
            )
        return ChatResult(
            content=content,
            tool_calls=calls,
            finish_reason=normalise_finish(native, bool(calls)),
            native_finish_reason=native,
            prompt_tokens=prompt,
            completion_tokens=completion_tokens,
            usage_estimated=estimated,
            reasoning=reasoning,
            cached_tokens=cached,
            reasoning_tokens=reasoning_tokens,
        )

    async def complete(self, req: ProviderChatRequest) -> ChatResult:
        """One whole completion from the non-streaming endpoint."""
        raw = await self._post_json(self._chat_url, chat_body(req.upstream_model, req.request, stream=False))
        return self._result(req.request, raw)

    async def stream(self, req: ProviderChatRequest) -> AsyncIterator[ChatEvent]:
        """Streams the completion; see the module docstring for the event contract. Stopping the
        iteration (aclose, cancellation) closes the upstream connection at once."""
        headers = self._headers("sse")
        body = _ENCODER.encode(chat_body(req.upstream_model, req.request, stream=True))
        resp = await self._http.send("POST", self._chat_url, headers=headers, body=body)
        try:
            if resp.content_type == "application/json":  # the upstream ignored "stream": true
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

    # -- embeddings
    async def embed(self, upstream_model: str, req: EmbeddingRequest) -> EmbeddingResult:
        """``POST {base_url}/embeddings`` asking for floats; vectors put back in input order."""
        payload: dict[str, Any] = {
            "model": upstream_model,
            "input": list(req.texts) if req.texts else [list(t) for t in req.token_arrays],
            "encoding_format": "float",
        }
        if req.dimensions is not None:
            payload["dimensions"] = req.dimensions
        if req.user is not None:
            payload["user"] = req.user
        raw = await self._post_json(self._embeddings_url, payload)
        try:
            reply = _EMBEDDINGS.decode(raw)
        except _DECODE_ERRORS:
            raise self._malformed("a malformed embeddings response") from None
        if reply.error is not None:
            raise error_from_payload(self.name, reply.error, secrets=self._http.secrets)
        items = sorted(reply.data or (), key=lambda e: e.index)
        vectors = tuple(tuple(e.embedding or ()) for e in items)
        usage = reply.usage
        if usage is not None and usage.prompt_tokens is not None:
            return EmbeddingResult(vectors=vectors, prompt_tokens=usage.prompt_tokens)
        tokens = sum(count_tokens(t) for t in req.texts) + sum(len(t) for t in req.token_arrays)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens, usage_estimated=True)

    # -- images
    async def generate_images(self, upstream_model: str, req: ImageRequest) -> list[GeneratedImage]:
        """`req.n` images as PNG bytes (other formats the upstream returns are converted)."""
        payload: dict[str, Any] = {
            "model": upstream_model,
            "prompt": req.prompt,
            "n": req.n,
            "size": f"{req.width}x{req.height}",
        }
        if not upstream_model.startswith(_NO_RESPONSE_FORMAT_PREFIXES):
            payload["response_format"] = "b64_json"
        if req.quality:
            payload["quality"] = req.quality
        if req.style:
            payload["style"] = req.style
        raw = await self._post_json(self._images_url, payload)
        try:
            result = _IMAGES.decode(raw)
        except _DECODE_ERRORS:
            raise self._malformed("a malformed images response") from None
        if result.error is not None:
            raise error_from_payload(self.name, result.error, secrets=self._http.secrets)
        if not result.data:
            raise self._malformed("an images response without images")
        return [
            GeneratedImage(png=await self._image_bytes(item), revised_prompt=item.revised_prompt or "")
            for item in result.data
        ]

    async def _image_bytes(self, item: _ImageItem) -> bytes:
        if item.b64_json:
            try:
                data = base64.b64decode(item.b64_json, validate=False)
            except (binascii.Error, ValueError):
                raise self._malformed("an image that is not valid base64") from None
        elif item.url:
            url = URL(item.url)
            # Send our credentials only back to the upstream itself, never to a CDN.
            if self._origin is not None and url.is_absolute() and url.origin() == self._origin:
                data, _ = await self._get(item.url, self._headers("plain"))
            else:
                data, _ = await self._get(item.url, {"User-Agent": USER_AGENT}, follow=True)
        else:
            raise self._malformed("an image without b64_json or url")
        if data.startswith(PNG_SIGNATURE):
            return data
        try:
            return await asyncio.to_thread(_to_png, data)
        except Exception:
            raise self._malformed("an image that cannot be decoded") from None

    # -- video
    async def submit_video(self, upstream_model: str, req: VideoRequest, task_id: str) -> str:
        """Creates an upstream video job; returns its id. A first-frame image goes as the
        multipart ``input_reference`` file."""
        fields = {
            "model": upstream_model,
            "prompt": req.prompt,
            "seconds": str(req.seconds),
            "size": f"{req.width}x{req.height}",
        }
        if req.image is None:
            raw = await self._post_json(self._videos_url, fields)
        else:
            form = aiohttp.FormData()
            for key, value in fields.items():
                form.add_field(key, value)
            png = req.image.startswith(PNG_SIGNATURE)
            form.add_field(
                "input_reference",
                req.image,
                filename="reference.png" if png else "reference.jpg",
                content_type="image/png" if png else "image/jpeg",
            )
            resp = await self._http.send("POST", self._videos_url, headers=self._headers("plain"), body=form)
            async with resp:
                raw = await resp.read(_MAX_BODY)
        job = self._video(raw)
        if not job.id:
            raise self._malformed("a video job without an id")
        return job.id

    def _video(self, raw: bytes) -> _Video:
        try:
            job = _VIDEO.decode(raw)
        except _DECODE_ERRORS:
            raise self._malformed("a malformed video job") from None
        if job.error is not None and job.status not in ("failed", "cancelled", "canceled", "expired"):
            raise error_from_payload(self.name, job.error, secrets=self._http.secrets)
        return job

    async def poll_video(self, upstream_model: str, req: VideoRequest, upstream_id: str) -> VideoStatus:
        """The job's state and progress (0-100)."""
        raw, _ = await self._get(f"{self._videos_url}/{quote(upstream_id, safe='')}", self._headers("plain"))
        job = self._video(raw)
        state = _VIDEO_STATES.get((job.status or "").lower(), VideoState.RUNNING)
        if state == VideoState.SUCCEEDED:
            return VideoStatus(state=state, progress=100)
        progress = max(0, min(99, int(job.progress or 0)))
        if state == VideoState.FAILED:
            detail = error_from_payload(self.name, job.error).message if job.error is not None else ""
            return VideoStatus(state=state, progress=progress, error=detail or f"upstream video job {job.status}")
        return VideoStatus(state=state, progress=progress)

    async def fetch_video(self, upstream_id: str) -> VideoResult:
        """The finished video's bytes."""
        url = f"{self._videos_url}/{quote(upstream_id, safe='')}/content"
        data, content_type = await self._get(url, self._headers("plain"))
        return VideoResult(data=data, mime_type=content_type if content_type.startswith("video/") else "video/mp4")

    async def aclose(self) -> None:
        """Closes the upstream connection pool."""
        await self._http.aclose()


def create(name: str, cfg: UpstreamSettings) -> OpenAICompatProvider:
    """The composition root's factory (raven_service.wiring) for ``kind = "openai"``."""
    return OpenAICompatProvider(name, cfg)
