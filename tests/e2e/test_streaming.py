"""Streaming over real loopback sockets: keep-alive comments, client disconnect cancelling the
upstream request, mid-stream upstream failure, and usage records for each outcome.

`raven serve` runs as a subprocess pointed at a fake OpenAI upstream (real aiohttp server in a
thread); in-process ASGI transports would buffer whole responses and hide all of this.
"""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from fakes.openai_upstream import FakeOpenAI, Scenario

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
MODEL = "fake/gpt"


@pytest.fixture
def upstream():
    with FakeOpenAI.in_thread() as fake:
        yield fake


@pytest.fixture
def served(raven, upstream, tmp_path):
    cfg = tmp_path / "raven.toml"
    cfg.write_text(f"""
sse_keepalive_seconds = 0.2

[providers.up]
kind = "openai"
base_url = "{upstream.base_url}"
api_key_env = "RAVEN_TEST_UPSTREAM_KEY"
max_retries = 0

[models."{MODEL}"]
routes = [{{ provider = "up", model = "gpt-4o-mini" }}]
capabilities = ["chat", "tools", "json"]
price_input_per_mtok = 1
price_output_per_mtok = 2
""")
    return raven(env={"RAVEN_CONFIG": str(cfg), "RAVEN_TEST_UPSTREAM_KEY": "sk-upstream-secret"})


def _generation(p, gen_id: str, key: str) -> dict:
    for _ in range(100):
        r = httpx.get(f"{p.base}/v1/generation", params={"id": gen_id}, headers={"Authorization": f"Bearer {key}"})
        if r.status_code == 200:
            return r.json()["data"]
        time.sleep(0.05)
    raise AssertionError(f"no usage record for {gen_id}: {r.status_code} {r.text}")


def test_keepalive_comments_while_waiting_for_first_byte(served, upstream):
    upstream.on_model("gpt-4o-mini", Scenario.chat_stream(("late", " answer")).slow_first_byte(1.0))
    lines = []
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {served.key}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["x-ratelimit-limit-requests"]
        for line in r.iter_lines():
            lines.append(line)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data:"))
    assert any(line.startswith(": RAVEN PROCESSING") for line in lines[:first_data])
    assert lines[-1] == "data: [DONE]" or lines[-2] == "data: [DONE]"
    # the official SDK ignores the comments
    client = openai.OpenAI(base_url=served.base + "/v1", api_key=served.key, max_retries=0)
    upstream.on_model("gpt-4o-mini", Scenario.chat_stream(("late", " answer")).slow_first_byte(0.5))
    text = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=MODEL, stream=True, messages=[{"role": "user", "content": "hi"}]) if c.choices)
    assert text == "late answer"


def test_client_disconnect_cancels_upstream_and_records_usage(served, upstream):
    pieces = [f"w{i} " for i in range(400)]
    upstream.on_model("gpt-4o-mini", Scenario.chat_stream(pieces).paced(0.02))
    gen_id = None
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {served.key}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: {"):
                seen += 1
                if gen_id is None:
                    import json

                    gen_id = json.loads(line[6:])["id"]
            if seen >= 5:
                break  # leave mid-stream: closing the response drops the connection
    rec = upstream.requests[-1]
    deadline = time.monotonic() + 5
    while not rec.ended.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert rec.disconnected and not rec.completed, "the upstream request was not cancelled"
    data = _generation(served, gen_id, served.key)
    assert data["status"] == "cancelled"
    assert 0 < data["completion_tokens"] < 400
    assert data["total_cost"] > 0


def test_upstream_failure_mid_stream_ends_with_error_chunk(served, upstream):
    upstream.on_model("gpt-4o-mini", Scenario.chat_stream(("partial", " text", " more")).reset(after=2))
    lines = []
    with httpx.stream("POST", f"{served.base}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {served.key}"},
                      json={"model": MODEL, "stream": True, "messages": [{"role": "user", "content": "hi"}]}) as r:
        assert r.status_code == 200
        lines = [line for line in r.iter_lines() if line.startswith("data:")]
    assert lines[-1] == "data: [DONE]"
    import json

    events = [json.loads(line[6:]) for line in lines[:-1]]
    failing = [e for e in events if e.get("error")]
    assert len(failing) == 1 and failing[0] is events[-1], events  # the stream ends with that chunk
    assert failing[0]["choices"][0]["finish_reason"] == "error"
    assert set(failing[0]["error"]) >= {"message", "type", "code"}
    assert failing[0]["usage"]["completion_tokens"] >= 1  # usage is in the final chunk, always
    assert "sk-upstream-secret" not in "".join(lines)
    data = _generation(served, events[0]["id"], served.key)
    assert data["status"] == "failed"
    # the official SDK raises APIError for the error payload
    upstream.on_model("gpt-4o-mini", Scenario.chat_stream(("partial", " text", " more")).reset(after=2))
    client = openai.OpenAI(base_url=served.base + "/v1", api_key=served.key, max_retries=0)
    with pytest.raises(openai.APIError):
        for _ in client.chat.completions.create(model=MODEL, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]):
            pass


def test_upstream_error_before_first_byte_is_502(served, upstream):
    upstream.on_model("gpt-4o-mini", Scenario.error(500, "boom", type="server_error"))
    client = openai.OpenAI(base_url=served.base + "/v1", api_key=served.key, max_retries=0)
    with pytest.raises(openai.APIStatusError) as ei:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert ei.value.status_code == 502
    assert "sk-upstream-secret" not in str(ei.value.body)
    with pytest.raises(openai.APIStatusError) as ei:
        for _ in client.chat.completions.create(model=MODEL, stream=True,
                                                messages=[{"role": "user", "content": "hi"}]):
            pass
    assert ei.value.status_code == 502
