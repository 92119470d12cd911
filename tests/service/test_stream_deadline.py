"""A stream's overall deadline (`request_timeout`): one timer per stream, enforced while the stream
waits for its upstream and between events, against the fake OpenAI upstream over real sockets."""

from __future__ import annotations

import json

import grpc
import pytest
from fakes.openai_upstream import FakeOpenAI, Scenario
from tests_support import make_rest, service, usage_records

from raven.v1 import chat_pb2, chat_service_pb2_grpc
from raven.v1 import chat_service_pb2 as cs

pytestmark = pytest.mark.timeout(30)

KEY_ENV = "RAVEN_DEADLINE_TEST_KEY"


def _overrides(upstream: str) -> dict:
    return {
        "request_timeout": 0.5,
        "providers": {"fake": {"kind": "openai", "base_url": upstream, "api_key_env": KEY_ENV, "max_retries": 0}},
        "models": {"m": {"routes": [{"provider": "fake", "model": "gpt-x"}], "capabilities": ["chat"]}},
    }


@pytest.fixture
async def fake(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-deadline")
    upstream = FakeOpenAI()
    await upstream.start()
    try:
        yield upstream
    finally:
        await upstream.stop()


def _request() -> cs.StreamChatCompletionRequest:
    return cs.StreamChatCompletionRequest(model="m", messages=[chat_pb2.ChatMessage(role="user", content="hi")])


@pytest.mark.parametrize("scenario", [
    # every chunk in time for the idle timeout, the whole stream far past the deadline
    pytest.param(lambda: Scenario.chat_stream(["tok"] * 60).paced(0.05), id="trickle"),
    # one read that waits past the deadline (and past this test's timeout: only the deadline ends it)
    pytest.param(lambda: Scenario.chat_stream(["a", "b", "c", "d"]).stall(after=2, seconds=60), id="stalled-read"),
])
async def test_a_stream_past_its_deadline_ends_with_request_timeout_and_settles_once(tmp_path, fake, scenario):
    fake.script(scenario())
    async with service(tmp_path, **_overrides(fake.base_url)) as svc, \
            grpc.aio.insecure_channel(svc.target) as channel:
        chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        msgs = [m async for m in chat.StreamChatCompletion(_request(), metadata=svc.meta())]
        records = await usage_records(svc.services)
    last = msgs[-1]
    assert last.error.code == "request_timeout", last
    assert last.choices[0].finish_reason == "error"
    text = "".join(c.delta.content for m in msgs for c in m.choices)
    assert 0 < len(text) < len("tok") * 60 and text != "abcd"
    assert [(r.status, "in time" in r.error) for r in records] == [("failed", True)]
    assert records[0].completion_tokens > 0  # the tokens that did stream are counted


async def test_the_deadline_before_the_first_chunk_is_an_http_error_over_rest(tmp_path, fake):
    fake.script(Scenario.chat_stream().slow_first_byte(3))
    async with make_rest(tmp_path, link="inprocess", **_overrides(fake.base_url)) as rest:
        response = await rest.http.post("/v1/chat/completions", headers=rest.auth(), json={
            "model": "m", "stream": True, "messages": [{"role": "user", "content": "hi"}]})
        records = await usage_records(rest.svc.services)
    assert response.status_code == 504, response.text
    assert json.loads(response.text)["error"]["code"] == "request_timeout"
    assert [r.status for r in records] == ["failed"]


async def test_a_stream_within_its_deadline_is_untouched(tmp_path, fake):
    fake.script(Scenario.chat_stream(["a", "b", "c"]).paced(0.02))
    async with service(tmp_path, **_overrides(fake.base_url)) as svc, \
            grpc.aio.insecure_channel(svc.target) as channel:
        chat = chat_service_pb2_grpc.ChatServiceStub(channel)
        msgs = [m async for m in chat.StreamChatCompletion(_request(), metadata=svc.meta())]
        records = await usage_records(svc.services)
    assert "".join(c.delta.content for m in msgs for c in m.choices) == "abc"
    assert [r.status for r in records] == ["completed"]
