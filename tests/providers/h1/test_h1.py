"""The HTTP/1.1 upstream client on httptools (`providers._h1`), against raw TCP servers on 127.0.0.1
that write the exact bytes each case needs: keep-alive reuse, the three ways a body ends, content
codings, back-pressure, early close, the pool's limit and its waiters, idle expiry, failures and
their mapping, TLS. Every test runs on asyncio's loop and on uvloop's (conftest.py beside this file).
The adapters' own suites (test_openai_compat, test_anthropic, test_gemini) run on this client too."""

from __future__ import annotations

import asyncio
import datetime
import gzip
import ssl
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from raven_service.core.errors import BROKEN, TRANSIENT, UpstreamError, UpstreamTimeout
from raven_service.providers._h1 import DECODE_STEP, HIGH_WATER, H1UpstreamClient, H1UpstreamResponse

pytestmark = pytest.mark.timeout(20)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One request's head and body (by Content-Length), or None at the connection's end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


class Raw:
    """A TCP server whose every connection runs `handler`; counts connections and requests."""

    def __init__(self, handler: Handler, ssl_ctx: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl = ssl_ctx
        self.connections = 0
        self.open = 0
        self.most_open = 0
        self.requests: list[bytes] = []
        self.closed = asyncio.Event()  # a connection ended (the client closed it, or the handler returned)

    async def __aenter__(self) -> Raw:
        self.server = await asyncio.start_server(self._on, "127.0.0.1", 0, ssl=self.ssl)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"{'https' if self.ssl else 'http'}://127.0.0.1:{self.port}/v1/chat/completions"

    async def _on(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.open += 1
        self.most_open = max(self.most_open, self.open)
        try:
            await self.handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self.open -= 1
            writer.close()
            self.closed.set()

    def serve(self, *responses: bytes) -> Handler:
        """A keep-alive handler answering each request with the next of `responses` (the last repeats)."""
        async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (req := await read_request(reader)) is not None:
                self.requests.append(req[0] + req[1])
                writer.write(responses[min(len(self.requests), len(responses)) - 1])
                await writer.drain()
        return handler


def held_until(release: asyncio.Event) -> Handler:
    """A keep-alive handler that answers each request once `release` is set."""
    async def held(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await read_request(reader) is not None:
            await release.wait()
            writer.write(OK)
            await writer.drain()
    return held


def keep_alive(*responses: bytes) -> Callable[[Raw], Handler]:
    return lambda raw: raw.serve(*responses)


@pytest.fixture
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Raw]:
    """`Raw` with the handler the test names in @pytest.mark.parametrize("server", [...], indirect=True)."""
    make = request.param
    raw = Raw(lambda r, w: asyncio.sleep(0))
    raw.handler = make(raw)
    async with raw:
        yield raw


@pytest.fixture
async def client() -> AsyncIterator[H1UpstreamClient]:
    c = H1UpstreamClient("up", connect_timeout=5, first_byte_timeout=10, idle_timeout=10)
    c.secrets = ("sk-secret-h1-0123456789",)
    yield c
    await c.aclose()


async def post(client: H1UpstreamClient, url: str, body: bytes = b'{"a":1}', **headers: str) -> bytes:
    resp = await client.send("POST", url, headers={"Authorization": "Bearer sk-secret-h1-0123456789", **headers},
                             body=body)
    async with resp:
        return await resp.read()


async def until(check: Callable[[], bool]) -> None:
    """Waits (bounded by the test timeout) for a condition the other side brings about."""
    while not check():  # noqa: ASYNC110  # a condition inside the client under test, no event to wait on
        await asyncio.sleep(0.005)


# ------------------------------------------------------------------------------------ requests
@pytest.mark.parametrize("server", [keep_alive(OK)], indirect=True)
async def test_the_request_on_the_wire(server: Raw, client: H1UpstreamClient) -> None:
    assert await post(client, server.url + "?alt=sse&x=a b", body=b'{"q":"h\xc3\xa9"}', **{"X-Extra": "v"}) == b"{}"
    head, _, body = server.requests[0].partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /v1/chat/completions?alt=sse&x=a%20b HTTP/1.1"
    assert lines[1] == f"Host: 127.0.0.1:{server.port}".encode()
    assert set(lines[2:]) == {b"Authorization: Bearer sk-secret-h1-0123456789", b"X-Extra: v",
                              b"Accept-Encoding: identity", b"Content-Length: 11"}
    assert body == b'{"q":"h\xc3\xa9"}'


@pytest.mark.parametrize("server", [keep_alive(OK)], indirect=True)
@pytest.mark.parametrize("bad", [{"X-Evil": "a\r\nInjected: 1"}, {"X-Evil\r\nInjected": "1"},
                                 {"X-Uni": "caf\u00e9\u2603"}])
async def test_a_header_that_could_inject_is_refused_before_connecting(
        server: Raw, client: H1UpstreamClient, bad: dict[str, str]) -> None:
    with pytest.raises(UpstreamError) as err:
        await client.send("POST", server.url, headers=bad, body=b"{}")
    assert err.value.kind == BROKEN and "invalid request header" in str(err.value)
    assert server.connections == 0


@pytest.mark.parametrize("server", [keep_alive(OK)], indirect=True)
async def test_sequential_requests_share_one_keep_alive_connection(server: Raw, client: H1UpstreamClient) -> None:
    for _ in range(5):
        assert await post(client, server.url) == b"{}"
    assert (server.connections, len(server.requests)) == (1, 5)


# ------------------------------------------------------------------------------------ response bodies
CHUNKED = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"7\r\ndata: a\r\n8\r\n\n\ndata: \r\n3\r\nbc\n\r\n0\r\n\r\n")


@pytest.mark.parametrize("server", [keep_alive(CHUNKED)], indirect=True)
async def test_a_chunked_body_arriving_a_byte_at_a_time(server: Raw, client: H1UpstreamClient) -> None:
    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            server.requests.append(req[0])
            for i in range(len(CHUNKED)):
                writer.write(CHUNKED[i:i + 1])
                await writer.drain()
                await asyncio.sleep(0)
    server.handler = trickle
    for _ in range(2):
        resp = await client.send("POST", server.url, headers={}, body=b"{}")
        assert isinstance(resp, H1UpstreamResponse)
        assert resp.content_type == "text/event-stream" and resp.headers["transfer-encoding"] == "chunked"
        pieces = []
        while piece := await resp.chunk():
            pieces.append(piece)
        assert b"".join(pieces) == b"data: a\n\ndata: bc\n" and resp.at_eof
        resp.close()
    assert server.connections == 1  # reused after a chunked body read to its end


async def test_a_body_that_runs_to_the_close_is_whole_and_its_connection_not_reused(
        client: H1UpstreamClient) -> None:
    async def to_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n")
        for part in (b'{"long":', b'"body"}'):
            writer.write(part)
            await writer.drain()
    async with Raw(to_close) as raw:
        assert await post(client, raw.url) == b'{"long":"body"}'
        assert await post(client, raw.url) == b'{"long":"body"}'
        assert raw.connections == 2


@pytest.mark.parametrize("server", [keep_alive(
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")], indirect=True)
async def test_connection_close_is_honoured(server: Raw, client: H1UpstreamClient) -> None:
    assert await post(client, server.url) == b"{}"
    assert await post(client, server.url) == b"{}"
    assert server.connections == 2


def _encoded(coding: str, data: bytes) -> bytes:
    if coding == "gzip":
        body = gzip.compress(data)
    elif coding == "deflate":
        body = zlib.compress(data)
    else:  # raw deflate, as some servers send for "deflate"
        c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
        body = c.compress(data) + c.flush()
        coding = "deflate"
    return (f"HTTP/1.1 200 OK\r\nContent-Encoding: {coding}\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body


@pytest.mark.parametrize("coding", ["gzip", "deflate", "raw-deflate"])
async def test_compressed_bodies_are_decoded(client: H1UpstreamClient, coding: str) -> None:
    data = b'{"choices":[' + b'{"x":"yyyyyyyy"},' * 500 + b"{}]}"
    raw = Raw(lambda r, w: asyncio.sleep(0))
    raw.handler = raw.serve(_encoded(coding, data))
    async with raw:
        assert await post(client, raw.url) == data
        assert await post(client, raw.url) == data
        assert raw.connections == 1


async def test_a_compressed_body_is_decoded_a_step_at_a_time_not_all_at_once(client: H1UpstreamClient) -> None:
    """A gzip body of 16 MiB of zeros is ~16 KiB on the wire: decoded in one go it would hold the
    loop and 16 MiB at once. It is decoded as it is read, never far past the high-water mark."""
    data = bytes(16 * 1024 * 1024)
    raw = Raw(lambda r, w: asyncio.sleep(0))
    raw.handler = raw.serve(_encoded("gzip", data))
    async with raw:
        resp = await client.send("POST", raw.url, headers={}, body=b"{}")
        assert isinstance(resp, H1UpstreamResponse)
        conn = resp._conn
        await until(lambda: conn._buffered >= HIGH_WATER or conn.eof)  # decoding has stopped for the reader
        most = conn._buffered
        total = 0
        while piece := await resp.chunk():
            assert not any(piece[:64])
            total += len(piece)
            most = max(most, conn._buffered)
        resp.close()
        assert total == len(data)
        assert most <= HIGH_WATER + DECODE_STEP
        assert await post(client, raw.url) == data  # and the connection was reused
        assert raw.connections == 1


@pytest.mark.parametrize("server", [keep_alive(
    b"HTTP/1.1 200 OK\r\nContent-Encoding: br\r\nContent-Length: 3\r\n\r\nabc")], indirect=True)
async def test_an_unknown_content_coding_is_a_broken_reply(server: Raw, client: H1UpstreamClient) -> None:
    with pytest.raises(UpstreamError) as err:
        await post(client, server.url)
    assert err.value.kind == BROKEN and "unsupported content encoding" in str(err.value)


@pytest.mark.parametrize("server", [keep_alive(OK + b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nextra", OK)],
                         indirect=True)
async def test_a_connection_that_sent_more_than_one_response_is_not_reused(server: Raw, client: H1UpstreamClient
                                                                           ) -> None:
    assert await post(client, server.url) == b"{}"
    assert await post(client, server.url) == b"{}"  # not the unasked-for "extra"
    assert server.connections == 2


@pytest.mark.parametrize("server", [keep_alive(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)], indirect=True)
async def test_an_interim_response_is_skipped(server: Raw, client: H1UpstreamClient) -> None:
    assert await post(client, server.url) == b"{}"
    assert await post(client, server.url) == b"{}"
    assert server.connections == 1


# ------------------------------------------------------------------------------------ flow
async def test_reading_pauses_while_the_consumer_lags_and_nothing_is_lost(client: H1UpstreamClient) -> None:
    size = 8 * 1024 * 1024
    block = bytes(range(256)) * 256  # 64 KiB

    async def firehose(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n\r\n".encode())
        for _ in range(size // len(block)):
            writer.write(block)
            await writer.drain()
    async with Raw(firehose) as raw:
        resp = await client.send("POST", raw.url, headers={}, body=b"{}")
        assert isinstance(resp, H1UpstreamResponse)
        conn = resp._conn
        await until(lambda: conn._paused)
        for _ in range(20):  # the socket stays paused: what waits unread does not grow
            await asyncio.sleep(0.005)
            assert conn._buffered <= HIGH_WATER + 256 * 1024
        total = 0
        first = await resp.chunk()
        assert first[:256] == bytes(range(256))
        total += len(first)
        while piece := await resp.chunk():
            total += len(piece)
        assert total == size
        resp.close()


async def test_closing_a_response_early_closes_its_connection(client: H1UpstreamClient) -> None:
    gone = asyncio.Event()

    async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        writer.write(b"9\r\ndata: x\n\n\r\n")
        await writer.drain()
        assert await reader.read() == b""  # the client hung up
        gone.set()
    async with Raw(endless) as raw:
        resp = await client.send("POST", raw.url, headers={}, body=b"{}")
        assert await resp.chunk() == b"data: x\n\n"
        resp.close()
        await gone.wait()
        assert client.pool().count == 0


async def test_a_cancelled_request_closes_its_connection_and_frees_its_room(client: H1UpstreamClient) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()
    async with Raw(silent) as raw:
        task = asyncio.create_task(post(client, raw.url))
        await until(lambda: raw.connections == 1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await raw.closed.wait()
        assert client.pool().count == 0


# ------------------------------------------------------------------------------------ the pool
async def test_the_pool_never_opens_more_than_its_limit_and_every_waiter_is_served() -> None:
    client = H1UpstreamClient("up", limit=2, first_byte_timeout=10)
    release = asyncio.Event()
    try:
        async with Raw(held_until(release)) as raw:
            tasks = [asyncio.create_task(post(client, raw.url)) for _ in range(6)]
            await until(lambda: raw.connections == 2)
            assert len(client.pool().waiters) == 4
            release.set()
            assert await asyncio.gather(*tasks) == [b"{}"] * 6
            assert (raw.connections, raw.most_open) == (2, 2)
    finally:
        await client.aclose()


async def test_a_cancelled_waiter_leaves_no_hole_in_the_queue() -> None:
    client = H1UpstreamClient("up", limit=1, first_byte_timeout=10)
    release = asyncio.Event()
    try:
        async with Raw(held_until(release)) as raw:
            first = asyncio.create_task(post(client, raw.url))
            await until(lambda: raw.connections == 1)
            waiting = [asyncio.create_task(post(client, raw.url)) for _ in range(3)]
            await until(lambda: len(client.pool().waiters) == 3)
            waiting[0].cancel()
            release.set()
            assert await first == b"{}"
            assert await asyncio.gather(*waiting[1:]) == [b"{}", b"{}"]
            assert waiting[0].cancelled() and raw.connections == 1
    finally:
        await client.aclose()


async def test_a_full_pool_makes_room_by_closing_an_idle_connection_to_another_origin() -> None:
    client = H1UpstreamClient("up", limit=1)
    try:
        a, b = Raw(lambda r, w: asyncio.sleep(0)), Raw(lambda r, w: asyncio.sleep(0))
        a.handler, b.handler = a.serve(OK), b.serve(OK)
        async with a, b:
            assert await post(client, a.url) == b"{}"
            assert await post(client, b.url) == b"{}"
            await a.closed.wait()  # a's idle connection was closed to make room for b's
            assert await post(client, a.url) == b"{}"
            assert (a.connections, b.connections) == (2, 1)
    finally:
        await client.aclose()


@pytest.mark.parametrize("server", [keep_alive(OK)], indirect=True)
async def test_a_connection_idle_past_the_keep_alive_timeout_is_not_reused(server: Raw) -> None:
    client = H1UpstreamClient("up", keepalive_timeout=0.0)
    try:
        assert await post(client, server.url) == b"{}"
        await asyncio.sleep(0.001)  # loop time moves on past the (zero) keep-alive
        assert await post(client, server.url) == b"{}"
        assert server.connections == 2
    finally:
        await client.aclose()


async def test_a_connection_the_server_closed_while_idle_is_replaced(client: H1UpstreamClient) -> None:
    async def one_each(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)  # says keep-alive (HTTP/1.1), then closes anyway
        await writer.drain()
    async with Raw(one_each) as raw:
        assert await post(client, raw.url) == b"{}"
        await until(lambda: client.pool().count == 0)  # the close reached the client
        assert await post(client, raw.url) == b"{}"
        assert raw.connections == 2


def reuse_race(*later: bytes | None) -> Handler:
    """Connection 1 answers its first request, then reads the next and closes without a byte (the
    server's idle timeout racing the client's reuse); connection n > 1 answers with `later[n - 2]`
    (None: reads the request and closes unanswered)."""
    seen = [0]

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        n = seen[0]
        if await read_request(reader) is None:
            return
        if n == 1:
            writer.write(OK)
            await writer.drain()
            await read_request(reader)
            return  # closes: the second request gets no answer here
        reply = later[min(n - 2, len(later) - 1)]
        if reply is not None:
            writer.write(reply)
            await writer.drain()
    return handler


async def test_a_reused_connection_closed_unanswered_is_retried_once_on_a_new_one(client: H1UpstreamClient) -> None:
    async with Raw(reuse_race(OK)) as raw:
        assert await post(client, raw.url) == b"{}"
        assert await post(client, raw.url) == b"{}"  # not a failure: sent again on connection 2
        assert raw.connections == 2


async def test_the_retry_is_once_and_a_new_connection_is_never_retried(client: H1UpstreamClient) -> None:
    async with Raw(reuse_race(None)) as raw:
        assert await post(client, raw.url) == b"{}"
        with pytest.raises(UpstreamError) as err:
            await post(client, raw.url)
        assert err.value.kind == TRANSIENT and "server closed the connection" in str(err.value)
        assert raw.connections == 2  # the reused one, then one new one: no third try


async def test_a_reused_connection_that_began_to_answer_is_not_retried(client: H1UpstreamClient) -> None:
    async def partial(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(OK)
        await writer.drain()
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-")  # then the close: the upstream may have acted on it
        await writer.drain()
    async with Raw(partial) as raw:
        assert await post(client, raw.url) == b"{}"
        with pytest.raises(UpstreamError) as err:
            await post(client, raw.url)
        assert err.value.kind == TRANSIENT
        assert raw.connections == 1


# ------------------------------------------------------------------------------------ failures
async def test_refused_connect_is_transient(client: H1UpstreamClient) -> None:
    async with Raw(lambda r, w: asyncio.sleep(0)) as raw:
        url = raw.url
    with pytest.raises(UpstreamError) as err:
        await post(client, url)
    assert err.value.kind == TRANSIENT and err.value.retryable and "cannot connect" in str(err.value)
    assert client.pool().count == 0


@pytest.mark.parametrize(("reply", "kind", "what"), [
    (b"", TRANSIENT, "server closed the connection"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"partial", TRANSIENT, "cut off"),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nabcde\r\n", TRANSIENT, "cut off"),
    (b"SMTP ready\r\n\r\n", BROKEN, "malformed HTTP response"),
    (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", BROKEN, "malformed HTTP response"),
])
async def test_broken_replies_map_to_the_error_classes(
        client: H1UpstreamClient, reply: bytes, kind: str, what: str) -> None:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(reply)
        await writer.drain()
    async with Raw(answer) as raw:
        with pytest.raises(UpstreamError) as err:
            await post(client, raw.url)
    assert err.value.kind == kind and what in str(err.value)
    assert "sk-secret" not in str(err.value)
    await until(lambda: client.pool().count == 0)


@pytest.mark.parametrize("server", [keep_alive(
    b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 52\r\n\r\n"
    b'{"error":{"message":"slow down","type":"requests"}}\n', OK)], indirect=True)
async def test_an_error_status_is_mapped_and_its_connection_reused(server: Raw, client: H1UpstreamClient) -> None:
    with pytest.raises(UpstreamError) as err:
        await post(client, server.url)
    assert (err.value.status, err.value.retry_after, err.value.kind) == (429, 7.0, TRANSIENT)
    assert "slow down" in str(err.value)
    assert await post(client, server.url) == b"{}"
    assert server.connections == 1


async def test_no_headers_in_time_is_a_first_byte_timeout() -> None:
    client = H1UpstreamClient("up", first_byte_timeout=0.05)

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await reader.read()
    try:
        async with Raw(silent) as raw:
            with pytest.raises(UpstreamTimeout) as err:
                await post(client, raw.url)
            assert "first byte" in str(err.value)
            await raw.closed.wait()  # the connection was closed, not pooled
            assert client.pool().count == 0
    finally:
        await client.aclose()


async def test_multipart_and_redirects_go_through_aiohttp(client: H1UpstreamClient) -> None:
    import aiohttp

    async def redirect_then_form(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while (req := await read_request(reader)) is not None:
            head = req[0]
            if head.startswith(b"GET /v1/chat/completions"):
                writer.write(b"HTTP/1.1 302 Found\r\nLocation: /final\r\nContent-Length: 0\r\n\r\n")
            elif head.startswith(b"GET /final"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal")
            else:
                ok = b"multipart/form-data" in head and b'name="prompt"' in req[1]
                writer.write(OK if ok else b"HTTP/1.1 400 Bad\r\nContent-Length: 0\r\n\r\n")
            await writer.drain()
    async with Raw(redirect_then_form) as raw:
        resp = await client.send("GET", raw.url, headers={}, follow_redirects=True)
        async with resp:
            assert await resp.read() == b"final"
        form = aiohttp.FormData()
        form.add_field("prompt", "a cat")
        form.add_field("image", b"\x89PNG", filename="frame.png", content_type="image/png")
        resp = await client.send("POST", raw.url, headers={}, body=form)
        async with resp:
            assert await resp.read() == b"{}"
        assert not isinstance(resp, H1UpstreamResponse)


# ------------------------------------------------------------------------------------ TLS
def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting it) for 127.0.0.1."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "raven-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pem = tmp / "cert.pem"
    pem.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile = tmp / "key.pem"
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(pem, keyfile)
    trusting = ssl.create_default_context(cafile=str(pem))
    return server, trusting


async def test_https_with_a_trusted_certificate_and_refused_without(tmp_path: Path) -> None:
    server_ctx, trusting = _self_signed(tmp_path)
    raw = Raw(lambda r, w: asyncio.sleep(0), ssl_ctx=server_ctx)
    raw.handler = raw.serve(OK)
    good = H1UpstreamClient("up", ssl_context=trusting)
    default = H1UpstreamClient("up")  # the system trust store: does not know this certificate
    try:
        async with raw:
            assert await post(good, raw.url) == b"{}"
            assert await post(good, raw.url) == b"{}"
            assert raw.connections == 1
            with pytest.raises(UpstreamError) as err:
                await post(default, raw.url)
            assert err.value.kind == TRANSIENT and "TLS error" in str(err.value)
    finally:
        await good.aclose()
        await default.aclose()
