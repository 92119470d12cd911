"""The built-in `local` provider: deterministic text, cuts, tools, JSON, images and videos."""

from __future__ import annotations

import asyncio
import datetime
import io
import json
import re
import uuid
from collections.abc import AsyncIterator, Sequence
from decimal import Decimal
from typing import Any

import av
import jsonschema
import pytest
from PIL import Image

from raven_service.core.errors import InvalidArgument, UpstreamError
from raven_service.core.ports import ChatProvider, ImageProvider, VideoProvider
from raven_service.core.tokens import count_message_tokens, count_tokens, tokenize
from raven_service.core.types import (
    OPTIONAL_PARAMS,
    ChatEvent,
    ChatRequest,
    Finish,
    ImageRequest,
    Message,
    ProviderChatRequest,
    ResponseFormat,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    UsageReport,
    VideoRequest,
    VideoState,
)
from raven_service.providers.local import LocalProvider, local_models

pytestmark = pytest.mark.timeout(30)

CALL_ID = re.compile(r"^call_[A-Za-z0-9]{24}$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
async def provider() -> AsyncIterator[LocalProvider]:
    p = LocalProvider(tokens_per_second=0, first_token_latency=0, video_min_seconds=0.3)
    yield p
    await p.aclose()


def chat(
    text: str | None = None, *, messages: Sequence[Message] = (), **params: Any
) -> ProviderChatRequest:
    msgs = tuple(messages) or (Message(role="user", content=text),)
    return ProviderChatRequest(
        upstream_model="local-chat", request=ChatRequest(model="raven/local-chat", messages=msgs, **params)
    )


async def collect(provider: LocalProvider, req: ProviderChatRequest) -> list[ChatEvent]:
    return [event async for event in provider.stream(req)]


def text_of(events: Sequence[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def tail(events: Sequence[ChatEvent]) -> tuple[Finish, UsageReport]:
    *_, finish, usage = events
    assert isinstance(finish, Finish)
    assert isinstance(usage, UsageReport)
    assert not any(isinstance(e, Finish | UsageReport) for e in events[:-2])
    return finish, usage


def assemble_tool_calls(events: Sequence[ChatEvent]) -> dict[int, dict[str, str]]:
    calls: dict[int, dict[str, str]] = {}
    for event in events:
        if isinstance(event, ToolCallDelta):
            call = calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            if event.id:
                assert not call["id"], "the id comes once, on the first fragment"
                call["id"] = event.id
            if event.name:
                call["name"] = event.name
            call["arguments"] += event.arguments
    return calls


# ------------------------------------------------------------------------------------ protocols / catalogue
def test_implements_the_provider_ports() -> None:
    p = LocalProvider()
    assert isinstance(p, ChatProvider)
    assert isinstance(p, ImageProvider)
    assert isinstance(p, VideoProvider)
    assert p.name == "local"
    assert LocalProvider("sim").name == "sim"


def test_catalogue() -> None:
    models = {m.id: m for m in local_models()}
    assert set(models) == {"raven/local-chat", "raven/local-image", "raven/local-video", "raven/local-embed"}
    embed_model = models["raven/local-embed"]
    assert embed_model.capabilities == ("embeddings",)
    assert (embed_model.embedding_dimensions, embed_model.price_input_per_mtok) == (384, Decimal("0.02"))
    chat_model = models["raven/local-chat"]
    assert set(chat_model.capabilities) == {"chat", "tools", "json"}
    assert chat_model.context_length == 32768
    assert chat_model.price_input_per_mtok == Decimal("0.10")
    assert chat_model.price_output_per_mtok == Decimal("0.40")
    assert set(chat_model.supported_parameters) == set(OPTIONAL_PARAMS)
    image_model = models["raven/local-image"]
    assert image_model.capabilities == ("images",)
    assert image_model.price_per_image == Decimal("0.002")
    assert set(image_model.supported_parameters) == {"n", "size", "response_format", "seed", "quality", "style"}
    assert models["raven/local-video"].capabilities == ("video",)
    assert models["raven/local-video"].price_per_video_second == Decimal("0.01")
    for model in models.values():
        assert len(model.routes) == 1
        assert model.routes[0].provider == "local"
        assert model.description
        assert model.created > 0
    assert local_models() == local_models()


# ------------------------------------------------------------------------------------ text
async def test_seeded_output_is_reproducible(provider: LocalProvider) -> None:
    req = chat("Tell me about the history of tea in Japan.", seed=42)
    first = await collect(provider, req)
    second = await collect(provider, req)
    assert first == second
    result = await provider.complete(req)
    assert result.content == text_of(first)
    assert result.finish_reason == "stop"

    others = {text_of(await collect(provider, chat("Tell me a long story about tea.", seed=s))) for s in range(4)}
    assert len(others) == 4, "different seeds give different replies"


async def test_temperature_zero_without_seed_is_deterministic(provider: LocalProvider) -> None:
    req = chat("Explain photosynthesis", temperature=0.0)
    assert text_of(await collect(provider, req)) == text_of(await collect(provider, req))


async def test_short_reply_is_plausible_and_mentions_the_prompt(provider: LocalProvider) -> None:
    events = await collect(provider, chat("How do volcanoes form?", seed=7))
    text = text_of(events)
    finish, usage = tail(events)
    assert finish.reason == "stop"
    assert finish.native == "stop"
    assert 15 <= usage.completion_tokens <= 80
    assert "volcanoes" in text.lower()
    assert text[0].isupper()
    assert text.rstrip()[-1] in ".!?"


async def test_long_story_runs_hundreds_of_tokens_then_stops(provider: LocalProvider) -> None:
    req = chat("Tell me a long story about a lighthouse keeper and a whale.", seed=3)
    events = await collect(provider, req)
    text = text_of(events)
    finish, usage = tail(events)
    assert finish.reason == "stop"
    assert usage.completion_tokens > 300
    assert usage.completion_tokens == count_tokens(text)
    assert text.count("\n\n") >= 2, "a story comes in paragraphs"
    assert "lighthouse" in text or "whale" in text


async def test_essay_request_is_long(provider: LocalProvider) -> None:
    result = await provider.complete(chat("Write a detailed essay on renewable energy.", seed=5))
    assert result.finish_reason == "stop"
    assert result.completion_tokens > 300


async def test_usage_matches_the_tokenizer(provider: LocalProvider) -> None:
    req = chat(messages=[Message(role="system", content="You are terse."), Message(role="user", content="Hi!")])
    events = await collect(provider, req)
    deltas = [e for e in events if isinstance(e, TextDelta)]
    _, usage = tail(events)
    text = text_of(events)
    assert [d.text for d in deltas] == tokenize(text), "one event per token"
    assert usage.completion_tokens == len(deltas) == count_tokens(text)
    assert usage.prompt_tokens == count_message_tokens(req.request.messages)
    assert usage.estimated is False


async def test_echo_directive(provider: LocalProvider) -> None:
    result = await provider.complete(chat("echo: exactly  this\ntext, please"))
    assert result.content == "exactly  this\ntext, please"
    assert (await provider.complete(chat("echo:no space"))).content == "no space"


async def test_max_tokens_cuts_a_prefix(provider: LocalProvider) -> None:
    prompt = "Write a long story about a clockmaker."
    full = text_of(await collect(provider, chat(prompt, seed=11)))
    total = count_tokens(full)
    for limit in (1, 2, 7, 50, total - 1):
        events = await collect(provider, chat(prompt, seed=11, max_tokens=limit))
        text = text_of(events)
        finish, usage = tail(events)
        assert full.startswith(text)
        assert text == "".join(tokenize(full)[:limit])
        assert finish.reason == "length"
        assert usage.completion_tokens == limit
        assert (await provider.complete(chat(prompt, seed=11, max_tokens=limit))).content == text
    events = await collect(provider, chat(prompt, seed=11, max_tokens=total))
    assert text_of(events) == full
    assert tail(events)[0].reason == "stop"


async def test_stop_sequence_cuts_before_its_first_occurrence(provider: LocalProvider) -> None:
    prompt = "Tell me a story about a fox."
    full = text_of(await collect(provider, chat(prompt, seed=9)))
    pieces = tokenize(full)
    # a stop sequence straddling two tokens, taken from the middle of the reply
    boundary = sum(len(p) for p in pieces[:40])
    stop = full[boundary - 2 : boundary + 3]
    expected = full[: full.find(stop)]
    events = await collect(provider, chat(prompt, seed=9, stop=(stop, "never-appears")))
    text = text_of(events)
    finish, usage = tail(events)
    assert text == expected
    assert full.startswith(text)
    assert finish.reason == "stop"
    assert stop not in text
    assert usage.completion_tokens == sum(1 for e in events if isinstance(e, TextDelta))


async def test_stop_never_leaks_in_the_stream(provider: LocalProvider) -> None:
    req = chat("echo: The quick brown fox jumps over the lazy dog", stop=("k br", "zzz"))
    events = await collect(provider, req)
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert "".join(deltas) == "The quic"
    assert deltas == ["The", " quic"]
    seen = ""
    for delta in deltas:
        seen += delta
        assert "k br" not in seen
    assert tail(events)[0].reason == "stop"


async def test_stop_and_max_tokens_together(provider: LocalProvider) -> None:
    req = chat("echo: one two three four five six", stop=("four",), max_tokens=2)
    result = await provider.complete(req)
    assert (result.content, result.finish_reason) == ("one two", "length")
    req = chat("echo: one two three four five six", stop=(" three",), max_tokens=5)
    result = await provider.complete(req)
    assert (result.content, result.finish_reason) == ("one two", "stop")


async def test_stop_at_the_start_gives_an_empty_reply(provider: LocalProvider) -> None:
    result = await provider.complete(chat("echo: hello", stop=("he",)))
    assert result.content == ""
    assert result.finish_reason == "stop"
    assert result.completion_tokens == 0


async def test_paced_streaming_still_completes() -> None:
    p = LocalProvider(tokens_per_second=2000, first_token_latency=0.001)
    result = await p.complete(chat("echo: a few words to pace"))
    assert result.content == "a few words to pace"


# ------------------------------------------------------------------------------------ tools
WEATHER = Tool(
    name="get_weather",
    description="Get the current weather in a given city",
    parameters={
        "type": "object",
        "properties": {
            "city": {"type": "string", "description": "City name"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city"],
        "additionalProperties": False,
    },
)
STOCKS = Tool(
    name="get_stock_price",
    description="Look up the latest stock quote for a ticker symbol",
    parameters={
        "type": "object",
        "properties": {"ticker": {"type": "string", "pattern": "^[A-Z]{1,5}$"}},
        "required": ["ticker"],
    },
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "nested": {
        "type": "object",
        "properties": {
            "user": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "minLength": 2, "maxLength": 40},
                    "age": {"type": "integer", "minimum": 18, "maximum": 99},
                    "address": {
                        "type": "object",
                        "properties": {"street": {"type": "string"}, "zip": {"type": "string", "pattern": r"^\d{5}$"}},
                        "required": ["street", "zip"],
                        "additionalProperties": False,
                    },
                },
                "required": ["name", "age", "address"],
            },
            "note": {"type": ["string", "null"]},
        },
        "required": ["user"],
        "additionalProperties": False,
    },
    "arrays_and_enums": {
        "type": "object",
        "properties": {
            "tags": {
                "type": "array",
                "items": {"type": "string", "enum": ["red", "green", "blue"]},
                "minItems": 2,
                "maxItems": 3,
                "uniqueItems": True,
            },
            "matrix": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "number"}, "minItems": 2},
                "minItems": 1,
            },
            "priority": {"enum": [1, 2, 3]},
            "kind": {"const": "task"},
            "done": {"type": "boolean"},
            "nothing": {"type": "null"},
        },
        "required": ["tags", "matrix", "priority", "kind", "done"],
    },
    "refs": {
        "$defs": {
            "point": {
                "type": "object",
                "properties": {"x": {"type": "number"}, "y": {"type": "number"}},
                "required": ["x", "y"],
            },
            "node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/node"}},
                },
                "required": ["value"],
            },
        },
        "definitions": {"color": {"type": "string", "enum": ["cyan", "magenta"]}},
        "type": "object",
        "properties": {
            "origin": {"$ref": "#/$defs/point"},
            "path": {"type": "array", "items": {"$ref": "#/$defs/point"}, "minItems": 3},
            "tree": {"$ref": "#/$defs/node"},
            "color": {"$ref": "#/definitions/color"},
        },
        "required": ["origin", "path", "tree", "color"],
    },
    "numeric_bounds": {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "exclusiveMinimum": 5, "exclusiveMaximum": 7},
            "b": {"type": "number", "minimum": -1.5, "maximum": -1.25},
            "c": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 0.01},
            "d": {"type": "integer", "multipleOf": 7, "minimum": 50, "maximum": 60},
            "e": {"type": "number", "multipleOf": 0.25, "minimum": 1, "maximum": 2},
            "f": {"type": "integer", "minimum": 1000000},
        },
        "required": ["a", "b", "c", "d", "e", "f"],
    },
    "formats": {
        "type": "object",
        "properties": {
            "day": {"type": "string", "format": "date"},
            "at": {"type": "string", "format": "date-time"},
            "email": {"type": "string", "format": "email"},
            "site": {"type": "string", "format": "uri"},
            "id": {"type": "string", "format": "uuid"},
            "code": {"type": "string", "pattern": r"^[A-Z]{3}-\d{2,4}(-[a-z]+)?$"},
            "short": {"type": "string", "maxLength": 3},
            "long": {"type": "string", "minLength": 50},
        },
        "required": ["day", "at", "email", "site", "id", "code", "short", "long"],
    },
    "combinators": {
        "type": "object",
        "properties": {
            "either": {"anyOf": [{"type": "integer", "minimum": 10}, {"type": "string"}]},
            "one": {"oneOf": [{"type": "string", "format": "date"}, {"type": "boolean"}]},
            "both": {
                "allOf": [
                    {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]},
                    {"properties": {"b": {"type": "string"}}, "required": ["b"]},
                ]
            },
            "map": {"type": "object", "additionalProperties": {"type": "integer", "maximum": 0}},
            "pair": {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}], "items": False},
        },
        "required": ["either", "one", "both", "map", "pair"],
        "additionalProperties": False,
    },
}


