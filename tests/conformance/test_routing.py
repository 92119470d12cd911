"""Routing behaviour against fake upstreams, through both protocols: fallbacks (catalogue routes
and the request's own ``models`` list), retries honouring Retry-After, 4xx never retried, no route
switch after the first byte, the circuit breaker (open, skip, cooldown, single half-open probe),
cancellation reaching the upstream, and unsupported parameters being dropped.

Each test builds its own service; the two routes of a model are two separate fake upstreams
(``a`` and ``b``), so what each route received is unambiguous.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from conformance_support import (
    DIALECTS,
    KINDS,
    PROTOCOLS,
    USER_HI,
    CallFailed,
    Env,
    Reply,
    StreamReply,
    api_key,
    body_of,
    environment,
    grpc_request,
    key_env,
    model,
    new_fake,
    provider,
)
from fakes.openai_upstream import FakeOpenAI, Scenario

from raven.v1 import chat_service_pb2 as cs

pytestmark = pytest.mark.timeout(10)

MODES = ("unary", "stream")
OK_TEXT = "Hello! How can I assist you today?"  # the fakes' default OpenAI answer


@dataclass
class Routes:
    env: Env
    a: FakeOpenAI
    b: FakeOpenAI


@contextlib.asynccontextmanager
async def two_routes(tmp_path: Any, monkeypatch: pytest.MonkeyPatch, *, b_kind: str = "openai",
                     a_options: dict[str, Any] | None = None, models: dict[str, Any] | None = None,
                     **settings: Any) -> AsyncIterator[Routes]:
    """Model ``m`` routes to provider ``a`` (an OpenAI fake, upstream model ``a-m``) then ``b`` (a
    fake of `b_kind`, upstream model ``b-m``). `models` adds catalogue entries."""
    for kind in {"openai", b_kind}:
        monkeypatch.setenv(key_env(kind), api_key(kind))
    async with new_fake("openai") as a, new_fake(b_kind) as b:
        providers = {"a": provider("openai", a, **(a_options or {})), "b": provider(b_kind, b)}
        catalogue = {"m": model(("a", "a-m"), ("b", "b-m")), **(models or {})}
        async with environment(tmp_path, providers=providers, models=catalogue, **settings) as env:
            yield Routes(env=env, a=a, b=b)


async def _call(env: Env, protocol: str, mode: str, **kw: Any) -> Reply | StreamReply:
    client = env.client(protocol)
    return await (client.complete(**kw) if mode == "unary" else client.stream(**kw))


def _fail(status: int, message: str = "boom", headers: dict[str, str] | None = None) -> Scenario:
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    return Scenario.error(status, message, type=kind, headers=headers)


# ------------------------------------------------------------------------------------ fallbacks
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("b_kind", KINDS)
async def test_falls_back_to_next_route_on_500(tmp_path, monkeypatch, b_kind: str, protocol: str, mode: str) -> None:
    async with two_routes(tmp_path, monkeypatch, b_kind=b_kind) as r:
        r.a.on_model("a-m", _fail(500))
        r.b.script(DIALECTS[b_kind].text("from b") if mode == "unary" else DIALECTS[b_kind].text_stream(["from", " b"]))
        reply = await _call(r.env, protocol, mode, model="m", messages=USER_HI)
        assert reply.content == "from b"
        assert len(r.a.requests) == 2  # the attempt and its retry
        assert len(r.b.requests) == 1
        rec = await r.env.usage(reply.id)
        assert rec.status == "completed"
        assert (rec.provider, rec.upstream_model, rec.model) == ("b", "b-m", "m")
        assert rec.attempts == ("a/a-m:upstream_error", "a/a-m:upstream_error", "b/b-m:ok")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_request_models_list_is_a_fallback_chain(tmp_path, monkeypatch, protocol: str, mode: str) -> None:
    extra = {"primary": model(("a", "a-m")), "backup": model(("b", "b-m"))}
    async with two_routes(tmp_path, monkeypatch, models=extra) as r:
        r.a.on_model("a-m", _fail(503))
        reply = await _call(r.env, protocol, mode, model="primary", models=["backup"], messages=USER_HI)
        assert reply.content == OK_TEXT
        assert [body_of(q)["model"] for q in r.a.requests] == ["a-m", "a-m"]
        assert [body_of(q)["model"] for q in r.b.requests] == ["b-m"]
        rec = await r.env.usage(reply.id)
        assert (rec.model, rec.provider, rec.status) == ("primary", "b", "completed")
        assert rec.attempts[-1] == "b/b-m:ok"
        # without the list the same request fails: the fallback came from the list
        with pytest.raises(CallFailed) as ei:
            await _call(r.env, protocol, mode, model="primary", messages=USER_HI)
        assert ei.value.status == 502
        # a list naming an unknown model is a bad request that reaches no upstream
        seen = len(r.a.requests) + len(r.b.requests)
        with pytest.raises(CallFailed) as ei:
            await _call(r.env, protocol, mode, model="primary", models=["no/such-model"], messages=USER_HI)
        assert ei.value.status == 400 and ei.value.code == "model_not_found"
        assert len(r.a.requests) + len(r.b.requests) == seen


# ------------------------------------------------------------------------------------ retries
@pytest.mark.parametrize(
    ("headers", "retries", "at_least"),
    [({"retry-after": "1"}, 1, 0.95), ({"retry-after-ms": "300"}, 2, 0.58)],
    ids=["retry-after", "retry-after-ms"],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_retry_waits_as_long_as_retry_after_says(tmp_path, monkeypatch, protocol: str, headers: dict[str, str],
                                                      retries: int, at_least: float) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": retries, "retry_max_delay": 4.0}) as r:
        r.a.script(*[_fail(429, "slow down", headers) for _ in range(retries)])
        start = time.monotonic()
        reply = await _call(r.env, protocol, "unary", model="m", messages=USER_HI)
        elapsed = time.monotonic() - start
        assert reply.content == OK_TEXT
        assert len(r.a.requests) == retries + 1 and not r.b.requests  # served by a after N retries
        assert elapsed >= at_least, f"retried after {elapsed:.2f}s, before the upstream's Retry-After"
        assert elapsed < at_least + 1.5
        rec = await r.env.usage(reply.id)
        assert rec.attempts == ("a/a-m:upstream_rate_limited",) * retries + ("a/a-m:ok",)


async def test_backoff_without_retry_after_is_short_and_capped(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2, "retry_max_delay": 0.2}) as r:
        r.a.script(_fail(503), _fail(503))  # no Retry-After: exponential backoff with jitter, capped at 0.2 s
        start = time.monotonic()
        reply = await _call(r.env, "grpc", "unary", model="m", messages=USER_HI)
        elapsed = time.monotonic() - start
        assert reply.content == OK_TEXT
        assert len(r.a.requests) == 3 and not r.b.requests
        assert elapsed < 1.0


async def test_retry_after_beyond_the_cap_moves_to_the_next_route(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2, "retry_max_delay": 0.2}) as r:
        r.a.script(_fail(503), _fail(429, "slow down", {"retry-after": "120"}))
        start = time.monotonic()
        reply = await _call(r.env, "grpc", "unary", model="m", messages=USER_HI)
        assert time.monotonic() - start < 1.5  # neither 120 s nor a pointless capped retry of route a
        assert reply.content == OK_TEXT
        assert len(r.a.requests) == 2 and len(r.b.requests) == 1


@pytest.mark.parametrize("upstream", [400, 422])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_request_4xx_is_never_retried_nor_falls_back(tmp_path, monkeypatch, protocol: str, upstream: int) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2}) as r:
        r.a.on_model("a-m", _fail(upstream, "rejected"))
        with pytest.raises(CallFailed) as ei:
            await _call(r.env, protocol, "unary", model="m", messages=USER_HI)
        assert ei.value.status == 400
        assert len(r.a.requests) == 1  # not retried
        assert not r.b.requests  # and no fallback: the request itself was refused


@pytest.mark.parametrize("upstream", [401, 403, 404])
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_broken_route_4xx_is_not_retried_but_falls_back(tmp_path, monkeypatch, protocol: str,
                                                              upstream: int) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2}) as r:
        r.a.on_model("a-m", _fail(upstream, "route broken"))
        reply = await _call(r.env, protocol, "unary", model="m", messages=USER_HI)
        assert reply.content == OK_TEXT
        assert len(r.a.requests) == 1  # not retried: the same route would refuse again
        assert len(r.b.requests) == 1  # but the next route served
        r.b.on_model("b-m", _fail(upstream, "route broken too"))
        with pytest.raises(CallFailed) as ei:
            await _call(r.env, protocol, "unary", model="m", messages=USER_HI)
        assert ei.value.status == 502  # every route broken: Raven's upstream problem, not the caller's


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_malformed_upstream_reply_is_a_broken_route_that_falls_back(tmp_path, monkeypatch, protocol: str,
                                                                          mode: str) -> None:
    # A 200 whose body is not the provider's wire format has no HTTP error status at all: the adapter
    # classifies it as "broken", so the router moves on (no retry) instead of answering 502.
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 2}) as r:
        garbage = b"<html>proxy error</html>" if mode == "unary" else b"data: {not json\n\n"
        ctype = "application/json" if mode == "unary" else "text/event-stream"
        r.a.on_model("a-m", Scenario.raw(garbage, content_type=ctype))
        reply = await _call(r.env, protocol, mode, model="m", messages=USER_HI)
        assert reply.content == OK_TEXT
        assert len(r.a.requests) == 1 and len(r.b.requests) == 1
        rec = await r.env.usage(reply.id)
        assert rec.status == "completed" and rec.provider == "b"
        assert len(rec.attempts) == 2 and rec.attempts[1] == "b/b-m:ok"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_route_without_its_key_falls_back(tmp_path, monkeypatch, protocol: str) -> None:
    # Route a's key variable is unset: a configuration fault of that route only (never shown to the
    # caller by name); the next route serves, and a never receives a request.
    monkeypatch.delenv("RAVEN_CONFORMANCE_UNSET_KEY", raising=False)
    async with two_routes(tmp_path, monkeypatch, a_options={"api_key_env": "RAVEN_CONFORMANCE_UNSET_KEY"}) as r:
        reply = await _call(r.env, protocol, "unary", model="m", messages=USER_HI)
        assert reply.content == OK_TEXT
        assert not r.a.requests and len(r.b.requests) == 1
        r.b.on_model("b-m", _fail(401, "route broken too"))
        with pytest.raises(CallFailed) as ei:
            await _call(r.env, protocol, "unary", model="m", messages=USER_HI)
        assert ei.value.status == 502
        assert "RAVEN_CONFORMANCE_UNSET_KEY" not in str(ei.value)


# ------------------------------------------------------------------------------------ first byte
@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_no_route_switch_after_first_byte(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch) as r:
        # role chunk and "partial" go out, then the connection is reset
        r.a.on_model("a-m", Scenario.chat_stream(["partial", " more", " text"]).reset(after=2))
        reply = await _call(r.env, protocol, "stream", model="m", messages=USER_HI)
        assert isinstance(reply, StreamReply)
        assert reply.content == "partial"
        assert reply.error is not None and reply.finish_reason == "error"
        assert reply.error["message"]
        assert api_key("openai") not in reply.error["message"]
        assert len(r.a.requests) == 1 and r.a.requests[0].reset
        assert not r.b.requests  # committed to route a once the first byte went out
        rec = await r.env.usage(reply.id)
        assert (rec.status, rec.provider, rec.finish_reason) == ("failed", "a", "error")
        assert rec.attempts == ("a/a-m:ok",)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_idle_timeout_mid_stream_ends_with_error_not_a_new_route(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"idle_timeout": 0.3}) as r:
        r.a.on_model("a-m", Scenario.chat_stream(["partial", " more"]).stall(after=2, seconds=5))
        start = time.monotonic()
        reply = await _call(r.env, protocol, "stream", model="m", messages=USER_HI)
        assert time.monotonic() - start < 3
        assert isinstance(reply, StreamReply)
        assert reply.content == "partial"
        assert reply.error is not None and reply.finish_reason == "error"
        if protocol == "grpc":
            assert reply.error["code"] == "upstream_timeout"
        await r.a.requests[0].wait_ended()
        assert r.a.requests[0].disconnected  # Raven hung up on the stalled upstream
        assert not r.b.requests


# ------------------------------------------------------------------------------------ circuit breaker
BREAKER = {"breaker_threshold": 2, "breaker_cooldown_seconds": 0.8}
COOLDOWN = 0.85  # sleeping this long lets the cooldown pass


async def _ask(env: Env, protocol: str = "grpc") -> Reply:
    reply = await env.client(protocol).complete(model="m", messages=USER_HI)
    assert isinstance(reply, Reply)
    return reply


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_breaker_opens_skips_route_then_probes_once(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 0}, **BREAKER) as r:
        r.a.on_model("a-m", _fail(500))
        for n in (1, 2):  # two consecutive failures open a's breaker; b serves meanwhile
            assert (await _ask(r.env, protocol)).provider == "b"
            assert len(r.a.requests) == n
        reply = await _ask(r.env, protocol)
        assert reply.provider == "b"
        assert len(r.a.requests) == 2  # skipped: a saw nothing
        rec = await r.env.usage(reply.id)
        assert rec.attempts == ("a/a-m:circuit_open", "b/b-m:ok")
        await asyncio.sleep(COOLDOWN)  # cooldown over; a has recovered
        r.a.clear()
        reply = await _ask(r.env, protocol)
        assert reply.provider == "a" and len(r.a.requests) == 1  # the probe went to a, and it closed the breaker
        assert (await _ask(r.env, protocol)).provider == "a"
        assert len(r.a.requests) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_all_circuits_open_fails_fast_without_calling_upstream(tmp_path, monkeypatch, protocol: str) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 0}, breaker_threshold=1,
                          breaker_cooldown_seconds=30, models={"solo": model(("a", "a-m"))}) as r:
        r.a.on_model("a-m", _fail(500))
        with pytest.raises(CallFailed) as ei:
            await _call(r.env, protocol, "unary", model="solo", messages=USER_HI)
        assert (ei.value.status, ei.value.code) == (502, "upstream_error")
        for mode in MODES:
            with pytest.raises(CallFailed) as ei:
                await _call(r.env, protocol, mode, model="solo", messages=USER_HI)
            assert (ei.value.status, ei.value.code) == (502, "no_route_available")
        assert len(r.a.requests) == 1


async def test_breaker_failed_probe_reopens(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 0}, **BREAKER) as r:
        r.a.on_model("a-m", _fail(500))
        for _ in range(2):
            await _ask(r.env)
        await asyncio.sleep(COOLDOWN)
        assert (await _ask(r.env)).provider == "b"
        assert len(r.a.requests) == 3  # the probe
        assert (await _ask(r.env)).provider == "b"
        assert len(r.a.requests) == 3  # open again at once, for a new cooldown


async def test_breaker_lets_one_probe_through_while_half_open(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 0}, **BREAKER) as r:
        r.a.on_model("a-m", _fail(500))
        for _ in range(2):
            await _ask(r.env)
        await asyncio.sleep(COOLDOWN)
        r.a.clear()
        r.a.on_model("a-m", Scenario.json({"choices": [{"index": 0, "message": {"role": "assistant",
                                                                                 "content": "probe"},
                                                          "finish_reason": "stop"}]}).slow_first_byte(0.3))
        replies = await asyncio.gather(_ask(r.env), _ask(r.env), _ask(r.env))
        assert sorted(x.provider or "" for x in replies) == ["a", "b", "b"]
        assert len(r.a.requests) == 1  # only the probe reached a while it was half-open


@pytest.mark.parametrize("verdict", ["upstream 400", "client cancels"])
async def test_breaker_probe_without_a_verdict_does_not_wedge_the_route(tmp_path, monkeypatch, verdict: str) -> None:
    """A half-open probe that ends without telling whether the route is healthy (the upstream
    refused the request itself, or the client went away) must not leave the route skipped forever."""
    async with two_routes(tmp_path, monkeypatch, a_options={"max_retries": 0}, **BREAKER) as r:
        r.a.on_model("a-m", _fail(500))
        for _ in range(2):
            await _ask(r.env)
        await asyncio.sleep(COOLDOWN)
        r.a.clear()
        if verdict == "upstream 400":
            r.a.script(_fail(400, "bad request"))
            with pytest.raises(CallFailed):
                await _ask(r.env)
        else:
            r.a.script(Scenario.chat_stream(["late"]).slow_first_byte(5))
            call = r.env.client("grpc").stub.StreamChatCompletion(  # type: ignore[attr-defined]
                grpc_request(cs.StreamChatCompletionRequest, {"model": "m", "messages": USER_HI}),
                metadata=r.env.svc.meta())
            await _until(lambda: len(r.a.requests) == 1)
            call.cancel()
            await r.a.requests[0].wait_ended()
        assert len(r.a.requests) == 1  # the probe
        reply = await _ask(r.env)
        assert reply.provider == "a", "the route stayed skipped after a probe without a verdict"


async def _until(predicate: Any, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


# ------------------------------------------------------------------------------------ cancellation
async def test_cancelled_grpc_stream_closes_upstream_and_records_usage(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch) as r:
        r.a.on_model("a-m", Scenario.chat_stream([f"w{i} " for i in range(300)]).paced(0.02))
        call = r.env.client("grpc").stub.StreamChatCompletion(  # type: ignore[attr-defined]
            grpc_request(cs.StreamChatCompletionRequest, {"model": "m", "messages": USER_HI}),
            metadata=r.env.svc.meta())
        seen = 0
        gen_id = ""
        async for msg in call:
            gen_id = gen_id or msg.id
            seen += 1
            if seen == 4:
                break
        call.cancel()
        rec = r.a.requests[0]
        await rec.wait_ended()
        assert rec.disconnected and not rec.completed, "the upstream request outlived the cancelled call"
        assert not r.b.requests
        usage = await r.env.usage(gen_id)
        assert usage.status == "cancelled"
        assert 0 < usage.completion_tokens < 300
        assert usage.provider == "a" and usage.cost > 0


async def test_cancelled_grpc_unary_closes_upstream_and_records_usage(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch) as r:
        r.a.on_model("a-m", Scenario.json({"choices": []}).slow_first_byte(5))
        call = r.env.client("grpc").stub.CreateChatCompletion(  # type: ignore[attr-defined]
            grpc_request(cs.CreateChatCompletionRequest, {"model": "m", "messages": USER_HI}),
            metadata=r.env.svc.meta())
        await _until(lambda: len(r.a.requests) == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await r.a.requests[0].wait_ended()
        assert r.a.requests[0].disconnected
        assert not r.b.requests
        await _until_record(r.env, "cancelled")


async def _until_record(env: Env, status: str) -> None:
    deadline = time.monotonic() + 5
    while not any(rec.status == status for rec in await env.records()):
        assert time.monotonic() < deadline, f"no usage record with status {status}"
        await asyncio.sleep(0.02)


# ------------------------------------------------------------------------------------ dropped parameters
def _sent_params(kind: str, body: dict[str, Any]) -> set[str]:
    """Which of seed / top_p / temperature / max_tokens / tools the upstream received."""
    if kind == "gemini":
        cfg = body.get("generationConfig", {})
        names = {"seed": "seed", "topP": "top_p", "temperature": "temperature", "maxOutputTokens": "max_tokens"}
        sent = {ours for wire, ours in names.items() if wire in cfg}
    else:
        sent = {p for p in ("seed", "top_p", "temperature", "max_tokens") if p in body}
    if "tools" in body:
        sent.add("tools")
    return sent


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("kind", KINDS)
async def test_unsupported_parameters_are_dropped(tmp_path, monkeypatch, kind: str, protocol: str, mode: str) -> None:
    monkeypatch.setenv(key_env(kind), api_key(kind))
    async with new_fake(kind) as fake:
        catalogue = {"narrow": model(("p", "up-model"), supported_parameters=["max_tokens", "temperature"])}
        async with environment(tmp_path, providers={"p": provider(kind, fake)}, models=catalogue) as env:
            d = DIALECTS[kind]
            fake.script(d.text("ok") if mode == "unary" else d.text_stream(["ok"]))
            reply = await _call(env, protocol, mode, model="narrow", messages=USER_HI, seed=7, top_p=0.5,
                                temperature=0.2, max_tokens=50)
            assert reply.content == "ok"
            assert reply.headers["x-raven-dropped-params"] == "seed,top_p"
            assert _sent_params(kind, body_of(fake.requests[0])) == {"temperature", "max_tokens"}
            # tools (and the tool_choice that goes with them) are dropped the same way
            fake.script(d.text("no tools") if mode == "unary" else d.text_stream(["no tools"]))
            tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
            reply = await _call(env, protocol, mode, model="narrow", messages=USER_HI, tools=[tool],
                                tool_choice="required")
            assert reply.content == "no tools"
            assert reply.headers["x-raven-dropped-params"] == "tool_choice,tools"
            body = body_of(fake.requests[1])
            assert "tools" not in _sent_params(kind, body)
            assert "tool_choice" not in body and "toolConfig" not in body
            # a request using only supported parameters reports nothing dropped
            fake.script(d.text("plain") if mode == "unary" else d.text_stream(["plain"]))
            reply = await _call(env, protocol, mode, model="narrow", messages=USER_HI, temperature=1)
            assert "x-raven-dropped-params" not in reply.headers


async def test_grpc_response_lists_dropped_parameters(tmp_path, monkeypatch) -> None:
    async with two_routes(tmp_path, monkeypatch,
                          models={"narrow": model(("a", "a-m"), supported_parameters=["temperature"])}) as r:
        stub = r.env.client("grpc").stub  # type: ignore[attr-defined]
        kw = {"model": "narrow", "messages": USER_HI, "seed": 1, "top_p": 0.9, "stop": ["\n"]}
        unary = await stub.CreateChatCompletion(grpc_request(cs.CreateChatCompletionRequest, kw),
                                                metadata=r.env.svc.meta())
        assert list(unary.dropped_params) == ["seed", "stop", "top_p"]
        call = stub.StreamChatCompletion(grpc_request(cs.StreamChatCompletionRequest, kw), metadata=r.env.svc.meta())
        first = await call.read()
        assert list(first.dropped_params) == ["seed", "stop", "top_p"]
        assert dict(await call.initial_metadata())["x-raven-dropped-params"] == "seed,stop,top_p"
        while await call.read() is not grpc.aio.EOF:
            pass
        assert await call.code() == grpc.StatusCode.OK
        assert all(k not in body_of(q) for q in r.a.requests for k in ("seed", "top_p", "stop"))
