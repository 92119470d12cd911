"""HTTP/2 to upstreams (``ProviderConfig.http2``): the ``openai`` adapter end to end against a real
h2c (HTTP/2 cleartext, prior knowledge) upstream built on the ``h2`` package (`fakes.h2_upstream`),
plus the seam (`_client.upstream_client`) and the httpx error mapping."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web
from fakes.h2_upstream import FakeH2
from fakes.openai_upstream import Scenario, chat_completion, images_response, payload, png_bytes, video_job

from raven_service.config import ProviderConfig, load_settings
from raven_service.core.errors import UpstreamError, UpstreamTimeout
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    Finish,
    ImageRequest,
    Message,
    ProviderChatRequest,
    TextDelta,
    UsageReport,
    VideoRequest,
)
from raven_service.providers import anthropic, gemini
from raven_service.providers._client import upstream_client
from raven_service.providers._h1 import H1UpstreamClient
from raven_service.providers._http import UpstreamClient
from raven_service.providers._http2 import H2UpstreamClient, error_from_httpx
from raven_service.providers.openai_compat import OpenAICompatProvider, create

pytestmark = pytest.mark.timeout(20)

ENV = "RAVEN_TEST_H2_KEY"
SECRET = "sk-h2-S3CR3T-do-not-leak-0123456789abcdef"
UPSTREAM_MODEL = "gpt-upstream-h2"
STREAM_EVENTS = [
    TextDelta(text="Hello"),
    TextDelta(text="!"),
    TextDelta(text=" How can I assist you today?"),
    Finish(reason="stop", native="stop"),
    UsageReport(prompt_tokens=9, completion_tokens=12),
]


# ------------------------------------------------------------------------------------ fixtures
@pytest.fixture
async def fake() -> AsyncIterator[FakeH2]:
    async with FakeH2() as f:
        yield f


def make(base_url: str, **cfg: Any) -> OpenAICompatProvider:
    options: dict[str, Any] = {
        "api_key_env": ENV,
        "http2": True,
        "connect_timeout": 2.0,
        "first_byte_timeout": 5.0,
        "idle_timeout": 5.0,
    }
    options.update(cfg)
    return create("up", ProviderConfig(kind="openai", base_url=base_url, **options))


@pytest.fixture
async def provider(fake: FakeH2, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAICompatProvider]:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url)
    yield p
    await p.aclose()


@pytest.fixture
async def quick(fake: FakeH2, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[OpenAICompatProvider]:
    """A provider with tiny first-byte and idle timeouts."""
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, first_byte_timeout=0.3, idle_timeout=0.2)
    yield p
    await p.aclose()


def chat(text: str = "Hi") -> ProviderChatRequest:
    return ProviderChatRequest(
        upstream_model=UPSTREAM_MODEL, request=ChatRequest(model="m", messages=(Message(role="user", content=text),))
    )


async def collect(p: OpenAICompatProvider) -> list[ChatEvent]:
    return [e async for e in p.stream(chat())]


async def collect_until_error(p: OpenAICompatProvider) -> tuple[list[ChatEvent], UpstreamError]:
    events: list[ChatEvent] = []
    with pytest.raises(UpstreamError) as info:
        async for e in p.stream(chat()):
            events.append(e)
    return events, info.value


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def text(events: Sequence[ChatEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


# ------------------------------------------------------------------------------------ the seam
def test_from_config_picks_the_client_by_the_http2_flag() -> None:
    assert ProviderConfig(kind="openai", base_url="https://x/v1").http2 is False
    h1 = upstream_client("a", ProviderConfig(kind="openai", base_url="https://x/v1"))
    assert type(h1) is H1UpstreamClient and isinstance(h1, UpstreamClient)
    cfg = ProviderConfig(kind="openai", base_url="https://x/v1", http2=True, connect_timeout=1.5,
                         first_byte_timeout=7.0, idle_timeout=3.0)
    h2c = upstream_client("b", cfg)
    assert type(h2c) is H2UpstreamClient and isinstance(h2c, UpstreamClient)
    assert (h2c.provider, h2c.connect_timeout, h2c.first_byte_timeout, h2c.idle_timeout) == ("b", 1.5, 7.0, 3.0)


def test_every_adapter_gets_the_http2_client_from_its_config() -> None:
    for module in (anthropic, gemini):
        adapter = module.create("p", ProviderConfig(kind=module.__name__.rsplit(".", 1)[1], base_url="https://x",
                                                    http2=True))
        assert type(adapter._http) is H2UpstreamClient
        adapter = module.create("p", ProviderConfig(kind=module.__name__.rsplit(".", 1)[1], base_url="https://x"))
        assert type(adapter._http) is H1UpstreamClient
    assert type(create("p", ProviderConfig(kind="openai", base_url="http://x", http2=True))._http) is H2UpstreamClient


def test_http2_is_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "raven.toml"
    path.write_text('[providers.vllm]\nkind = "openai"\nbase_url = "http://127.0.0.1:8001/v1"\nhttp2 = true\n'
                    '[providers.other]\nkind = "openai"\nbase_url = "https://api.example/v1"\n')
    settings = load_settings(str(path), environ={})
    assert settings.providers["vllm"].http2 is True
    assert settings.providers["other"].http2 is False


async def test_session_is_refused_on_the_http2_client() -> None:
    client = H2UpstreamClient("p", base_url="http://127.0.0.1:1/v1")
    with pytest.raises(TypeError):
        client.session()
    assert isinstance(client.client(), httpx.AsyncClient)
    assert client.client() is client.client()  # one shared client
    await client.aclose()


@pytest.mark.parametrize(
    ("exc", "timeout", "retryable", "words"),
    [
        (httpx.ConnectTimeout("t"), True, True, "timed out connecting"),
        (httpx.WriteTimeout("t"), True, True, "timed out"),
        (httpx.PoolTimeout("t"), True, True, "timed out"),
        (httpx.ConnectError("refused"), False, True, "cannot connect"),
        (httpx.RemoteProtocolError("<StreamReset stream_id:1, error_code:2, remote_reset:True>"), False, True,
         "server reset the stream"),
        (httpx.RemoteProtocolError("<ConnectionTerminated error_code:0, last_stream_id:1>"), False, True, "GOAWAY"),
        (httpx.RemoteProtocolError("Server disconnected"), False, True, "server closed the connection"),
        (httpx.ReadError("boom"), False, True, "connection error (ReadError)"),
        (httpx.DecodingError("bad gzip"), False, True, "could not be decoded"),
        (ConnectionResetError(104, "reset"), False, True, "connection error"),
        (httpx.LocalProtocolError("bad header"), False, False, "HTTP client error (LocalProtocolError)"),
        (httpx.UnsupportedProtocol("ftp"), False, False, "HTTP client error (UnsupportedProtocol)"),
    ],
)
def test_httpx_errors_map_like_aiohttp_ones(exc: BaseException, timeout: bool, retryable: bool, words: str) -> None:
    err = error_from_httpx("up", exc, secrets=(SECRET,))
    assert isinstance(err, UpstreamTimeout) is timeout
    assert err.retryable is retryable
    assert words in err.detail and err.provider == "up"


# ------------------------------------------------------------------------------------ over HTTP/2
async def test_the_fake_only_speaks_http2(fake: FakeH2, monkeypatch: pytest.MonkeyPatch) -> None:
    # The negative control: an HTTP/1.1 client gets nowhere, so a recorded request came over HTTP/2.
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, http2=False)
    try:
        with pytest.raises(UpstreamError):  # the server's SETTINGS frame is no HTTP/1.1 status line
            await p.complete(chat())
    finally:
        await p.aclose()
    await fake.wait_connections_closed(2)
    assert fake.protocol_errors == 1 and fake.requests == []


async def test_unary_chat_over_http2(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(chat_completion("over h2", usage=(5, 2))))
    result = await provider.complete(chat("hello"))
    assert (result.content, result.prompt_tokens, result.completion_tokens) == ("over h2", 5, 2)
    assert fake.protocol_errors == 0 and fake.connections == 1
    rec = fake.last
    assert (rec.method, rec.path, rec.scheme, rec.authority) == (
        "POST", "/v1/chat/completions", "http", f"127.0.0.1:{fake.port}")
    assert rec.stream_id == 1  # the first client stream of an HTTP/2 connection
    assert rec.headers["authorization"] == f"Bearer {SECRET}"
    assert rec.headers["content-type"] == "application/json"
    assert rec.json["model"] == UPSTREAM_MODEL and not rec.json.get("stream")
    assert rec.json["messages"] == [{"role": "user", "content": "hello"}]
    assert rec.completed and not rec.client_reset


async def test_stream_over_http2(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream())
    assert await collect(provider) == STREAM_EVENTS
    rec = fake.last
    assert rec.headers["accept"] == "text/event-stream"
    assert rec.json["stream"] is True and rec.json["stream_options"] == {"include_usage": True}
    assert rec.completed and not rec.client_reset
    assert fake.protocol_errors == 0 and fake.connections == 1


async def test_sequential_requests_reuse_one_connection(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(
        Scenario.json(chat_completion()),
        Scenario.chat_stream(),
        Scenario.chat_stream().split_writes("mid_line"),  # SSE lines cut across DATA frames
        Scenario.chat_stream().held_open(0.03),  # the stream ends a little after [DONE]
        Scenario.json(chat_completion()),
    )
    await provider.complete(chat())
    for _ in range(3):
        assert await collect(provider) == STREAM_EVENTS
    await provider.complete(chat())
    assert fake.connections == 1
    assert [r.stream_id for r in fake.requests] == [1, 3, 5, 7, 9]
    assert all(r.completed and not r.client_reset for r in fake.requests)


async def test_concurrent_requests_are_multiplexed_on_one_connection(
    fake: FakeH2, provider: OpenAICompatProvider
) -> None:
    n = 6
    fake.script(*[Scenario.chat_stream().slow_body(0.25) for _ in range(n)])
    results = await asyncio.gather(*(collect(provider) for _ in range(n)))
    assert all(r == STREAM_EVENTS for r in results)
    assert fake.connections == 1
    assert fake.max_concurrent_streams == n  # all in flight at once, on the one connection
    assert sorted(r.stream_id for r in fake.requests) == list(range(1, 2 * n, 2))
    assert all(r.completed for r in fake.requests)


async def test_drain_after_done_keeps_the_stream_clean_or_cancels_it(
    fake: FakeH2, provider: OpenAICompatProvider
) -> None:
    # The body ends within the drain grace after [DONE]: read to its end, no reset.
    fake.script(Scenario.chat_stream().held_open(0.03))
    assert await collect(provider) == STREAM_EVENTS
    assert fake.last.completed and not fake.last.client_reset
    # It does not: the events are all delivered at once and the stream is cancelled.
    fake.script(Scenario.chat_stream().held_open(3))
    started = time.monotonic()
    assert await collect(provider) == STREAM_EVENTS
    assert time.monotonic() - started < 1.5
    await fake.last.wait_ended(2)
    assert fake.last.client_reset and not fake.last.completed


# ------------------------------------------------------------------------------------ HTTP errors
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_429_is_retryable_with_retry_after(fake: FakeH2, provider: OpenAICompatProvider, mode: str) -> None:
    fake.script(Scenario.json(payload("error_rate_limit"), status=429, headers={"Retry-After": "7"}))
    with pytest.raises(UpstreamError) as info:
        if mode == "complete":
            await provider.complete(chat())
        else:
            await collect(provider)
    exc = info.value
    assert (exc.retryable, exc.retry_after, exc.status, exc.provider) == (True, 7.0, 429, "up")
    assert exc.code == "upstream_rate_limited" and not isinstance(exc, UpstreamTimeout)
    assert "Rate limit reached for gpt-4o-mini" in str(exc)


@pytest.mark.parametrize("status", [500, 503])
async def test_server_errors_are_retryable(fake: FakeH2, provider: OpenAICompatProvider, status: int) -> None:
    fake.script(Scenario.json(payload("error_server"), status=status, headers={"retry-after-ms": "1500"}))
    _, exc = await collect_until_error(provider)
    assert (exc.retryable, exc.status, exc.retry_after) == (True, status, 1.5)
    assert "The server had an error" in str(exc)


async def test_client_errors_are_not_retryable(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(payload("error_invalid_request"), status=400))
    with pytest.raises(UpstreamError) as info:
        await provider.complete(chat())
    assert (info.value.retryable, info.value.status) == (False, 400)
    assert "Invalid value for 'temperature'" in info.value.message
    assert SECRET not in str(info.value)


async def test_connection_refused_is_retryable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    p = make(f"http://127.0.0.1:{closed_port()}/v1")
    try:
        with pytest.raises(UpstreamError) as info:
            await p.complete(chat())
        assert info.value.retryable and not isinstance(info.value, UpstreamTimeout)
        assert "cannot connect to 127.0.0.1" in str(info.value)
        _, exc = await collect_until_error(p)
        assert exc.retryable
    finally:
        await p.aclose()


async def test_server_stream_reset_mid_stream(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream().reset(after=3), Scenario.chat_stream().reset(after=0), Scenario.chat_stream())
    events, exc = await collect_until_error(provider)
    assert events == [TextDelta(text="Hello"), TextDelta(text="!")]
    assert not isinstance(exc, UpstreamTimeout) and "server reset the stream" in str(exc)
    assert exc.retryable is False  # events went out: the route is committed
    events, exc = await collect_until_error(provider)
    assert events == [] and exc.retryable is True
    # A reset stream is not a broken connection: the next request shares it.
    assert await collect(provider) == STREAM_EVENTS
    assert fake.connections == 1


# ------------------------------------------------------------------------------------ timeouts
@pytest.mark.parametrize("where", ["headers", "body"])
@pytest.mark.parametrize("mode", ["complete", "stream"])
async def test_slow_first_byte_times_out_and_cancels_the_stream(
    fake: FakeH2, quick: OpenAICompatProvider, mode: str, where: str
) -> None:
    reply = Scenario.chat_stream() if mode == "stream" else Scenario.json(chat_completion())
    fake.script(reply.slow_first_byte(3) if where == "headers" else reply.slow_body(3))
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout) as info:
        if mode == "complete":
            await quick.complete(chat())
        else:
            await collect(quick)
    assert time.monotonic() - started < 1.5
    assert info.value.retryable and "first byte" in str(info.value)
    await fake.last.wait_ended(2)
    assert fake.last.client_reset and not fake.last.completed  # the upstream saw us cancel
    assert fake.open_connections == 1  # ... that stream only


async def test_first_body_byte_may_take_longer_than_idle(fake: FakeH2, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url, first_byte_timeout=3.0, idle_timeout=0.2)
    fake.script(Scenario.chat_stream().slow_body(0.5))
    try:
        assert await collect(p) == STREAM_EVENTS
    finally:
        await p.aclose()


async def test_stall_between_events_times_out_idle(fake: FakeH2, quick: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream().stall(after=2, seconds=3))
    started = time.monotonic()
    events, exc = await collect_until_error(quick)
    assert time.monotonic() - started < 1.5
    assert isinstance(exc, UpstreamTimeout) and "idle" in str(exc)
    assert events == [TextDelta(text="Hello")]
    await fake.last.wait_ended(2)
    assert fake.last.client_reset and not fake.last.completed


async def test_slow_but_steady_stream_does_not_time_out(fake: FakeH2, quick: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream(["a"] * 8).paced(0.05))  # each gap under the 0.2 s idle timeout
    assert text(await collect(quick)) == "a" * 8


# ------------------------------------------------------------------------------------ cancellation
async def test_aclose_mid_stream_resets_the_stream_and_keeps_the_connection(
    fake: FakeH2, provider: OpenAICompatProvider
) -> None:
    fake.script(Scenario.chat_stream(["tok"] * 200).paced(0.02), Scenario.json(chat_completion()))
    events = provider.stream(chat())
    assert await anext(events) == TextDelta(text="tok")
    assert await anext(events) == TextDelta(text="tok")
    await events.aclose()  # type: ignore[attr-defined]
    await fake.last.wait_ended(2)
    assert fake.last.client_reset and fake.last.reset_code == 0x8  # RST_STREAM(CANCEL)
    assert not fake.last.completed and not fake.last.connection_lost
    await provider.complete(chat())  # the connection carries on
    assert fake.connections == 1 and fake.last.completed


async def test_cancelling_the_consumer_resets_the_stream(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.chat_stream(["tok"] * 200).paced(0.02))
    got_one = asyncio.Event()

    async def consume() -> None:
        async for _ in provider.stream(chat()):
            got_one.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(got_one.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await fake.last.wait_ended(2)
    assert fake.last.client_reset and not fake.last.completed


async def test_provider_aclose_closes_the_connection(fake: FakeH2, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENV, SECRET)
    p = make(fake.base_url)
    await p.complete(chat())
    assert fake.open_connections == 1
    await p.aclose()
    await fake.wait_connections_closed(2)


# ------------------------------------------------------------------------------------ media
async def test_multipart_video_submit_over_http2(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    fake.script(Scenario.json(video_job("video_h2", "queued")))
    image = png_bytes(4, 4)
    job_id = await provider.submit_video("sora-2", VideoRequest(model="m", prompt="a fox", image=image), "t1")
    assert job_id == "video_h2"
    rec = fake.last
    content_type = rec.headers["content-type"]
    assert content_type.startswith("multipart/form-data; boundary=")
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    assert rec.body.startswith(b"--" + boundary) and rec.body.rstrip().endswith(b"--" + boundary + b"--")
    assert b'name="model"\r\n\r\nsora-2\r\n' in rec.body
    assert b'name="prompt"\r\n\r\na fox\r\n' in rec.body
    assert b'name="input_reference"; filename="reference.png"' in rec.body and image in rec.body


async def test_other_http_origins_still_use_http11(fake: FakeH2, provider: OpenAICompatProvider) -> None:
    # h2c (prior knowledge) is for the upstream's own origin only: an image URL on another
    # cleartext host (here an aiohttp server, HTTP/1.1 only) is fetched over HTTP/1.1.
    image = png_bytes(3, 2)
    seen: list[tuple[int, int]] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(request.version[:2])
        return web.Response(body=image, content_type="image/png")

    app = web.Application()
    app.router.add_get("/img.png", serve)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        answer = images_response([])
        answer["data"] = [{"url": f"http://127.0.0.1:{port}/img.png"}]
        fake.script(Scenario.json(answer))
        images = await provider.generate_images("dall-e-3", ImageRequest(model="m", prompt="p"))
    finally:
        await runner.cleanup()
    assert [img.png for img in images] == [image]
    assert seen == [(1, 1)]
    assert fake.protocol_errors == 0