def validate(instance: Any, schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    validator.validate(instance)


@pytest.mark.parametrize("name", sorted(SCHEMAS))
@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_tool_arguments_validate_against_the_schema(provider: LocalProvider, name: str, seed: int) -> None:
    schema = SCHEMAS[name]
    tool = Tool(name="do_it", description="Does the thing", parameters=schema)
    req = chat("Please go ahead.", seed=seed, tools=(tool,), tool_choice=ToolChoice(mode="required"))
    events = await collect(provider, req)
    finish, usage = tail(events)
    assert finish.reason == "tool_calls"
    assert finish.native == "tool_calls"
    assert not any(isinstance(e, TextDelta) for e in events)

    fragments = [e for e in events if isinstance(e, ToolCallDelta)]
    first = fragments[0]
    assert (first.index, first.name, first.arguments) == (0, "do_it", "")
    assert first.id is not None and CALL_ID.match(first.id)
    assert len(fragments) >= 3, "arguments arrive in several pieces"
    assert all(f.id is None and f.name is None for f in fragments[1:])

    calls = assemble_tool_calls(events)
    assert list(calls) == [0]
    arguments = json.loads(calls[0]["arguments"])
    validate(arguments, schema)
    assert usage.completion_tokens > 0
    assert usage.prompt_tokens == count_message_tokens(req.request.messages, req.request.tools)

    again = assemble_tool_calls(await collect(provider, req))
    assert again == calls, "seeded tool calls are reproducible"


async def test_formats_are_really_well_formed(provider: LocalProvider) -> None:
    tool = Tool(name="f", parameters=SCHEMAS["formats"])
    for seed in range(5):
        result = await provider.complete(chat("x", seed=seed, tools=(tool,), tool_choice=ToolChoice(mode="required")))
        args = json.loads(result.tool_calls[0].arguments)
        datetime.date.fromisoformat(args["day"])
        datetime.datetime.fromisoformat(args["at"].replace("Z", "+00:00"))
        uuid.UUID(args["id"])
        assert re.fullmatch(r"[^@\s]+@[^@\s]+\.[a-z]+", args["email"])
        assert args["site"].startswith(("http://", "https://"))


async def test_auto_calls_a_tool_the_user_mentions(provider: LocalProvider) -> None:
    req = chat("What's the weather like in Lisbon today?", seed=1, tools=(STOCKS, WEATHER))
    result = await provider.complete(req)
    assert result.finish_reason == "tool_calls"
    assert result.content is None
    assert [c.name for c in result.tool_calls] == ["get_weather"]
    args = json.loads(result.tool_calls[0].arguments)
    validate(args, WEATHER.parameters or {})
    assert args["city"] == "Lisbon", "the city comes from the prompt"
    assert CALL_ID.match(result.tool_calls[0].id)


async def test_auto_can_call_several_tools_in_parallel(provider: LocalProvider) -> None:
    req = chat("Check the weather in Oslo and the stock price of ACME.", seed=2, tools=(WEATHER, STOCKS))
    events = await collect(provider, req)
    calls = assemble_tool_calls(events)
    assert [calls[i]["name"] for i in sorted(calls)] == ["get_weather", "get_stock_price"]
    assert len({c["id"] for c in calls.values()}) == 2
    for call, tool in zip((calls[0], calls[1]), (WEATHER, STOCKS), strict=True):
        validate(json.loads(call["arguments"]), tool.parameters or {})


async def test_auto_answers_in_text_when_no_tool_is_mentioned(provider: LocalProvider) -> None:
    result = await provider.complete(chat("Tell me a joke about cats.", seed=1, tools=(WEATHER, STOCKS)))
    assert result.finish_reason == "stop"
    assert result.tool_calls == ()
    assert result.content


async def test_tool_choice_none_never_calls(provider: LocalProvider) -> None:
    req = chat("What's the weather in Paris?", seed=1, tools=(WEATHER,), tool_choice=ToolChoice(mode="none"))
    result = await provider.complete(req)
    assert result.tool_calls == ()
    assert result.finish_reason == "stop"


async def test_named_tool_choice_calls_that_tool(provider: LocalProvider) -> None:
    req = chat(
        "What's the weather in Paris?",
        seed=1,
        tools=(WEATHER, STOCKS),
        tool_choice=ToolChoice(mode="function", name="get_stock_price"),
    )
    result = await provider.complete(req)
    assert [c.name for c in result.tool_calls] == ["get_stock_price"]
    validate(json.loads(result.tool_calls[0].arguments), STOCKS.parameters or {})


async def test_named_tool_choice_for_an_unknown_tool_is_invalid(provider: LocalProvider) -> None:
    req = chat("hi", tools=(WEATHER,), tool_choice=ToolChoice(mode="function", name="nope"))
    with pytest.raises(InvalidArgument):
        await provider.complete(req)


async def test_required_picks_the_best_match_or_the_first(provider: LocalProvider) -> None:
    required = ToolChoice(mode="required")
    result = await provider.complete(chat("Hello!", seed=1, tools=(STOCKS, WEATHER), tool_choice=required))
    assert [c.name for c in result.tool_calls] == ["get_stock_price"]
    req = chat("Is it rainy? weather?", seed=1, tools=(STOCKS, WEATHER), tool_choice=required)
    result = await provider.complete(req)
    assert [c.name for c in result.tool_calls] == ["get_weather"]


async def test_tool_without_parameters_gets_empty_arguments(provider: LocalProvider) -> None:
    tool = Tool(name="ping")
    result = await provider.complete(chat("ping", tools=(tool,), tool_choice=ToolChoice(mode="required")))
    assert json.loads(result.tool_calls[0].arguments) == {}


async def test_after_a_tool_result_it_answers_with_the_result(provider: LocalProvider) -> None:
    messages = [
        Message(role="user", content="What's the weather in Paris?"),
        Message(
            role="assistant",
            content=None,
            tool_calls=(ToolCall(id="call_abc", name="get_weather", arguments='{"city": "Paris"}'),),
        ),
        Message(role="tool", tool_call_id="call_abc", content='{"temperature": 21, "conditions": "sunny"}'),
    ]
    result = await provider.complete(chat(messages=messages, seed=1, tools=(WEATHER,)))
    assert result.finish_reason == "stop"
    assert result.tool_calls == ()
    assert result.content is not None
    assert "21" in result.content and "sunny" in result.content
    assert "get_weather" in result.content


async def test_max_tokens_cuts_tool_arguments(provider: LocalProvider) -> None:
    required = ToolChoice(mode="required")
    full = await provider.complete(chat("go", seed=4, tools=(WEATHER,), tool_choice=required))
    cut = await provider.complete(chat("go", seed=4, tools=(WEATHER,), tool_choice=required, max_tokens=5))
    assert cut.finish_reason == "length"
    assert cut.completion_tokens == 5
    assert full.tool_calls[0].arguments.startswith(cut.tool_calls[0].arguments)
    assert cut.tool_calls[0].arguments != full.tool_calls[0].arguments


# ------------------------------------------------------------------------------------ response_format
async def test_json_schema_response_validates(provider: LocalProvider) -> None:
    schema = SCHEMAS["nested"]
    fmt = ResponseFormat(type="json_schema", name="person", schema=schema, strict=True)
    events = await collect(provider, chat("Describe a person.", seed=5, response_format=fmt))
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 3, "streamed in pieces"
    validate(json.loads(text_of(events)), schema)
    assert tail(events)[0].reason == "stop"


@pytest.mark.parametrize("name", sorted(SCHEMAS))
async def test_json_schema_response_validates_for_every_schema(provider: LocalProvider, name: str) -> None:
    fmt = ResponseFormat(type="json_schema", name=name, schema=SCHEMAS[name])
    result = await provider.complete(chat("Fill it in.", seed=8, response_format=fmt))
    validate(json.loads(result.content or ""), SCHEMAS[name])


async def test_json_object_response(provider: LocalProvider) -> None:
    fmt = ResponseFormat(type="json_object")
    result = await provider.complete(chat("Summarise the benefits of exercise as JSON.", seed=1, response_format=fmt))
    document = json.loads(result.content or "")
    assert isinstance(document, dict) and document
    cut = await provider.complete(chat("Summarise the benefits of exercise as JSON.", seed=1, response_format=fmt,
                                       max_tokens=4))
    assert cut.finish_reason == "length"
    assert (result.content or "").startswith(cut.content or "")


# ------------------------------------------------------------------------------------ images
@pytest.mark.parametrize(("width", "height", "n"), [(256, 256, 1), (512, 512, 2), (1024, 1024, 1), (320, 200, 1)])
async def test_images_are_real_pngs_of_the_requested_size(
    provider: LocalProvider, width: int, height: int, n: int
) -> None:
    req = ImageRequest(model="raven/local-image", prompt="A red fox in a snowy forest", n=n, width=width,
                       height=height, seed=1)
    images = await provider.generate_images("local-image", req)
    assert len(images) == n
    for image in images:
        assert image.png.startswith(PNG_SIGNATURE)
        with Image.open(io.BytesIO(image.png)) as decoded:
            assert decoded.format == "PNG"
            assert decoded.size == (width, height)
    if n == 2:
        assert images[0].png != images[1].png


async def test_images_are_deterministic_for_prompt_and_seed(provider: LocalProvider) -> None:
    req = ImageRequest(model="m", prompt="A lighthouse at dawn", width=256, height=256, seed=9)
    first = await provider.generate_images("local-image", req)
    second = await provider.generate_images("local-image", req)
    assert first[0].png == second[0].png
    other = await provider.generate_images("local-image", ImageRequest(model="m", prompt="A lighthouse at dawn",
                                                                       width=256, height=256, seed=10))
    assert other[0].png != first[0].png


# ------------------------------------------------------------------------------------ video
async def wait_for_video(provider: LocalProvider, req: VideoRequest, upstream_id: str) -> list[VideoState]:
    states = []
    for _ in range(600):
        status = await provider.poll_video("local-video", req, upstream_id)
        assert 0 <= status.progress <= 100
        states.append(status.state)
        if status.state in (VideoState.SUCCEEDED, VideoState.FAILED):
            return states
        await asyncio.sleep(0.05)
    raise AssertionError("the video did not finish")


def probe(data: bytes) -> tuple[int, int, float, int]:
    """(width, height, duration in seconds, decoded frames) of an MP4."""
    with av.open(io.BytesIO(data)) as container:
        duration = float(container.duration or 0) / av.time_base
        frames = list(container.decode(video=0))
        assert frames
        return frames[0].width, frames[0].height, duration, len(frames)


async def test_video_submit_poll_fetch(provider: LocalProvider) -> None:
    req = VideoRequest(model="raven/local-video", prompt="A paper boat on a river", seconds=2, width=320,
                       height=180, seed=1)
    upstream_id = await provider.submit_video("local-video", req, "task123")
    assert upstream_id == "localvid-task123"
    assert await provider.submit_video("local-video", req, "task123") == upstream_id  # idempotent
    states = await wait_for_video(provider, req, upstream_id)
    assert states[-1] == VideoState.SUCCEEDED
    assert VideoState.RUNNING in states or VideoState.QUEUED in states
    assert (await provider.poll_video("local-video", req, upstream_id)).progress == 100

    result = await provider.fetch_video(upstream_id)
    assert result.mime_type == "video/mp4"
    assert result.data[4:8] == b"ftyp"
    width, height, duration, frames = probe(result.data)
    assert (width, height) == (320, 180)
    assert duration == pytest.approx(2, abs=0.5)
    assert frames >= 12

    assert (await provider.fetch_video(upstream_id)).data == result.data, "fetch can be retried"
    provider.forget(upstream_id)
    with pytest.raises(UpstreamError):
        await provider.fetch_video(upstream_id)


async def test_default_video_size_and_length(provider: LocalProvider) -> None:
    req = VideoRequest(model="raven/local-video", prompt="Clouds drifting over hills", seconds=4, width=640,
                       height=360)
    upstream_id = await provider.submit_video("local-video", req, "t-default")
    assert (await wait_for_video(provider, req, upstream_id))[-1] == VideoState.SUCCEEDED
    width, height, duration, _ = probe((await provider.fetch_video(upstream_id)).data)
    assert (width, height) == (640, 360)
    assert duration == pytest.approx(4, abs=0.5)


async def test_odd_sizes_are_rounded_to_even(provider: LocalProvider) -> None:
    req = VideoRequest(model="m", prompt="odd", seconds=1, width=161, height=91, seed=2)
    upstream_id = await provider.submit_video("local-video", req, "odd")
    assert (await wait_for_video(provider, req, upstream_id))[-1] == VideoState.SUCCEEDED
    width, height, _, _ = probe((await provider.fetch_video(upstream_id)).data)
    assert (width, height) == (160, 90)


async def test_image_to_video_starts_from_the_image(provider: LocalProvider) -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (100, 60), (220, 20, 20)).save(buffer, format="PNG")
    req = VideoRequest(model="m", prompt="Red", seconds=1, width=320, height=180, image=buffer.getvalue(), seed=3)
    upstream_id = await provider.submit_video("local-video", req, "i2v")
    assert (await wait_for_video(provider, req, upstream_id))[-1] == VideoState.SUCCEEDED
    with av.open(io.BytesIO((await provider.fetch_video(upstream_id)).data)) as container:
        first = next(container.decode(video=0)).to_image()
    r, g, b = first.getpixel((2, 90))
    assert r > 150 and g < 90 and b < 90, "the left edge shows the red input image"


