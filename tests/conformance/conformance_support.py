"""Shared machinery of the conformance tier: fake upstreams of every provider kind behind a real
raven_service (gRPC on 127.0.0.1:0) and the REST gateway in-process, driven through two clients
with one interface:

- `RestClient`: the official ``openai.AsyncOpenAI`` SDK (``max_retries=0``) over
  ``httpx.ASGITransport`` into ``gateway.create_app(channel=...)``;
- `GrpcClient`: the generated ``ChatServiceStub`` over a real ``grpc.aio`` channel.

Both take OpenAI-shaped keyword arguments (``model``, ``messages``, ``tools``, ``tool_choice``,
``response_format``, ``max_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, plus
``models`` for the OpenRouter-style fallback list) and return the same `Reply` / `StreamReply`,
or raise `CallFailed` with the HTTP status the client sees (for gRPC: the status code mapped
through SPEC §4's table). Tests then assert once for both protocols.

Per provider kind, a `Dialect` builds the upstream's own wire answers (text, stream, tool calls,
errors) with the fakes' payload helpers, so a matrix test reads the same for every provider.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
import httpx
import openai
from fakes import gemini_upstream as gem
from fakes.gemini_upstream import FakeGemini
from fakes.openai_upstream import FakeOpenAI, Received, Scenario, chat_completion, error_body, tool_call_chunks
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tests_support import Svc, service

from raven.v1 import chat_pb2, chat_service_pb2_grpc
from raven.v1 import chat_service_pb2 as cs
from raven_service.core.types import UsageRecord

#: Whether the Anthropic adapter (and its fake) exist in this checkout.
HAS_ANTHROPIC = (
    importlib.util.find_spec("raven_service.providers.anthropic") is not None
    and importlib.util.find_spec("fakes.anthropic_upstream") is not None
)
if HAS_ANTHROPIC:
    from fakes import anthropic_upstream as ant
    from fakes.anthropic_upstream import FakeAnthropic

KINDS: tuple[str, ...] = ("openai", "anthropic", "gemini") if HAS_ANTHROPIC else ("openai", "gemini")
PROTOCOLS = ("rest", "grpc")
USER_HI = [{"role": "user", "content": "hi"}]

#: gRPC status -> the HTTP status the gateway answers with (SPEC §4, both ways).
HTTP_OF_GRPC = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 502,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


def key_env(kind: str) -> str:
    """The environment variable holding the fake `kind` upstream's API key."""
    return f"RAVEN_CONFORMANCE_{kind.upper()}_KEY"


def api_key(kind: str) -> str:
    return f"sk-conformance-{kind}-0123456789"


# ------------------------------------------------------------------------------------ results
@dataclass
class Call:
    """A tool call as the client sees it (reassembled when streamed)."""

    id: str
    name: str
    arguments: str


@dataclass
class Usage:
    prompt_tokens: int
    completion_tokens: int
    estimated: bool


@dataclass
class Reply:
    """A unary completion, protocol-neutral."""

    id: str
    content: str | None
    tool_calls: list[Call]
    finish_reason: str
    native_finish_reason: str | None
    usage: Usage
    provider: str | None
    headers: dict[str, str]  # HTTP headers / gRPC initial + trailing metadata


@dataclass
class StreamReply:
    """A streamed completion, reassembled, protocol-neutral."""

    id: str = ""
    events: int = 0  # every chunk received
    chunks: int = 0  # choice deltas received
    usage_at: int | None = None  # the (0-based) event that carried usage
    first_role: str | None = None  # delta.role of the first chunk
    content: str = ""
    tool_calls: list[Call] = field(default_factory=list)
    finish_reason: str | None = None
    native_finish_reason: str | None = None
    usage: Usage | None = None
    error: dict[str, Any] | None = None  # the mid-stream error (REST: what the SDK raised)
    headers: dict[str, str] = field(default_factory=dict)


