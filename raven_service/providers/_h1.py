"""Upstream HTTP/1.1 on httptools: the default transport of every adapter's JSON and SSE calls.

Why not aiohttp for these: a chat completion through aiohttp's client costs ~150 us of CPU per call
here (yarl URL parsing, multidicts, tracing hooks, the timer context, the payload writer), against
~25 us for a keep-alive connection that writes one prebuilt request and feeds the reply to
llhttp (httptools). That difference is ~15 % of the router's whole CPU per request (see
docs/performance.md). `H1UpstreamClient` is a subclass of `_http.UpstreamClient` with the same
interface, timeouts and error classes, so adapters never know which one they hold; it hands the
two things it does not do to aiohttp (its base class): multipart bodies (``aiohttp.FormData``)
and requests that follow redirects.

What it does:

- one keep-alive pool per client (provider): LIFO per origin, at most `limit` connections in all
  (connecting, busy or idle; a request that finds none free waits for one, within its first-byte
  deadline), an idle connection dropped once it has been idle `keepalive_timeout` s or the
  server closed it;
- ``http://`` and ``https://`` (the system trust store, SNI, ALPN ``http/1.1``), TCP_NODELAY;
- request: ``METHOD target HTTP/1.1``, ``Host``, the caller's headers (CR/LF refused: no header
  injection), ``Content-Length``, ``Accept-Encoding: identity``; no cookies, no proxies;
- response: status, headers (a plain dict, names lower case), a body by Content-Length, chunked or
  read to the close; gzip / deflate bodies are decoded (an upstream may compress unasked) as they
  are read, `DECODE_STEP` at a time, so a small compressed body that expands a thousandfold never
  holds the loop or the memory;
- back-pressure: reading from the socket pauses while more than 256 KiB of body waits unread, so
  a slow consumer never makes Raven buffer an upstream's whole stream;
- a connection is reused only when its response was read to the end and the server allows it
  (``should_keep_alive``); closing a response early closes its connection, so the upstream sees
  the client go and stops generating;
- a request whose reused connection closes before any byte of the answer (the server's idle
  timeout racing the reuse) is sent once more, at once, on a new connection.

Failures map to the same `core.errors` classes as aiohttp's in `_http.error_from_transport`:
connect refused / DNS / TLS, a connection closed before the response or in its body, and a
malformed response (not retryable: `BROKEN`); the connect timeout gives `UpstreamTimeout`.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
import zlib
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

import aiohttp
import httptools

from raven_service.core.deadline import within, within_at
from raven_service.core.errors import BROKEN, TRANSIENT, UpstreamError, UpstreamTimeout
from raven_service.providers._http import UpstreamClient, UpstreamResponse, error_from_status, scrub

if TYPE_CHECKING:
    from raven_service.providers.settings import UpstreamSettings

__all__ = ["H1UpstreamClient", "H1UpstreamResponse"]

#: Unread body bytes above which reading from the socket pauses, and below which it resumes.
HIGH_WATER = 256 * 1024
#: The most decoded bytes one step of decompression produces (a compressed body is decoded as it is
#: read: 16 KiB of gzip can hold 16 MiB, which decoded at once would hold the loop and the memory).
DECODE_STEP = 64 * 1024
#: Parsed request targets kept per client (URLs are the provider's few endpoints, or media URLs).
_TARGET_CACHE = 512
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"
_SAFE_QUERY = _SAFE_PATH + "?"


class _Failure(Exception):
    """What went wrong on a connection, mapped to an UpstreamError by the client."""

    def __init__(self, what: str, *, retryable: bool) -> None:
        super().__init__(what)
        self.what = what
        self.retryable = retryable


class _ConnectTimeout(_Failure):
    """The TCP (and TLS) connect took longer than the connect timeout."""


class _Origin:
    __slots__ = ("host", "host_header", "key", "port", "tls")

    def __init__(self, tls: bool, host: str, port: int) -> None:
        self.tls, self.host, self.port = tls, host, port
        default = 443 if tls else 80
        name = f"[{host}]" if ":" in host else host
        self.host_header = name if port == default else f"{name}:{port}"
        self.key = (tls, host, port)


class _Connection(asyncio.Protocol):
    """One keep-alive connection and the response it is reading."""

    def __init__(self, pool: _Pool, origin: _Origin) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.counted = True  # counts against the pool's limit until forgotten
        self.idle_since = 0.0
        self.busy = False
        self.reused = False  # this request went on a connection an earlier response kept alive
        self.answered = False  # a byte of this request's response arrived
        self._waiter: asyncio.Future[None] | None = None
        self._header_names: list[bytes] = []
        self._header_values: list[bytes] = []
        self.status = 0
        self.headers: dict[str, str] = {}
        self.headers_done = False
        self.eof = False
        self.keep_alive = False
        self.failure: _Failure | None = None
        self._body: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._paused = False
        self._to_close = False  # the body runs to the connection's close
        self._decoder: Any = None
        self._coded: collections.deque[bytes] = collections.deque()  # compressed bytes not decoded yet
        self._decoded_any = False
        self._raw_deflate = False
        self._ended = False  # the body ended on the wire (`eof` once its compressed rest is decoded)

    # ---------------------------------------------------------------- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a stream transport (uvloop's is not a subclass)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        if not self.busy or self.eof:  # nothing was asked on this connection: it cannot be trusted any more
            self.keep_alive = False
            self.close()
            return
        self.answered = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(_Failure("unexpected protocol upgrade", retryable=False))
        except httptools.HttpParserError as exc:
            self._fail(_Failure(f"malformed HTTP response ({type(exc).__name__})", retryable=False))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.busy and not self.eof and self.failure is None:
            if self.headers_done and self._to_close:
                self.keep_alive = False
                self._ended = True  # a body delimited by the close: this was its end
                if not self._coded:
                    self._end()
            elif self.headers_done:
                self.failure = _Failure("response body was cut off", retryable=True)
            else:
                self.failure = _Failure("server closed the connection", retryable=True)
        self._wake()
        self.pool.forget(self)

    # ---------------------------------------------------------------- httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_names.append(name)
        self._header_values.append(value)

    def on_headers_complete(self) -> None:
        if self.eof:  # a second response after the one asked for: the connection is not trusted
            self.keep_alive = False
            return
        status = self.parser.get_status_code()
        names, values = self._header_names, self._header_values
        self._header_names, self._header_values = [], []
        if 100 <= status < 200:  # an interim response (100 Continue, 103 Early Hints): the real one follows
            return
        headers: dict[str, str] = {}
        for raw_name, raw_value in zip(names, values, strict=True):
            name = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1").strip()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self.status = status
        self.headers = headers
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()
        chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self._to_close = not chunked and "content-length" not in headers and status not in (204, 304)
        encoding = headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()  # zlib-wrapped; a raw deflate stream is retried below
        elif encoding not in ("", "identity"):
            self._fail(_Failure(f"unsupported content encoding {encoding[:20]!r}", retryable=False))
            return
        self._wake()

    def on_body(self, body: bytes) -> None:
        if not self.headers_done or self._ended:
            return  # an interim response's body (there is none in practice)
        if self._decoder is None:
            self._push(body)
        else:
            self._coded.append(body)
            self._decode()

    def on_message_complete(self) -> None:
        if not self.headers_done or self._ended:
            return  # the end of an interim response
        self._ended = True
        if not self._coded:
            self._end()

    # ---------------------------------------------------------------- the body
    def _push(self, data: bytes) -> None:
        self._body.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._pause()
        self._wake()

    def _decode(self) -> None:
        """Decodes compressed bytes, DECODE_STEP of output at a time, while less than HIGH_WATER
        waits unread; the socket stays paused while compressed bytes wait."""
        coded, decoder = self._coded, self._decoder
        while coded and self._buffered < HIGH_WATER:
            try:
                out = decoder.decompress(coded[0], DECODE_STEP)
            except zlib.error:
                if self._decoded_any or self._raw_deflate:
                    self._fail(_Failure("response body could not be decoded", retryable=False))
                    return
                self._raw_deflate = True  # some servers send raw deflate for "deflate"
                decoder = self._decoder = zlib.decompressobj(-zlib.MAX_WBITS)
                continue
            self._decoded_any = True
            if decoder.unconsumed_tail:
                coded[0] = decoder.unconsumed_tail
            else:
                coded.popleft()
            if out:
                self._push(out)
        if coded:
            self._pause()
        elif self._ended and not self.eof:
            self._end()

    def _end(self) -> None:
        if self._decoder is not None:
            with contextlib.suppress(zlib.error):
                rest = self._decoder.flush()
                if rest:
                    self._body.append(rest)
                    self._buffered += len(rest)
        self.eof = True
        self._wake()

    def _pause(self) -> None:
        if not self._paused and not self.closed and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    # ---------------------------------------------------------------- the client's side
    def begin(self) -> None:
        """Readies the connection for a new request."""
        self.busy = True
        self.answered = False
        self.status = 0
        self.headers = {}
        self.headers_done = self.eof = self.keep_alive = self._to_close = False
        self._decoder = None
        self._coded.clear()
        self._decoded_any = self._raw_deflate = self._ended = False
        self._body.clear()
        self._buffered = 0

    async def wait(self) -> None:
        """Until something happens: headers, body, the end, a failure."""
        waiter = self._waiter = self.pool.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    def take(self) -> bytes:
        """Every body byte that has arrived and been decoded (b"" if none: a compressed piece may
        decode to nothing); the next step of a compressed body is decoded after it."""
        body = self._body
        if not body and self._coded:
            self._decode()
        if not body:
            return b""
        data = body.popleft() if len(body) == 1 else b"".join(body)
        body.clear()
        self._buffered = 0
        if self._coded:
            self._decode()
        if self._paused and not self._coded and not self.closed and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    @property
    def has_body(self) -> bool:
        """Whether body bytes wait: decoded, or compressed ones `take` will decode."""
        return bool(self._body) or bool(self._coded)

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, failure: _Failure) -> None:
        if self.failure is None:
            self.failure = failure
        self._coded.clear()
        self.close()
        self._wake()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()  # connection_lost follows, which forgets it in the pool
        else:
            self.pool.forget(self)


class _Pool:
    """Keep-alive connections by origin, at most `limit` of them at once."""

    def __init__(self, client: H1UpstreamClient, loop: asyncio.AbstractEventLoop) -> None:
        self.client = client
        self.loop = loop
        self.limit = client._limit
        self.keepalive = client._keepalive_timeout
        self.count = 0
        self.idle: dict[tuple[bool, str, int], collections.deque[_Connection]] = {}
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._ssl: ssl.SSLContext | None = client.ssl_context
        self.closed = False

    async def acquire(self, origin: _Origin, *, fresh: bool = False) -> _Connection:
        """A free connection to `origin`: an idle one (unless `fresh`), else a new one (waiting for room)."""
        idle = self.idle.get(origin.key)
        if idle is not None and not fresh:
            now = self.loop.time()
            while idle:
                conn = idle.pop()
                if conn.closed:
                    continue
                if now - conn.idle_since > self.keepalive:
                    conn.close()
                    continue
                conn.begin()
                conn.reused = True
                return conn
            del self.idle[origin.key]  # no entry per origin ever seen (media URLs name many hosts)
        while self.count >= self.limit:
            if not self._evict_idle():
                waiter = self.loop.create_future()
                self.waiters.append(waiter)
                try:
                    await waiter
                except BaseException:
                    if waiter.done() and not waiter.cancelled():
                        self._wake_one()  # woken, then cancelled: pass the room on
                    else:
                        with contextlib.suppress(ValueError):
                            self.waiters.remove(waiter)
                    raise
                idle = self.idle.get(origin.key)
                while idle and not fresh:  # a connection to this origin may have come back meanwhile
                    conn = idle.pop()
                    if not conn.closed:
                        conn.begin()
                        conn.reused = True
                        return conn
        self.count += 1
        try:
            conn = await self._connect(origin)
        except BaseException:
            self.count -= 1
            self._wake_one()
            raise
        conn.begin()
        conn.reused = False
        return conn

    async def _connect(self, origin: _Origin) -> _Connection:
        tls: ssl.SSLContext | None = None
        if origin.tls:
            tls = self._ssl
            if tls is None:
                tls = self._ssl = ssl.create_default_context()
                tls.set_alpn_protocols(["http/1.1"])
        conn = _Connection(self, origin)
        try:
            async with within(self.client.connect_timeout):
                await self.loop.create_connection(
                    lambda: conn, origin.host, origin.port, ssl=tls,
                    server_hostname=origin.host if tls is not None else None,
                )
        except TimeoutError:
            conn.counted = False
            if conn.transport is not None:
                conn.transport.close()
            raise _ConnectTimeout("timed out connecting", retryable=True) from None
        except (ssl.SSLError, ssl.CertificateError):
            conn.counted = False
            raise _Failure(f"cannot connect to {origin.host}:{origin.port} (TLS error)", retryable=True) from None
        except socket.gaierror:
            conn.counted = False
            raise _Failure(f"cannot connect to {origin.host}:{origin.port} (DNS lookup failed)",
                           retryable=True) from None
        except OSError:
            conn.counted = False
            raise _Failure(f"cannot connect to {origin.host}:{origin.port}", retryable=True) from None
        return conn

    def release(self, conn: _Connection) -> None:
        """Back to the idle pool if it can carry another request, else closed."""
        conn.busy = False
        if conn.closed or self.closed or not conn.keep_alive or conn.failure is not None:
            conn.close()
            return
        conn.idle_since = self.loop.time()
        idle = self.idle.get(conn.origin.key)
        if idle is None:
            idle = self.idle[conn.origin.key] = collections.deque()
        idle.append(conn)
        # the least recently used end: drop what has been idle too long
        while idle and (idle[0].closed or conn.idle_since - idle[0].idle_since > self.keepalive):
            idle.popleft().close()
        self._wake_one()

    def discard(self, conn: _Connection) -> None:
        """Closes a connection whose response was not read to its end."""
        conn.busy = False
        conn.close()

    def forget(self, conn: _Connection) -> None:
        """A connection closed: it no longer counts against the limit."""
        if conn.counted:
            conn.counted = False
            self.count -= 1
            self._wake_one()

    def _evict_idle(self) -> bool:
        """Closes the longest-idle connection to any origin, to make room; False if none is idle."""
        oldest: _Connection | None = None
        for idle in self.idle.values():
            while idle and idle[0].closed:
                idle.popleft()
            if idle and (oldest is None or idle[0].idle_since < oldest.idle_since):
                oldest = idle[0]
        if oldest is None:
            return False
        self.idle[oldest.origin.key].popleft()
        oldest.counted = False  # its room is taken at once, not when its close completes
        self.count -= 1
        oldest.close()
        return True

    def _wake_one(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        self.closed = True
        for idle in self.idle.values():
            while idle:
                idle.pop().close()
        self.idle.clear()


class H1UpstreamResponse(UpstreamResponse):
    """A 2xx upstream response on an `H1UpstreamClient` connection; the `UpstreamResponse`
    interface (``status``, ``headers``, ``content_type``, ``at_eof``, ``chunk``, ``read``,
    ``finish``, ``close``)."""

    __slots__ = ("_conn", "_done")

    # The base class's slots; this class uses _client, _deadline, _first, headers and status only.
    _client: H1UpstreamClient
    headers: dict[str, str]  # type: ignore[assignment]  # a plain dict (names lower case), not a multidict

    def __init__(self, client: H1UpstreamClient, conn: _Connection, deadline: float) -> None:
        self._client = client
        self._conn = conn
        self._deadline = deadline
        self._first = True
        self._done = False
        self.status = conn.status
        self.headers = conn.headers

    @property
    def http_version(self) -> str:
        return "HTTP/1.1"

    @property
    def content_type(self) -> str:
        raw = self.headers.get("content-type", "")
        return raw.partition(";")[0].strip().lower() or "application/octet-stream"

    @property
    def at_eof(self) -> bool:
        return self._conn.eof

    async def chunk(self) -> bytes:
        conn = self._conn
        while True:
            if conn.has_body and (data := conn.take()):
                self._first = False
                return data
            if conn.has_body:
                continue  # compressed bytes that decoded to nothing yet
            if conn.eof:
                return b""
            if conn.failure is not None:
                raise self._client.failure_error(conn.failure)
            if self._done:
                raise UpstreamError(f"upstream {self._client.provider!r}: response already closed",
                                    provider=self._client.provider, kind=BROKEN)
            try:
                if self._first:
                    async with within_at(self._deadline):
                        await conn.wait()
                else:
                    async with within(self._client.idle_timeout):
                        await conn.wait()
            except TimeoutError:
                raise self._client.timeout_error("first byte" if self._first else "idle") from None

    async def finish(self, grace: float = 0.5) -> None:
        conn = self._conn
        with contextlib.suppress(TimeoutError):
            async with within(grace):
                while not conn.eof and conn.failure is None and not conn.closed:
                    if conn.has_body:
                        conn.take()
                        await asyncio.sleep(0)  # a long compressed rest is decoded a step per iteration
                    else:
                        await conn.wait()
        conn.take()
        self.close()

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.eof and conn.failure is None:
            conn.take()
            conn.pool.release(conn)
        else:
            conn.pool.discard(conn)


class H1UpstreamClient(UpstreamClient):
    """One provider's HTTP/1.1 client on httptools (see the module doc); multipart bodies and
    redirect-following requests go through the aiohttp base class."""

    def __init__(self, provider: str, *, ssl_context: ssl.SSLContext | None = None, **kwargs: Any) -> None:
        super().__init__(provider, **kwargs)
        #: TLS settings for https upstreams (None: the system trust store, made on first use).
        self.ssl_context = ssl_context
        self._pool: _Pool | None = None
        self._targets: dict[str, tuple[_Origin, bytes]] = {}

    @classmethod
    def from_config(cls, provider: str, cfg: UpstreamSettings, **kwargs: Any) -> H1UpstreamClient:
        return cls(
            provider,
            connect_timeout=cfg.connect_timeout,
            first_byte_timeout=cfg.first_byte_timeout,
            idle_timeout=cfg.idle_timeout,
            **kwargs,
        )

    def pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        pool = self._pool
        if pool is None or pool.loop is not loop or pool.closed:
            pool = self._pool = _Pool(self, loop)
        return pool

    def failure_error(self, failure: _Failure) -> UpstreamError:
        if isinstance(failure, _ConnectTimeout):
            return UpstreamTimeout(f"upstream {self.provider!r}: timed out connecting", provider=self.provider)
        message = scrub(f"upstream {self.provider!r}: {failure.what}", self.secrets)
        return UpstreamError(message, provider=self.provider, retryable=failure.retryable,
                             kind=TRANSIENT if failure.retryable else BROKEN)

    def _target(self, url: str) -> tuple[_Origin, bytes]:
        found = self._targets.get(url)
        if found is not None:
            return found
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"upstream {self.provider!r}: unsupported URL scheme {scheme[:10]!r}",
                                provider=self.provider, kind=BROKEN)
        tls = scheme == "https"
        try:
            port = parts.port or (443 if tls else 80)
        except ValueError:
            raise UpstreamError(f"upstream {self.provider!r}: invalid URL port", provider=self.provider,
                                kind=BROKEN) from None
        path = quote(parts.path or "/", safe=_SAFE_PATH)
        if parts.query:
            path += "?" + quote(parts.query, safe=_SAFE_QUERY)
        found = (_Origin(tls, parts.hostname, port), path.encode("ascii"))
        if len(self._targets) >= _TARGET_CACHE:
            self._targets.clear()
        self._targets[url] = found
        return found

    def _head(self, method: str, origin: _Origin, target: bytes, headers: Mapping[str, str],
              body: bytes | None) -> bytes:
        lines = [f"{method} ", target.decode("ascii"), f" HTTP/1.1\r\nHost: {origin.host_header}\r\n"]
        skip = False
        for name, value in headers.items():
            if "\r" in name or "\n" in name or ":" in name or "\r" in value or "\n" in value:
                raise UpstreamError(f"upstream {self.provider!r}: invalid request header", provider=self.provider,
                                    kind=BROKEN)
            lower = name.lower()
            if lower in ("host", "content-length", "transfer-encoding", "connection", "accept-encoding"):
                skip = skip or lower == "accept-encoding"
                if lower != "accept-encoding":
                    continue
            lines.append(f"{name}: {value}\r\n")
        if not skip:
            lines.append("Accept-Encoding: identity\r\n")
        if body is not None or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {0 if body is None else len(body)}\r\n")
        lines.append("\r\n")
        return "".join(lines).encode("latin-1")

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | aiohttp.FormData | None = None,
        error_limit: int = 64 * 1024,
        follow_redirects: bool = False,
    ) -> UpstreamResponse:
        if follow_redirects or not (body is None or isinstance(body, bytes)):
            return await super().send(method, url, headers=headers, body=body, error_limit=error_limit,
                                      follow_redirects=follow_redirects)
        origin, target = self._target(url)
        try:
            head = self._head(method, origin, target, headers, body)
        except UnicodeEncodeError:
            raise UpstreamError(f"upstream {self.provider!r}: invalid request header", provider=self.provider,
                                kind=BROKEN) from None
        pool = self.pool()
        deadline = pool.loop.time() + self.first_byte_timeout
        fresh = False
        while True:
            conn: _Connection | None = None
            try:
                async with within_at(deadline):
                    conn = await pool.acquire(origin, fresh=fresh)
                    transport = conn.transport
                    assert transport is not None
                    if body and len(body) > 65536:
                        transport.write(head)
                        transport.write(body)
                    else:
                        transport.write(head + body if body else head)
                    while not conn.headers_done and conn.failure is None:
                        await conn.wait()
            except TimeoutError:
                if conn is not None:
                    pool.discard(conn)
                raise self.timeout_error("first byte") from None
            except _Failure as failure:
                raise self.failure_error(failure) from None
            except BaseException:
                if conn is not None:
                    pool.discard(conn)
                raise
            if conn.failure is None:
                break
            lost = conn.failure
            pool.discard(conn)
            if conn.reused and not conn.answered and not fresh:
                # The server closed a kept-alive connection as the request went out (its idle
                # timeout raced our reuse): no byte of an answer came, so once more, at once, on a
                # new connection (RFC 9112 §9.3.1), rather than a transient failure for the router
                # to back off from.
                fresh = True
                continue
            raise self.failure_error(lost)
        if 200 <= conn.status < 300:
            return H1UpstreamResponse(self, conn, deadline)
        body_bytes = await self._error_body(pool, conn, deadline, error_limit)
        raise error_from_status(self.provider, conn.status, conn.headers, body_bytes, secrets=self.secrets)

    async def _error_body(self, pool: _Pool, conn: _Connection, deadline: float, limit: int) -> bytes:
        """Up to `limit` bytes of a non-2xx response's body (whatever arrives in time); then the
        connection goes back to the pool or is closed."""
        parts: list[bytes] = []
        try:
            async with within_at(max(deadline, pool.loop.time() + min(self.idle_timeout, 10.0))):
                size = 0
                while size < limit:
                    if conn.has_body:
                        data = conn.take()
                        parts.append(data)
                        size += len(data)
                        continue
                    if conn.eof or conn.failure is not None:
                        break
                    await conn.wait()
        except TimeoutError:
            pass  # map the status with whatever part of the body arrived
        finally:
            if conn.eof and conn.failure is None:
                conn.take()
                pool.release(conn)
            else:
                pool.discard(conn)
        return b"".join(parts)[:limit]

    async def aclose(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.close()
        await super().aclose()