async def test_a_bad_image_fails_the_job(provider: LocalProvider) -> None:
    req = VideoRequest(model="m", prompt="x", seconds=1, width=64, height=64, image=b"not an image")
    upstream_id = await provider.submit_video("local-video", req, "bad")
    assert (await wait_for_video(provider, req, upstream_id))[-1] == VideoState.FAILED
    status = await provider.poll_video("local-video", req, upstream_id)
    assert status.error
    with pytest.raises(UpstreamError) as caught:
        await provider.fetch_video(upstream_id)
    assert not caught.value.retryable


async def test_unknown_job_after_a_restart_is_resubmitted() -> None:
    req = VideoRequest(model="m", prompt="Restarted", seconds=1, width=128, height=72)
    before = LocalProvider(video_min_seconds=0.1)
    upstream_id = await before.submit_video("local-video", req, "restart")
    await before.aclose()  # the process "dies" with the job unfinished

    after = LocalProvider(video_min_seconds=0.1)
    try:
        status = await after.poll_video("local-video", req, upstream_id)
        assert status.state == VideoState.RUNNING
        assert (await wait_for_video(after, req, upstream_id))[-1] == VideoState.SUCCEEDED
        data = (await after.fetch_video(upstream_id)).data
        assert data[4:8] == b"ftyp"
        assert probe(data)[:2] == (128, 72)
    finally:
        await after.aclose()


async def test_fetching_an_unknown_or_unfinished_job_fails(provider: LocalProvider) -> None:
    with pytest.raises(UpstreamError) as caught:
        await provider.fetch_video("localvid-missing")
    assert not caught.value.retryable
    req = VideoRequest(model="m", prompt="slow", seconds=1, width=64, height=64)
    upstream_id = await provider.submit_video("local-video", req, "pending")
    with pytest.raises(UpstreamError) as caught:
        await provider.fetch_video(upstream_id)
    assert caught.value.retryable