class CallFailed(Exception):
    """The call failed before any content: `status` is the HTTP status the client sees."""

    def __init__(self, status: int, code: str | None, message: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = dict(headers)


class _Calls:
    """Reassembles streamed tool-call fragments by index (OpenAI's delta shape)."""

    def __init__(self) -> None:
        self.by_index: dict[int, Call] = {}

    def add(self, index: int, call_id: str | None, name: str | None, arguments: str | None) -> None:
        call = self.by_index.get(index)
        if call is None:
            assert call_id, f"the first fragment of tool call {index} carries no id"
            assert name, f"the first fragment of tool call {index} carries no name"
            self.by_index[index] = Call(id=call_id, name=name, arguments=arguments or "")
            return
        assert call_id in (None, "", call.id), f"tool call {index} changed id"
        call.arguments += arguments or ""

    def calls(self) -> list[Call]:
        return [self.by_index[i] for i in sorted(self.by_index)]


class Client(Protocol):
    protocol: str

    async def complete(self, **kw: Any) -> Reply: ...

    async def stream(self, **kw: Any) -> StreamReply: ...


# ------------------------------------------------------------------------------------ REST client
_SDK_PARAMS = frozenset({"model", "messages", "tools", "tool_choice", "response_format", "max_tokens", "temperature",
                         "top_p", "seed", "stop", "frequency_penalty", "presence_penalty", "user"})


def _sdk_kwargs(kw: Mapping[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in kw.items() if k in _SDK_PARAMS}
    extra = dict(kw.get("extra_body") or {})
    if "models" in kw:
        extra["models"] = list(kw["models"])  # OpenRouter's fallback list rides in extra_body
    if extra:
        out["extra_body"] = extra
    unknown = set(kw) - _SDK_PARAMS - {"models", "extra_body"}
    assert not unknown, f"unknown request keys {unknown}"
    return out


def _failed(exc: openai.APIStatusError) -> CallFailed:
    return CallFailed(exc.status_code, exc.code, exc.message, exc.response.headers)


class RestClient:
    """The official SDK over the in-process gateway."""

    protocol = "rest"

    def __init__(self, sdk: openai.AsyncOpenAI) -> None:
        self.sdk = sdk

    async def complete(self, **kw: Any) -> Reply:
        try:
            raw = await self.sdk.chat.completions.with_raw_response.create(**_sdk_kwargs(kw))
        except openai.APIStatusError as exc:
            raise _failed(exc) from None
        c = raw.parse()
        choice = c.choices[0]
        msg = choice.message
        assert c.usage is not None
        return Reply(
            id=c.id,
            content=msg.content,
            tool_calls=[Call(t.id, t.function.name, t.function.arguments) for t in msg.tool_calls or ()],
            finish_reason=choice.finish_reason,
            native_finish_reason=getattr(choice, "native_finish_reason", None),
            usage=Usage(c.usage.prompt_tokens, c.usage.completion_tokens, bool(getattr(c.usage, "estimated", False))),
            provider=getattr(c, "provider", None),
            headers=dict(raw.headers),
        )

    async def stream(self, **kw: Any) -> StreamReply:
        try:
            raw = await self.sdk.chat.completions.with_raw_response.create(stream=True, **_sdk_kwargs(kw))
        except openai.APIStatusError as exc:
            raise _failed(exc) from None
        out = StreamReply(headers=dict(raw.headers))
        calls = _Calls()
        try:
            async for chunk in raw.parse():
                out.id = out.id or chunk.id
                out.events += 1
                if chunk.usage is not None:
                    u = chunk.usage
                    out.usage = Usage(u.prompt_tokens, u.completion_tokens, bool(getattr(u, "estimated", False)))
                    out.usage_at = out.events - 1
                for choice in chunk.choices:
                    out.chunks += 1
                    delta = choice.delta
                    if out.chunks == 1:
                        out.first_role = delta.role
                    out.content += delta.content or ""
                    for tc in delta.tool_calls or ():
                        fn = tc.function
                        calls.add(tc.index, tc.id, fn.name if fn else None, fn.arguments if fn else None)
                    if choice.finish_reason is not None:
                        out.finish_reason = choice.finish_reason
                        out.native_finish_reason = getattr(choice, "native_finish_reason", None)
        except openai.APIError as exc:  # the SDK raises on a `data:` payload carrying "error"
            body = exc.body if isinstance(exc.body, dict) else {}
            out.error = {"message": exc.message, "code": body.get("code"), "type": body.get("type")}
            out.finish_reason = "error"
        out.tool_calls = calls.calls()
        return out


# ------------------------------------------------------------------------------------ gRPC client
def _struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    s = struct_pb2.Struct()
    s.update(dict(value))
    return s


def _pb_message(m: Mapping[str, Any]) -> chat_pb2.ChatMessage:
    out = chat_pb2.ChatMessage(role=m["role"])
    if isinstance(m.get("content"), str):
        out.content = m["content"]
    if m.get("tool_call_id"):
        out.tool_call_id = m["tool_call_id"]
    for tc in m.get("tool_calls") or ():
        out.tool_calls.append(chat_pb2.ToolCall(id=tc["id"], type="function", name=tc["function"]["name"],
                                                arguments=tc["function"]["arguments"]))
    return out


def grpc_request(cls: type, kw: Mapping[str, Any]) -> Any:
    """A Create/StreamChatCompletionRequest from OpenAI-shaped keyword arguments."""
    req = cls(model=kw["model"], messages=[_pb_message(m) for m in kw["messages"]])
    for name in ("max_tokens", "temperature", "top_p", "seed", "frequency_penalty", "presence_penalty", "user"):
        if kw.get(name) is not None:
            setattr(req, name, kw[name])
    stop = kw.get("stop")
    if stop:
        req.stop.extend([stop] if isinstance(stop, str) else stop)
    for t in kw.get("tools") or ():
        fn = t["function"]
        tool = chat_pb2.Tool(type="function", name=fn["name"])
        if "description" in fn:
            tool.description = fn["description"]
        if "parameters" in fn:
            tool.parameters.CopyFrom(_struct(fn["parameters"]))
        req.tools.append(tool)
    tc = kw.get("tool_choice")
    if isinstance(tc, str):
        req.tool_choice.mode = tc
    elif isinstance(tc, Mapping):
        req.tool_choice.function_name = tc["function"]["name"]
    rf = kw.get("response_format")
    if rf is not None:
        req.response_format.type = rf["type"]
        if rf["type"] == "json_schema":
            js = rf["json_schema"]
            req.response_format.json_schema.name = js.get("name", "")
            if "schema" in js:
                req.response_format.json_schema.schema.CopyFrom(_struct(js["schema"]))
            if "strict" in js:
                req.response_format.json_schema.strict = js["strict"]
    req.models.extend(kw.get("models") or ())
    if kw.get("extra_body"):
        req.extra_body.CopyFrom(_struct(kw["extra_body"]))
    return req


def error_reason(err: grpc.aio.AioRpcError) -> str | None:
    """The ErrorInfo reason of a failed call, lower-cased (= the OpenAI error code)."""
    status = rpc_status.from_call(err)
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info.reason.lower()
    return None


def _meta(md: Any) -> dict[str, str]:
    return {k: v for k, v in (md or ()) if isinstance(v, str)}


async def _grpc_failed(err: grpc.aio.AioRpcError) -> CallFailed:
    headers = _meta(err.initial_metadata()) | _meta(err.trailing_metadata())
    return CallFailed(HTTP_OF_GRPC.get(err.code(), 500), error_reason(err), err.details() or "", headers)


def _usage(u: Any) -> Usage:
    return Usage(u.prompt_tokens, u.completion_tokens, u.estimated)


class GrpcClient:
    """The generated stub over a real grpc.aio channel."""

    protocol = "grpc"

    def __init__(self, channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...]) -> None:
        self.stub = chat_service_pb2_grpc.ChatServiceStub(channel)
        self.metadata = metadata

    async def complete(self, **kw: Any) -> Reply:
        call = self.stub.CreateChatCompletion(grpc_request(cs.CreateChatCompletionRequest, kw),
                                              metadata=self.metadata, timeout=15)
        try:
            r = await call
        except grpc.aio.AioRpcError as err:
            raise await _grpc_failed(err) from None
        choice = r.choices[0]
        msg = choice.message
        return Reply(
            id=r.id,
            content=msg.content if msg.HasField("content") else None,
            tool_calls=[Call(t.id, t.name, t.arguments) for t in msg.tool_calls],
            finish_reason=choice.finish_reason,
            native_finish_reason=choice.native_finish_reason or None,
            usage=_usage(r.usage),
            provider=r.provider or None,
            # unary RPCs send the x-ratelimit-* / x-raven-* metadata as trailers
            headers=_meta(await call.initial_metadata()) | _meta(await call.trailing_metadata()),
        )

    async def stream(self, **kw: Any) -> StreamReply:
        call = self.stub.StreamChatCompletion(grpc_request(cs.StreamChatCompletionRequest, kw),
                                              metadata=self.metadata, timeout=15)
        out = StreamReply()
        calls = _Calls()
        try:
            async for r in call:
                out.id = out.id or r.id
                out.events += 1
                if r.HasField("usage"):
                    out.usage = _usage(r.usage)
                    out.usage_at = out.events - 1
                if r.HasField("error"):
                    out.error = {"message": r.error.message, "code": r.error.code, "type": r.error.type}
                for choice in r.choices:
                    out.chunks += 1
                    delta = choice.delta
                    if out.chunks == 1:
                        out.first_role = delta.role if delta.HasField("role") else None
                    out.content += delta.content
                    for tc in delta.tool_calls:
                        calls.add(tc.index, tc.id if tc.HasField("id") else None,
                                  tc.name if tc.HasField("name") else None,
                                  tc.arguments if tc.HasField("arguments") else None)
                    if choice.HasField("finish_reason"):
                        out.finish_reason = choice.finish_reason
                        out.native_finish_reason = choice.native_finish_reason or None
        except grpc.aio.AioRpcError as err:
            if out.chunks == 0:
                raise await _grpc_failed(err) from None
            out.error = {"message": err.details(), "code": error_reason(err), "type": "status"}
        out.headers = _meta(await call.initial_metadata())
        out.tool_calls = calls.calls()
        return out


# ------------------------------------------------------------------------------------ dialects
class Dialect(Protocol):
    """How one provider kind answers, in its own wire format."""

    kind: str
    stop_native: str  # the native finish reason of a normal text answer
    tool_native: str  # ... of an answer with tool calls

    def text(self, text: str, *, native: str | None = None, usage: tuple[int, int] | None = (11, 7)) -> Scenario: ...

    def text_stream(self, pieces: Sequence[str], *, native: str | None = None,
                    usage: tuple[int, int] | None = (11, 7)) -> Scenario: ...

    def tools(self, calls: Sequence[tuple[str, str, dict[str, Any]]], *,
              usage: tuple[int, int] | None = (40, 12)) -> Scenario: ...

    def tools_stream(self, calls: Sequence[tuple[str, str, Sequence[str]]], *,
                     usage: tuple[int, int] | None = (40, 12)) -> Scenario: ...

    def error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Scenario: ...

    def upstream_model(self, rec: Received) -> str: ...


class OpenAIDialect:
    kind = "openai"
    stop_native = "stop"
    tool_native = "tool_calls"

    def text(self, text: str, *, native: str | None = None, usage: tuple[int, int] | None = (11, 7)) -> Scenario:
        return Scenario.json(chat_completion(text, finish_reason=native or self.stop_native, usage=usage))

    def text_stream(self, pieces: Sequence[str], *, native: str | None = None,
                    usage: tuple[int, int] | None = (11, 7)) -> Scenario:
        return Scenario.chat_stream(pieces, finish_reason=native or self.stop_native, usage=usage)

    def tools(self, calls: Sequence[tuple[str, str, dict[str, Any]]], *,
              usage: tuple[int, int] | None = (40, 12)) -> Scenario:
        triples = [(i, n, json.dumps(a)) for i, n, a in calls]
        return Scenario.json(chat_completion(None, tool_calls=triples, finish_reason="tool_calls", usage=usage))

    def tools_stream(self, calls: Sequence[tuple[str, str, Sequence[str]]], *,
                     usage: tuple[int, int] | None = (40, 12)) -> Scenario:
        return Scenario.sse(tool_call_chunks(calls, usage=usage)).split_writes("mid_line", pause=0)

    def error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Scenario:
        kind = "invalid_request_error" if status < 500 and status != 429 else "server_error"
        return Scenario.json(error_body(message, type=kind), status=status, headers=headers)

    def upstream_model(self, rec: Received) -> str:
        return str(rec.json["model"])


class AnthropicDialect:
    kind = "anthropic"
    stop_native = "end_turn"
    tool_native = "tool_use"

    @staticmethod
    def _usage(usage: tuple[int, int] | None) -> dict[str, int]:
        return {} if usage is None else {"input_tokens": usage[0], "output_tokens": usage[1]}

    def text(self, text: str, *, native: str | None = None, usage: tuple[int, int] | None = (11, 7)) -> Scenario:
        return Scenario.json(ant.message(text, stop_reason=native or self.stop_native, usage=self._usage(usage)))

    def text_stream(self, pieces: Sequence[str], *, native: str | None = None,
                    usage: tuple[int, int] | None = (11, 7)) -> Scenario:
        return ant.stream(ant.text_stream(pieces, stop_reason=native or self.stop_native, usage=usage))

    def tools(self, calls: Sequence[tuple[str, str, dict[str, Any]]], *,
              usage: tuple[int, int] | None = (40, 12)) -> Scenario:
        return Scenario.json(ant.message(None, tool_uses=calls, stop_reason="tool_use", usage=self._usage(usage)))

    def tools_stream(self, calls: Sequence[tuple[str, str, Sequence[str]]], *,
                     usage: tuple[int, int] | None = (40, 12)) -> Scenario:
        assert usage is not None
        return ant.stream(ant.tool_use_stream(calls, usage=usage)).split_writes("mid_line", pause=0)

    def error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Scenario:
        kind = {400: "invalid_request_error", 429: "rate_limit_error", 529: "overloaded_error"}.get(status, "api_error")
        return ant.error(status, kind, message, headers=headers)

    def upstream_model(self, rec: Received) -> str:
        return str(rec.json["model"])


class GeminiDialect:
    kind = "gemini"
    stop_native = "STOP"
    tool_native = "STOP"  # Gemini has no tool-call finish reason: STOP + function calls -> tool_calls

    def text(self, text: str, *, native: str | None = None, usage: tuple[int, int] | None = (11, 7)) -> Scenario:
        return Scenario.json(gem.text_response(text, finish_reason=native or self.stop_native, usage=usage))

    def text_stream(self, pieces: Sequence[str], *, native: str | None = None,
                    usage: tuple[int, int] | None = (11, 7)) -> Scenario:
        chunks = gem.stream_chunks(pieces, finish_reason=native or self.stop_native, usage=usage)
        return Scenario.sse(chunks, done=False, line_ending="\r\n")

    def tools(self, calls: Sequence[tuple[str, str, dict[str, Any]]], *,
              usage: tuple[int, int] | None = (40, 12)) -> Scenario:
        parts = [gem.function_call(n, a, id=i) for i, n, a in calls]
        return Scenario.json(gem.response(parts, usage=usage))

    def tools_stream(self, calls: Sequence[tuple[str, str, Sequence[str]]], *,
                     usage: tuple[int, int] | None = (40, 12)) -> Scenario:
        # Gemini never splits a call: each functionCall part carries the whole args object.
        parts = [gem.function_call(n, json.loads("".join(p)), id=i) for i, n, p in calls]
        chunks = gem.stream_chunks(parts, usage=usage)
        return Scenario.sse(chunks, done=False, line_ending="\r\n").split_writes("mid_line", pause=0)

    def error(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> Scenario:
        return gem.google_error(status, message, headers=headers)

    def upstream_model(self, rec: Received) -> str:
        model = gem.model_of(rec.path)
        assert model is not None, rec.path
        return model


DIALECTS: dict[str, Dialect] = {"openai": OpenAIDialect(), "gemini": GeminiDialect()}
if HAS_ANTHROPIC:
    DIALECTS["anthropic"] = AnthropicDialect()


def new_fake(kind: str) -> FakeOpenAI:
    """An unstarted fake upstream of `kind` that insists on `api_key(kind)`."""
    if kind == "openai":
        return FakeOpenAI(api_key=api_key(kind))
    if kind == "gemini":
        return FakeGemini(api_key=api_key(kind))
    if kind == "anthropic" and HAS_ANTHROPIC:
        return FakeAnthropic(api_key=api_key(kind))
    raise ValueError(kind)


@contextlib.asynccontextmanager
async def fakes(kinds: Sequence[str] = KINDS) -> AsyncIterator[dict[str, FakeOpenAI]]:
    """One started fake upstream per kind, on 127.0.0.1:0."""
    async with contextlib.AsyncExitStack() as stack:
        yield {kind: await stack.enter_async_context(new_fake(kind)) for kind in kinds}


def provider(kind: str, fake: FakeOpenAI, **options: Any) -> dict[str, Any]:
    """A ``[providers.NAME]`` table for `fake` (fast retries: tests want tiny delays)."""
    return {"kind": kind, "base_url": fake.base_url, "api_key_env": key_env(kind), "max_retries": 1,
            "retry_base_delay": 0.005, "retry_max_delay": 0.05, "first_byte_timeout": 5.0, **options}


def model(*routes: tuple[str, str], **options: Any) -> dict[str, Any]:
    """A ``[models."slug"]`` table with `routes` as (provider, upstream model) pairs."""
    return {"routes": [{"provider": p, "model": m} for p, m in routes],
            "capabilities": ["chat", "tools", "json"], "price_input_per_mtok": 1, "price_output_per_mtok": 2,
            **options}


# ------------------------------------------------------------------------------------ environment
@dataclass
class Env:
    """A running service + gateway and both clients."""

    svc: Svc
    channel: grpc.aio.Channel
    http: httpx.AsyncClient

    def client(self, protocol: str) -> Client:
        if protocol == "rest":
            sdk = openai.AsyncOpenAI(base_url="http://raven.test/v1", api_key=self.svc.user, max_retries=0,
                                     http_client=self.http)
            return RestClient(sdk)
        return GrpcClient(self.channel, self.svc.meta())

    async def usage(self, record_id: str, within: float = 5.0) -> UsageRecord:
        """The usage record of generation `record_id` (waits for it to be written)."""
        deadline = asyncio.get_running_loop().time() + within
        while True:
            await self.svc.services.usage.flush()
            rec = await self.svc.services.store.get_usage(record_id)
            if rec is not None:
                return rec
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"no usage record {record_id}")
            await asyncio.sleep(0.02)

    async def records(self) -> list[UsageRecord]:
        await self.svc.services.usage.flush()
        return [r async for r in self.svc.services.store.export_usage()]


@contextlib.asynccontextmanager
async def environment(tmp_path: Any, **settings: Any) -> AsyncIterator[Env]:
    """raven_service (gRPC, 127.0.0.1:0) with `settings` (e.g. ``providers=``, ``models=``) and the
    REST gateway in-process over a real channel to it."""
    from gateway.app import create_app
    from gateway.config import GatewaySettings

    async with service(tmp_path, **settings) as svc, grpc.aio.insecure_channel(svc.target) as channel:
        app = create_app(GatewaySettings(grpc_target=svc.target, max_body_bytes=1024 * 1024), channel=channel)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://raven.test", timeout=30) as http:
            yield Env(svc=svc, channel=channel, http=http)


def body_of(rec: Received) -> dict[str, Any]:
    """The JSON body of an upstream request."""
    assert isinstance(rec.json, dict), rec.body[:200]
    return rec.json


