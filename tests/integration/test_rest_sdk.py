"""REST surface through the official openai SDK against the real service."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import jsonschema
import openai
import pytest
from PIL import Image

CHAT = "raven/local-chat"

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 10},
        "hours": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": 23}, "minItems": 1},
    },
    "required": ["city", "unit", "days"],
    "additionalProperties": False,
}


async def test_chat_unary_and_generation_lookup(rest):
    client = rest.sdk()
    raw = await client.chat.completions.with_raw_response.create(
        model=CHAT, messages=[{"role": "user", "content": "echo: hello world"}])
    out = raw.parse()
    assert out.object == "chat.completion"
    assert out.choices[0].message.content == "hello world"
    assert out.choices[0].finish_reason == "stop"
    assert out.usage.total_tokens == out.usage.prompt_tokens + out.usage.completion_tokens
    assert raw.headers["x-ratelimit-limit-requests"] == "10000"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) == 9999
    assert raw.headers["x-ratelimit-reset-requests"]
    r = await rest.http.get("/v1/generation", params={"id": out.id}, headers=rest.auth())
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["id"] == out.id and data["model"] == CHAT and data["provider"] == "local"
    assert data["prompt_tokens"] == out.usage.prompt_tokens and data["status"] == "completed"
    assert data["total_cost"] > 0 and data["native_finish_reason"] == "stop"
    assert data["latency_ms"] >= 0 and "ttft_ms" in data


async def test_stream_role_first_usage_last(rest):
    client = rest.sdk()
    stream = await client.chat.completions.create(
        model=CHAT, stream=True, messages=[{"role": "user", "content": "Tell me a story about a lighthouse."}],
        seed=3)
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    unary = await client.chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Tell me a story about a lighthouse."}], seed=3)
    assert text == unary.choices[0].message.content  # same seed, same text, streamed or not
    assert chunks[-1].usage.completion_tokens == unary.usage.completion_tokens
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]


async def test_max_tokens_and_stop_cut_prefix(rest):
    client = rest.sdk()
    msgs = [{"role": "user", "content": "Write a long essay about rivers."}]
    full = (await client.chat.completions.create(model=CHAT, messages=msgs, seed=11)).choices[0]
    cut = (await client.chat.completions.create(model=CHAT, messages=msgs, seed=11, max_tokens=20)).choices[0]
    assert cut.finish_reason == "length" and full.message.content.startswith(cut.message.content)
    word = full.message.content.split()[30]
    stopped = (await client.chat.completions.create(model=CHAT, messages=msgs, seed=11, stop=[word])).choices[0]
    assert stopped.finish_reason == "stop" and word not in stopped.message.content
    assert full.message.content.startswith(stopped.message.content)


async def test_streamed_tool_calls_validate_against_schema(rest):
    client = rest.sdk()
    stream = await client.chat.completions.create(
        model=CHAT, stream=True, messages=[{"role": "user", "content": "What's the weather in Oslo?"}],
        tools=[{"type": "function",
                "function": {"name": "get_weather", "description": "weather", "parameters": WEATHER}}],
        tool_choice="required")
    calls: dict[int, dict[str, str]] = {}
    finish = None
    async for chunk in stream:
        for choice in chunk.choices:
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
                entry["id"] += tc.id or ""
                entry["name"] += (tc.function.name or "") if tc.function else ""
                entry["arguments"] += (tc.function.arguments or "") if tc.function else ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls"
    assert calls[0]["id"].startswith("call_") and calls[0]["name"] == "get_weather"
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER)
    # the conversation continues with the tool result
    follow = await client.chat.completions.create(model=CHAT, messages=[
        {"role": "user", "content": "What's the weather in Oslo?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": calls[0]["id"], "type": "function",
         "function": {"name": "get_weather", "arguments": calls[0]["arguments"]}}]},
        {"role": "tool", "tool_call_id": calls[0]["id"], "content": "{\"temp\": 21}"}],
        tools=[{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}])
    assert follow.choices[0].finish_reason == "stop" and follow.choices[0].message.content


async def test_json_schema_response_validates(rest):
    schema = {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0},
              "tags": {"type": "array", "items": {"type": "string"}}}, "required": ["name", "age", "tags"],
              "additionalProperties": False}
    out = await rest.sdk().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "Describe a person."}],
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(out.choices[0].message.content), schema)
    out = await rest.sdk().chat.completions.create(
        model=CHAT, messages=[{"role": "user", "content": "json please"}], response_format={"type": "json_object"})
    assert isinstance(json.loads(out.choices[0].message.content), dict)


async def test_models_list_and_retrieve_with_slash(rest):
    client = rest.sdk()
    models = [m async for m in client.models.list()]
    ids = {m.id for m in models}
    assert {"raven/local-chat", "raven/local-image", "raven/local-video"} <= ids
    chat = next(m for m in models if m.id == CHAT)
    extra = chat.model_extra or {}
    assert set(extra["capabilities"]) >= {"chat", "tools", "json"}
    assert extra["context_length"] > 0 and float(extra["pricing"]["prompt"]) > 0
    assert "supported_parameters" in extra
    got = await client.models.retrieve(CHAT)
    assert got.id == CHAT
    r = await rest.http.get("/v1/models/raven%2Flocal-chat", headers=rest.auth())
    assert r.status_code == 200 and r.json()["id"] == CHAT
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("raven/nope")


async def test_images_b64_and_url(rest):
    client = rest.sdk()
    out = await client.images.generate(model="raven/local-image", prompt="a lighthouse", n=2, size="512x512")
    assert len(out.data) == 2
    img = Image.open(io.BytesIO(base64.b64decode(out.data[0].b64_json)))
    assert img.format == "PNG" and img.size == (512, 512)
    out = await client.images.generate(model="raven/local-image", prompt="a cat", size="256x256",
                                       response_format="url")
    url = out.data[0].url
    assert url.startswith("http://raven.test/v1/")
    r = await rest.http.get(url, headers=rest.auth())
    assert r.status_code == 200 and r.headers["content-type"].startswith("image/png")
    assert Image.open(io.BytesIO(r.content)).size == (256, 256)
    r = await rest.http.get(url, headers=rest.auth(rest.svc.admin))
    assert r.status_code == 404


async def test_video_lifecycle_rest(rest):
    r = await rest.http.post("/v1/video/generations", headers=rest.auth(),
                             json={"model": "raven/local-video", "prompt": "a wave", "seconds": 1, "size": "160x96"})
    assert r.status_code == 200, r.text
    task = r.json()
    assert task["status"] == "queued" and task["id"]
    for _ in range(300):
        r = await rest.http.get(f"/v1/video/generations/{task['id']}", headers=rest.auth())
        assert r.status_code == 200
        if r.json()["status"] in ("completed", "failed"):
            break
        await asyncio.sleep(0.1)
    done = r.json()
    assert done["status"] == "completed", done
    url = done["outputs"][0]["url"]
    assert url.startswith("http://raven.test/v1/")
    video = await rest.http.get(url, headers=rest.auth())
    assert video.status_code == 200 and video.content[4:8] == b"ftyp"
    other = await rest.http.get(f"/v1/video/generations/{task['id']}", headers=rest.auth(rest.svc.admin))
    assert other.status_code == 404
    assert set(other.json()["error"]) == {"message", "type", "code", "param"}


async def test_rate_limit_429_with_retry_after(rest):
    from raven_service.policy.auth import create_key

    _, secret = await create_key(rest.svc.services.store, name="tight", rpm=1, concurrency=5)
    client = rest.sdk(secret)
    await client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "echo: a"}])
    with pytest.raises(openai.RateLimitError) as ei:
        await client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "echo: b"}])
    assert int(ei.value.response.headers["retry-after"]) >= 1
    assert ei.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert ei.value.code == "rate_limit_exceeded"


async def test_credits_exhausted_402(rest):
    from decimal import Decimal

    from raven_service.policy.auth import create_key

    _, secret = await create_key(rest.svc.services.store, name="broke", rpm=100, concurrency=5,
                                 credits=Decimal("0.00001"))
    with pytest.raises(openai.APIStatusError) as ei:
        await rest.sdk(secret).chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "hi"}],
                                                       max_tokens=1000)
    assert ei.value.status_code == 402
    assert ei.value.code == "insufficient_credits"


async def test_errors_surface_as_the_sdks_exception_classes(rest):
    """Each documented status reaches SDK users as the matching openai exception, with code/param."""
    client = rest.sdk()
    with pytest.raises(openai.BadRequestError) as ei:
        await client.chat.completions.create(model=CHAT, messages=[{"role": "user", "content": "x"}], temperature=3)
    assert ei.value.param == "temperature"
    with pytest.raises(openai.BadRequestError) as ei:
        await client.chat.completions.create(model="no/such", messages=[{"role": "user", "content": "x"}])
    assert ei.value.code == "model_not_found" and ei.value.param == "model"
    with pytest.raises(openai.AuthenticationError):
        await rest.sdk("rk-not-a-real-key").models.list()
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("no/such")
    with pytest.raises(openai.BadRequestError) as ei:
        await client.images.generate(model="raven/local-image", prompt="x", size="123x45")
    assert ei.value.param == "size"
    with pytest.raises(openai.BadRequestError) as ei:
        await client.images.generate(model=CHAT, prompt="x")
    assert ei.value.code == "model_not_supported"


async def test_every_authenticated_route_carries_rate_limit_headers(rest):
    """SPEC §3: x-ratelimit-* on every authenticated /v1 response, successes and errors alike."""
    auth = rest.auth()
    chat = await rest.http.post("/v1/chat/completions", headers=auth,
                                json={"model": CHAT, "messages": [{"role": "user", "content": "echo: a"}]})
    image = await rest.http.post("/v1/images/generations", headers=auth,
                                 json={"model": "raven/local-image", "prompt": "x", "size": "256x256",
                                       "response_format": "url"})
    video = await rest.http.post("/v1/video/generations", headers=auth,
                                 json={"model": "raven/local-video", "prompt": "x", "seconds": 1, "size": "64x64"})
    task_id = video.json()["id"]
    responses = {
        "chat": chat, "image": image, "video create": video,
        "models": await rest.http.get("/v1/models", headers=auth),
        "model": await rest.http.get(f"/v1/models/{CHAT}", headers=auth),
        "video get": await rest.http.get(f"/v1/video/generations/{task_id}", headers=auth),
        "video list": await rest.http.get("/v1/video/generations", headers=auth),
        "file": await rest.http.get(image.json()["data"][0]["url"], headers=auth),
        "generation": await rest.http.get("/v1/generation", params={"id": chat.json()["id"]}, headers=auth),
        "400": await rest.http.post("/v1/chat/completions", headers=auth,
                                    json={"model": CHAT, "messages": [{"role": "user", "content": "x"}], "top_p": 0}),
        "404 model": await rest.http.get("/v1/models/no/such", headers=auth),
        "404 task": await rest.http.get("/v1/video/generations/vid-nope", headers=auth),
        "400 image": await rest.http.post("/v1/images/generations", headers=auth,
                                          json={"model": "raven/local-image", "prompt": "x", "size": "1x1"}),
    }
    for name, r in responses.items():
        assert r.status_code < 500, (name, r.status_code)
        assert r.headers.get("x-ratelimit-limit-requests") == "10000", (name, dict(r.headers))
        assert int(r.headers["x-ratelimit-remaining-requests"]) <= 10000, name
        assert r.headers["x-ratelimit-reset-requests"].endswith("s"), name
