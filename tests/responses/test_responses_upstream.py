"""What a Responses API request becomes upstream: the openai SDK -> gateway -> service -> a fake
OpenAI-compatible upstream on a real loopback socket, which records the chat request it received."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, Scenario, chat_completion, chunk, usage_chunk
from tests_support import Svc, service, usage_records

KEY_ENV = "RAVEN_RESPONSES_TEST_UPSTREAM_KEY"
UPSTREAM_KEY = "sk-responses-upstream-0123456789"
SLUG = "acme/gpt"

TOOL = {"type": "function", "name": "lookup", "description": "Look a word up.", "strict": True,
        "parameters": {"type": "object", "properties": {"word": {"type": "string"}}, "required": ["word"],
                       "additionalProperties": False}}


@contextlib.asynccontextmanager
async def _environment(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[FakeOpenAI, Svc,
                                                                                                openai.AsyncOpenAI]]:
    from gateway.app import create_app
    from gateway.config import GatewaySettings

    monkeypatch.setenv(KEY_ENV, UPSTREAM_KEY)
    async with FakeOpenAI(api_key=UPSTREAM_KEY) as fake:
        providers = {"acme": {"kind": "openai", "base_url": fake.base_url, "api_key_env": KEY_ENV, "max_retries": 0}}
        models = {SLUG: {
            "routes": [{"provider": "acme", "model": "gpt-up"}], "capabilities": ["chat", "tools", "json"],
            "price_input_per_mtok": 1, "price_output_per_mtok": 2,
            "supported_parameters": ["max_tokens", "max_completion_tokens", "temperature", "top_p", "tools",
                                     "tool_choice", "response_format", "reasoning", "parallel_tool_calls",
                                     "prompt_cache_key", "user"]}}
        async with service(tmp_path, providers=providers, models=models) as svc:
            import grpc

            async with grpc.aio.insecure_channel(svc.target) as channel:
                app = create_app(GatewaySettings(grpc_target=svc.target), channel=channel)
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://raven.test",
                                             timeout=30) as http:
                    sdk = openai.AsyncOpenAI(base_url="http://raven.test/v1", api_key=svc.user, max_retries=0,
                                             http_client=http)
                    yield fake, svc, sdk


async def test_request_translation_reaches_upstream(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _environment(tmp_path, monkeypatch) as (fake, svc, sdk):
        fake.script(Scenario.json(chat_completion(None, tool_calls=[("call_up1", "lookup", '{"word":"raven"}')],
                                                  finish_reason="tool_calls", usage=(30, 7))))
        first = await sdk.responses.create(
            model=SLUG, instructions="Be terse.", max_output_tokens=300, temperature=0.5, top_p=0.9,
            reasoning={"effort": "low", "summary": "auto"}, parallel_tool_calls=False, prompt_cache_key="pc-1",
            tools=[TOOL, {"type": "web_search"}], tool_choice="auto", store=True,
            include=["reasoning.encrypted_content"], metadata={"k": "v"},
            input=[{"type": "message", "id": "msg_a", "role": "developer",
                    "content": [{"type": "input_text", "text": "dev note"}]},
                   {"role": "user", "content": [{"type": "input_text", "text": "Define raven."},
                                                {"type": "input_image", "image_url": "https://img.test/r.png",
                                                 "detail": "low"}]}])
        up = fake.last.json
        assert fake.last.path == "/v1/chat/completions"
        assert fake.last.headers["authorization"] == f"Bearer {UPSTREAM_KEY}"
        assert up["model"] == "gpt-up"
        assert up["messages"] == [
            {"role": "system", "content": "Be terse."},
            {"role": "developer", "content": "dev note"},
            {"role": "user", "content": [{"type": "text", "text": "Define raven."},
                                         {"type": "image_url", "image_url": {"url": "https://img.test/r.png",
                                                                             "detail": "low"}}]},
        ]
        assert up["max_completion_tokens"] == 300 and "max_tokens" not in up
        assert (up["temperature"], up["top_p"]) == (0.5, 0.9)
        assert up["reasoning_effort"] == "low"
        assert up["parallel_tool_calls"] is False and up["prompt_cache_key"] == "pc-1"
        assert [t["function"]["name"] for t in up["tools"]] == ["lookup"]  # web_search is not served
        assert up["tools"][0]["function"]["parameters"] == TOOL["parameters"]
        assert up["tool_choice"] == "auto"
        for own in ("include", "store", "metadata", "input", "instructions", "previous_response_id", "text"):
            assert own not in up
        assert [o.type for o in first.output] == ["function_call"]
        call = first.output[0]
        assert (call.call_id, call.name, call.arguments) == ("call_up1", "lookup", '{"word":"raven"}')
        assert (first.usage.input_tokens, first.usage.output_tokens) == (30, 7)

        # the tool result, chained with previous_response_id: the whole conversation goes upstream
        fake.script(Scenario.json(chat_completion("A black bird.", usage=(50, 4))))
        second = await sdk.responses.create(
            model=SLUG, previous_response_id=first.id, tools=[TOOL],
            input=[{"type": "function_call_output", "call_id": "call_up1", "output": "a large black bird"}])
        messages = fake.last.json["messages"]
        assert messages[0] == {"role": "developer", "content": "dev note"}  # instructions are not carried over
        assert messages[1]["role"] == "user"
        assert messages[2]["role"] == "assistant" and messages[2]["tool_calls"] == [
            {"id": "call_up1", "type": "function", "function": {"name": "lookup", "arguments": '{"word":"raven"}'}}]
        assert messages[3] == {"role": "tool", "tool_call_id": "call_up1", "content": "a large black bird"}
        assert len(messages) == 4
        assert second.output_text == "A black bird." and second.previous_response_id == first.id
        records = await usage_records(svc.services)
        assert [(r.prompt_tokens, r.completion_tokens) for r in records] == [(30, 7), (50, 4)]
        assert all(r.provider == "acme" and r.model == SLUG for r in records)


async def test_stream_reasoning_and_cached_usage(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reasoning content (DeepSeek-style reasoning_content deltas) becomes a reasoning item; the
    usage details (cached and reasoning tokens) reach response.completed."""
    async with _environment(tmp_path, monkeypatch) as (fake, svc, sdk):
        usage = usage_chunk(40, 12)
        usage["usage"]["prompt_tokens_details"] = {"cached_tokens": 32}
        usage["usage"]["completion_tokens_details"] = {"reasoning_tokens": 5}
        fake.script(Scenario.sse([
            chunk({"role": "assistant", "content": None, "reasoning_content": "Think"}),
            chunk({"reasoning_content": "ing."}),
            chunk({"content": "Hi"}), chunk({"content": " there"}),
            chunk({}, finish_reason="stop"), usage]))
        async with sdk.responses.stream(model=SLUG, input="hello") as stream:
            events = [e async for e in stream]
            final = await stream.get_final_response()
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[2:5] == ["response.output_item.added", "response.content_part.added",
                              "response.reasoning_text.delta"]
        assert kinds.index("response.output_item.done") < kinds.index("response.output_text.delta")
        assert kinds[-1] == "response.completed"
        assert fake.last.json["stream"] is True and fake.last.json["stream_options"] == {"include_usage": True}
        assert [o.type for o in final.output] == ["reasoning", "message"]
        assert final.output[0].content[0].text == "Thinking."
        assert final.output_text == "Hi there"
        assert final.usage.input_tokens == 40 and final.usage.output_tokens == 12
        assert final.usage.input_tokens_details.cached_tokens == 32
        assert final.usage.output_tokens_details.reasoning_tokens == 5
        records = await usage_records(svc.services)
        assert len(records) == 1 and records[0].status == "completed"


