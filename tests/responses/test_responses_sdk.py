"""POST /v1/responses and GET /v1/responses/{id} through the official openai SDK, against the real
service and the `local` simulator (over a real gRPC channel and over the in-process one)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import openai
import pytest
from tests_support import usage_records

CHAT = "raven/local-chat"

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 10},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}
WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Get the weather forecast for a city.",
                "parameters": WEATHER, "strict": True}


async def test_text_unary_shape_usage_and_record(rest) -> None:
    client = rest.sdk()
    raw = await client.responses.with_raw_response.create(model=CHAT, input="echo: hello world",
                                                          instructions="Answer briefly.")
    r = raw.parse()
    assert r.object == "response" and r.status == "completed" and r.id.startswith("resp_")
    assert r.output_text == "hello world"
    assert [item.type for item in r.output] == ["message"]
    message = r.output[0]
    assert message.role == "assistant" and message.status == "completed" and message.id.startswith("msg_")
    assert [part.type for part in message.content] == ["output_text"]
    assert r.instructions == "Answer briefly." and r.store is True and r.model == CHAT
    assert r.usage is not None
    assert r.usage.total_tokens == r.usage.input_tokens + r.usage.output_tokens
    assert r.usage.output_tokens == 2 and r.usage.input_tokens > 0
    assert r.usage.input_tokens_details.cached_tokens == 0
    assert r.usage.output_tokens_details.reasoning_tokens == 0
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    records = await usage_records(rest.svc.services)
    assert len(records) == 1
    rec = records[0]
    assert rec.id == "chatcmpl-" + r.id[len("resp_"):]
    assert (rec.prompt_tokens, rec.completion_tokens, rec.status) == (r.usage.input_tokens, 2, "completed")
    assert rec.cost > 0


async def test_function_tool_round_trip(rest) -> None:
    client = rest.sdk()
    question = {"role": "user", "content": "What is the weather in Paris?"}
    first = await client.responses.create(model=CHAT, input=[question], tools=[WEATHER_TOOL],
                                          tool_choice="required")
    assert first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert len(calls) == 1 and len(first.output) == 1
    call = calls[0]
    assert call.name == "get_weather" and call.call_id.startswith("call_") and call.id.startswith("fc_")
    jsonschema.validate(json.loads(call.arguments), WEATHER)
    second = await client.responses.create(model=CHAT, tools=[WEATHER_TOOL], input=[
        question,
        {"type": "function_call", "call_id": call.call_id, "name": call.name, "arguments": call.arguments},
        {"type": "function_call_output", "call_id": call.call_id, "output": json.dumps({"sky": "sunny"})},
    ])
    assert second.status == "completed"
    assert [item.type for item in second.output] == ["message"]
    assert second.output_text
    records = await usage_records(rest.svc.services)
    assert [r.finish_reason for r in records] == ["tool_calls", "stop"]


async def test_json_schema_format(rest) -> None:
    client = rest.sdk()
    r = await client.responses.create(model=CHAT, input="The weather in Lisbon, please.", text={
        "format": {"type": "json_schema", "name": "weather", "schema": WEATHER, "strict": True}})
    jsonschema.validate(json.loads(r.output_text), WEATHER)
    assert r.text.format.type == "json_schema"
    obj = await client.responses.create(model=CHAT, input="Some JSON please.", text={"format": {"type": "json_object"}})
    assert isinstance(json.loads(obj.output_text), dict)


async def test_store_get_and_chaining(rest) -> None:
    client = rest.sdk()
    first = await client.responses.create(model=CHAT, input="echo: remember the lantern", metadata={"run": "1"})
    got = await client.responses.retrieve(first.id)
    assert got.model_dump() == first.model_dump()
    assert got.metadata == {"run": "1"}
    second = await client.responses.create(model=CHAT, input="echo: and the bridge", previous_response_id=first.id)
    assert second.previous_response_id == first.id and second.output_text == "and the bridge"
    # the chain's history reached the model: the second prompt holds the first turn too
    alone = await client.responses.create(model=CHAT, input="echo: and the bridge", store=False)
    assert second.usage.input_tokens > alone.usage.input_tokens
    third = await client.responses.create(model=CHAT, input="echo: last", previous_response_id=second.id)
    assert third.usage.input_tokens > second.usage.input_tokens
    assert (await client.responses.retrieve(third.id)).previous_response_id == second.id


async def test_store_false_is_not_kept(rest) -> None:
    client = rest.sdk()
    r = await client.responses.create(model=CHAT, input="echo: ephemeral", store=False)
    assert r.store is False and r.output_text == "ephemeral"
    with pytest.raises(openai.NotFoundError) as err:
        await client.responses.retrieve(r.id)
    assert err.value.status_code == 404
    assert err.value.body["message"] == f"Response with id '{r.id}' not found."


async def test_other_keys_see_nothing(rest) -> None:
    mine = await rest.sdk().responses.create(model=CHAT, input="echo: mine")
    other = rest.sdk(rest.svc.admin)
    with pytest.raises(openai.NotFoundError):
        await other.responses.retrieve(mine.id)
    with pytest.raises(openai.NotFoundError) as err:
        await other.responses.create(model=CHAT, input="hi", previous_response_id=mine.id)
    assert err.value.body["param"] == "previous_response_id"
    assert err.value.body["code"] == "previous_response_not_found"
    assert len(await usage_records(rest.svc.services)) == 1  # the refused chain never generated


def _events(stream_events: list[Any]) -> list[str]:
    return [e.type for e in stream_events]


async def test_stream_text_events_and_usage(rest) -> None:
    client = rest.sdk()
    async with client.responses.stream(model=CHAT, input="echo: one two three four") as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = _events(events)
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2
    n = len(deltas)
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     "response.content_part.added", *["response.output_text.delta"] * n,
                     "response.output_text.done", "response.content_part.done", "response.output_item.done",
                     "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    assert "".join(deltas) == "one two three four" == final.output_text
    done = next(e for e in events if e.type == "response.output_item.done")
    assert done.item.status == "completed" and done.item.content[0].text == "one two three four"
    assert final.status == "completed" and final.usage is not None
    assert final.usage.output_tokens == n
    assert {e.response.id for e in events if hasattr(e, "response")} == {final.id}
    assert (await client.responses.retrieve(final.id)).output_text == "one two three four"
    records = await usage_records(rest.svc.services)
    assert len(records) == 1 and records[0].streamed and records[0].completion_tokens == n


async def test_stream_function_call_events(rest) -> None:
    client = rest.sdk()
    async with client.responses.stream(model=CHAT, input="weather in Oslo?", tools=[WEATHER_TOOL],
                                       tool_choice={"type": "function", "name": "get_weather"}) as stream:
        events = [event async for event in stream]
        final = await stream.get_final_response()
    kinds = _events(events)
    n = kinds.count("response.function_call_arguments.delta")
    assert n >= 2
    assert kinds == ["response.created", "response.in_progress", "response.output_item.added",
                     *["response.function_call_arguments.delta"] * n, "response.function_call_arguments.done",
                     "response.output_item.done", "response.completed"]
    done = next(e for e in events if e.type == "response.function_call_arguments.done")
    jsonschema.validate(json.loads(done.arguments), WEATHER)
    call = final.output[0]
    assert call.type == "function_call" and call.arguments == done.arguments and call.name == "get_weather"


async def test_codex_shaped_request_is_tolerated(rest) -> None:
    """What Codex CLI 0.171 sends: developer messages with ids, namespace and web_search tools,
    store false, include, reasoning, prompt_cache_key, client_metadata, parallel_tool_calls."""
    client = rest.sdk()
    r = await client.responses.create(
        model=CHAT, store=False, include=["reasoning.encrypted_content"], reasoning={"summary": "auto"},
        prompt_cache_key="thread-1", parallel_tool_calls=True, tool_choice="auto",
        tools=[{"type": "function", "name": "exec_command", "description": "Runs a command.", "strict": False,
                "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
               {"type": "namespace", "name": "multi_agent_v1", "description": "agents",
                "tools": [{"type": "function", "name": "close_agent", "parameters": {"type": "object"}}]},
               {"type": "web_search", "external_web_access": False}],
        input=[{"type": "message", "id": "msg_1", "role": "developer",
                "content": [{"type": "input_text", "text": "You are a coding agent."}]},
               {"type": "message", "id": "msg_2", "role": "user",
                "content": [{"type": "input_text", "text": "echo: hi codex"}]},
               {"type": "reasoning", "id": "rs_x", "summary": [], "encrypted_content": "gAAAA-opaque"},
               {"type": "web_search_call", "id": "ws_1", "status": "completed"},
               {"type": "message", "id": "msg_3", "role": "user",
                "content": [{"type": "input_text", "text": "echo: hi codex"}]}],
        extra_body={"client_metadata": {"thread_id": "t"}},
    )
    assert r.status == "completed" and r.output_text == "hi codex"


@pytest.mark.parametrize(("kwargs", "param"), [
    ({"input": [{"type": "message", "role": "wizard", "content": "x"}]}, "input[0].role"),
    ({"input": [{"type": "message", "role": "user"}]}, "input[0].content"),
    ({"input": [{"type": "function_call_output", "output": "x"}]}, "input[0].call_id"),
    ({"input": [{"type": "frobnicate"}]}, "input[0].type"),
    ({"input": "hi", "temperature": 5}, "temperature"),
    ({"input": "hi", "text": {"format": {"type": "xml"}}}, "text.format.type"),
    ({"input": "hi", "text": {"format": {"type": "json_schema", "name": "x"}}}, "text.format.schema"),
    ({"input": "hi", "tools": [{"type": "function"}]}, "tools[0].name"),
    ({"input": "hi", "extra_body": {"max_output_tokens": "ten"}}, "max_output_tokens"),
    ({}, "input"),
])
async def test_bad_input_is_400_naming_the_param(rest, kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await rest.sdk().responses.create(model=CHAT, **kwargs)
    assert err.value.status_code == 400
    assert err.value.body["param"] == param
    assert set(err.value.body) == {"message", "type", "code", "param"}
    assert len(await usage_records(rest.svc.services)) == 0


async def test_bad_key_is_401(rest) -> None:
    with pytest.raises(openai.AuthenticationError) as err:
        await rest.sdk("rk-not-a-real-key-0000000000000000000000").responses.create(model=CHAT, input="hi")
    assert err.value.status_code == 401
    with pytest.raises(openai.AuthenticationError):
        await rest.sdk("rk-not-a-real-key-0000000000000000000000").responses.retrieve("resp_abc")
