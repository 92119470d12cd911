"""ChatService servicer: proto <-> domain, streaming as an async generator."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator
from typing import TypedDict

import grpc

from raven.v1 import chat_pb2, chat_service_pb2, chat_service_pb2_grpc
from raven_service.api import convert
from raven_service.api.context import authenticate, send_rate, set_rate_trailer
from raven_service.api.errors import abort
from raven_service.app.chat import ChatAdmission, ChatUseCase, Served, StreamEnd, StreamFailed
from raven_service.core.types import ChatRequest, Finish, ReasoningDelta, TextDelta, ToolCallDelta
from raven_service.policy.auth import Authenticator

_ASSISTANT = "assistant"


class _ChunkBase(TypedDict):
    """The fields every StreamChatCompletionResponse of one stream shares (a plain dict at runtime)."""

    id: str
    model: str
    created: int


def _extra_meta(adm_id: str, dropped: tuple[str, ...], provider: str = "") -> tuple[tuple[str, str], ...]:
    meta = [("x-raven-generation-id", adm_id)]
    if dropped:
        meta.append(("x-raven-dropped-params", ",".join(dropped)))
    if provider:
        meta.append(("x-raven-provider", provider))
    return tuple(meta)


class ChatServicer(chat_service_pb2_grpc.ChatServiceServicer):
    def __init__(self, auth: Authenticator, chat: ChatUseCase) -> None:
        self._auth = auth
        self._chat = chat

    async def CreateChatCompletion(
        self, request: chat_service_pb2.CreateChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> chat_service_pb2.CreateChatCompletionResponse:
        principal = await authenticate(self._auth, context)
        try:
            async with self._chat.admitted(principal, convert.chat_request(request, stream=False)) as adm:
                done = await self._chat.complete(adm)
        except Exception as exc:  # a RavenError, or a bug: INTERNAL without its text (logged)
            await abort(context, exc)
            raise
        set_rate_trailer(context, adm.ticket.rate, _extra_meta(done.id, done.dropped, done.provider))
        r = done.result
        message = chat_pb2.AssistantMessage(
            role=_ASSISTANT,
            tool_calls=[chat_pb2.ToolCall(id=c.id, type="function", name=c.name, arguments=c.arguments)
                        for c in r.tool_calls],
        )
        if r.content is not None:
            message.content = r.content
        if r.reasoning:
            message.reasoning_content = "".join(p.text for p in r.reasoning)
            message.reasoning.extend(convert.reasoning_parts(r.reasoning))
        return chat_service_pb2.CreateChatCompletionResponse(
            id=done.id,
            model=done.model,
            created=done.created,
            choices=[chat_pb2.ChatChoice(index=0, message=message, finish_reason=r.finish_reason,
                                         native_finish_reason=r.native_finish_reason,
                                         stop_sequence=r.stop_sequence)],
            usage=convert.usage(r.prompt_tokens, r.completion_tokens, done.cost, r.usage_estimated,
                                cached=r.cached_tokens, cache_creation=r.cache_creation_tokens,
                                reasoning=r.reasoning_tokens),
            provider=done.provider,
            dropped_params=list(done.dropped),
        )

    async def CountTokens(
        self, request: chat_service_pb2.CountTokensRequest, context: grpc.aio.ServicerContext
    ) -> chat_service_pb2.CountTokensResponse:
        principal = await authenticate(self._auth, context)
        try:
            req = ChatRequest(model=request.model, messages=convert.messages(request.messages),
                              tools=convert.tools(request.tools))
            model, tokens = self._chat.count_tokens(principal, req)
        except Exception as exc:  # a RavenError, or a bug: INTERNAL without its text (logged)
            await abort(context, exc)
            raise
        return chat_service_pb2.CountTokensResponse(input_tokens=tokens, model=model.id)

    async def StreamChatCompletion(
        self, request: chat_service_pb2.StreamChatCompletionRequest, context: grpc.aio.ServicerContext
    ) -> AsyncGenerator[chat_service_pb2.StreamChatCompletionResponse, None]:
        principal = await authenticate(self._auth, context)
        try:
            # Inside the admission scope from here on: a cancellation at any await below (even
            # before the first event) still settles the request exactly once; aclosing makes the
            # stream report its outcome (tokens so far) before the scope settles it.
            async with (
                self._chat.admitted(principal, convert.chat_request(request, stream=True)) as adm,
                contextlib.aclosing(self._responses(adm, context)) as responses,
            ):
                async for response in responses:
                    yield response
        except Exception as exc:  # a RavenError, or a bug: INTERNAL without its text (logged)
            await abort(context, exc)
            raise

    async def _responses(self, adm: ChatAdmission, context: grpc.aio.ServicerContext
                         ) -> AsyncGenerator[chat_service_pb2.StreamChatCompletionResponse, None]:
        # Headers go out at admission, so a client waiting for a slow upstream already has them.
        await send_rate(context, adm.ticket.rate, _extra_meta(adm.id, adm.dropped))
        Response = chat_service_pb2.StreamChatCompletionResponse
        Choice, Delta = chat_pb2.ChunkChoice, chat_pb2.ChatDelta
        base: _ChunkBase = {"id": adm.id, "model": adm.model.id, "created": adm.created}
        first = True
        provider = ""
        failed: StreamFailed | None = None
        failed_native = ""
        events = self._chat.stream(adm)
        try:
            async for ev in events:
                # Exact-type dispatch on the concrete event classes, written as `type(ev) is C` in each
                # test so that mypy narrows `ev`. Measured (CPython 3.11) as fast as the former
                # `kind = type(ev)`; `match` class patterns cost about 3x and isinstance about 1.3x.
                msg: chat_service_pb2.StreamChatCompletionResponse | None = None
                if type(ev) is TextDelta:
                    # Filled in place: a Delta and a Choice built apart would each be copied into it.
                    msg = Response(**base)
                    choice = msg.choices.add()
                    choice.delta.content = ev.text
                elif type(ev) is ToolCallDelta:
                    choice = _tool_call_choice(ev)
                elif type(ev) is ReasoningDelta:
                    choice = _reasoning_choice(ev)
                elif type(ev) is Finish:
                    if failed is not None:
                        failed_native = ev.native
                        continue
                    choice = Choice(index=0, delta=Delta(), finish_reason=ev.reason,
                                    native_finish_reason=ev.native, stop_sequence=ev.stop_sequence or None)
                elif type(ev) is Served:
                    provider = ev.provider
                    continue
                elif type(ev) is StreamFailed:
                    failed = ev  # reported in the final message, together with the usage
                    continue
                elif type(ev) is StreamEnd:
                    u = ev.usage
                    usage = convert.usage(u.prompt_tokens, u.completion_tokens, ev.cost, u.estimated,
                                          cached=u.cached_tokens, cache_creation=u.cache_creation_tokens,
                                          reasoning=u.reasoning_tokens)
                    if failed is None:
                        yield Response(**base, choices=[], usage=usage)
                    else:  # the stream ends with ONE chunk: finish_reason "error", the error and the usage
                        yield Response(**base, usage=usage, error=chat_service_pb2.StreamError(
                            message=failed.message, type="api_error", code=failed.code),
                            choices=[Choice(index=0, delta=Delta(), finish_reason="error",
                                            native_finish_reason=failed_native)])
                    continue
                else:
                    continue
                if msg is None:
                    msg = Response(**base, choices=[choice])
                if first:
                    first = False
                    msg.choices[0].delta.role = _ASSISTANT
                    msg.provider = provider
                    msg.dropped_params.extend(adm.dropped)
                    msg.prompt_tokens_estimate = adm.prompt_tokens
                yield msg
        finally:
            await events.aclose()


def _tool_call_choice(ev: ToolCallDelta) -> chat_pb2.ChunkChoice:
    tc = chat_pb2.ToolCallDelta(index=ev.index)
    if ev.id is not None:
        tc.id, tc.type = ev.id, "function"
    if ev.name is not None:
        tc.name = ev.name
    if ev.arguments or ev.id is not None:
        tc.arguments = ev.arguments
    return chat_pb2.ChunkChoice(index=0, delta=chat_pb2.ChatDelta(tool_calls=[tc]))


def _reasoning_choice(ev: ReasoningDelta) -> chat_pb2.ChunkChoice:
    delta = chat_pb2.ChatDelta(reasoning=chat_pb2.ReasoningDelta(
        index=ev.index, text=ev.text, signature=ev.signature, encrypted=ev.encrypted))
    if ev.text:
        delta.reasoning_content = ev.text
    return chat_pb2.ChunkChoice(index=0, delta=delta)