async def test_upstream_failure_mid_stream_is_response_failed(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _environment(tmp_path, monkeypatch) as (fake, svc, sdk):
        fake.script(Scenario.sse([chunk({"role": "assistant", "content": "Par"}), chunk({"content": "tial"})],
                                 done=False).reset(after=2))
        stream = await sdk.responses.create(model=SLUG, input="hello", stream=True)
        events = [e async for e in stream]
        kinds = [e.type for e in events]
        assert kinds[-1] == "response.failed"
        assert kinds.count("response.output_text.delta") == 2
        failed = events[-1].response
        assert failed.status == "failed" and failed.error is not None and failed.error.message
        assert [e.sequence_number for e in events] == list(range(len(events)))
        records = await usage_records(svc.services)
        assert len(records) == 1 and records[0].status == "failed"


async def test_bad_requests_never_reach_upstream(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    async with _environment(tmp_path, monkeypatch) as (fake, svc, sdk):
        for kwargs in ({"input": [{"role": "robot", "content": "x"}]}, {"input": "x", "temperature": 3},
                       {"input": [{"type": "item_reference", "id": "msg_1"}]},
                       {"input": "x", "background": True}):
            with pytest.raises(openai.BadRequestError):
                await sdk.responses.create(model=SLUG, **kwargs)  # type: ignore[arg-type]
        with pytest.raises(openai.NotFoundError):
            await sdk.responses.create(model=SLUG, input="x", previous_response_id="resp_" + "0" * 32)
        assert fake.requests == []
        assert await usage_records(svc.services) == []
