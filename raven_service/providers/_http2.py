"""Upstream HTTP/2 for provider adapters: the opt-in (``ProviderConfig.http2``) twin of
`_http.UpstreamClient`, built on ONE shared ``httpx.AsyncClient`` per provider (httpx + h2).

`_client.upstream_client` returns an `H2UpstreamClient` when the provider's config says
``http2 = true``, so adapters never know which one they hold: `H2UpstreamClient` and
`H2UpstreamResponse` subclass `UpstreamClient` / `UpstreamResponse` and keep their public
interface (``send``, ``secrets``, ``timeout_error``, ``transport_error``, ``aclose``; ``status``,
``headers``, ``content_type``, ``at_eof``, ``chunk``, ``read``, ``finish``, ``close``), their
timeouts and their error mapping (statuses through `_http.error_from_status`, httpx failures
through `error_from_httpx`, which gives the same messages and retryability as
`_http.error_from_transport` does for aiohttp).

Protocol choice:

- an ``https://`` upstream is offered HTTP/2 and HTTP/1.1 in the TLS handshake (ALPN) and gets
  whichever it picks: HTTP/2 where offered;
- an ``http://`` upstream (cleartext) has no negotiation, so ``http2 = true`` means HTTP/2 with
  prior knowledge (h2c) for the upstream's own origin (scheme, host, port of ``base_url``); any
  other ``http://`` URL (a media download from another host) still goes over HTTP/1.1.

Every request to one origin shares one multiplexed connection (up to the server's
``MAX_CONCURRENT_STREAMS``, at most 100, streams at once; more wait for a free stream, within
their first-byte deadline).

Timeouts (from `ProviderConfig`), as in `_http`:

- ``connect_timeout``: httpx's connect timeout (TCP + TLS);
- ``first_byte_timeout``: from sending the request until the first body byte (response headers
  included), one asyncio deadline around the send and the first read;
- ``idle_timeout``: the longest gap between two body reads, an asyncio timeout around each read.

httpx's own read timeout is off (a healthy stream may be silent for a while and runs for
minutes); its write timeout is the idle timeout, its pool timeout the first-byte timeout.

Closing a response before its end cancels the HTTP/2 stream with ``RST_STREAM(CANCEL)``, so the
upstream stops generating at once while the connection and its other streams carry on. httpcore
1.0 only forgets an abandoned stream (the server keeps sending, and h2 keeps counting the stream
as open); `_ResettingHTTP2Connection` adds the reset. It hooks httpcore's private
``_response_closed`` (which every early exit goes through: a response closed before its end, a
request cancelled while waiting for its headers, a failed read) and is installed by
`_ResettingPool` / `_ResettingHTTPConnection`. tests/providers/test_http2.py checks that the
server sees the reset, so an httpcore upgrade that breaks this fails there.

Request bodies: bytes, or an ``aiohttp.FormData`` (multipart, e.g. the video first frame), which
is serialised with aiohttp's own multipart writer and sent with its ``Content-Type`` (boundary
included), exactly the bytes aiohttp would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import AsyncIterator, Coroutine, Iterable, Mapping
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import TYPE_CHECKING, Any, NoReturn

import aiohttp
import h2.errors
import h2.exceptions
import httpcore
import httpx

from raven_service.core.deadline import within, within_at
from raven_service.core.errors import BROKEN, TRANSIENT, UpstreamError, UpstreamTimeout
from raven_service.providers._http import (
    UpstreamClient,
    UpstreamResponse,
    error_from_status,
    error_from_transport,
    scrub,
)

if TYPE_CHECKING:
    from raven_service.providers.settings import UpstreamSettings

__all__ = ["H2UpstreamClient", "H2UpstreamResponse", "error_from_httpx"]

#: Write timeout of the RST_STREAM that cancels an abandoned stream.
_RESET_WRITE_TIMEOUT = 5.0
#: Stands in for the request httpcore's write path wants (it only reads its timeout extension).
_RESET_REQUEST = httpcore.Request(
    "GET", "http://reset.invalid/", extensions={"timeout": {"write": _RESET_WRITE_TIMEOUT}}
)


# ---------------------------------------------------------------------------------- error mapping
def error_from_httpx(provider: str, exc: BaseException, *, secrets: Iterable[str] = ()) -> UpstreamError:
    """The core error for an httpx / OS exception raised while talking to the upstream; the
    counterpart of `_http.error_from_transport` (same messages, same retryability)."""
    if not isinstance(exc, httpx.HTTPError):
        return error_from_transport(provider, exc, secrets=secrets)
    if isinstance(exc, httpx.ConnectTimeout):
        return UpstreamTimeout(f"upstream {provider!r}: timed out connecting", provider=provider)
    if isinstance(exc, httpx.TimeoutException):  # write / pool (the read timeout is off)
        return UpstreamTimeout(f"upstream {provider!r}: timed out", provider=provider)
    if isinstance(exc, httpx.ConnectError):
        what = "cannot connect"
        try:
            url = exc.request.url
            what += f" to {url.host}:{url.port or (443 if url.scheme == 'https' else 80)}"
        except RuntimeError:  # no request attached
            pass
        cause = exc.__cause__
        if isinstance(cause, ssl.SSLError):
            what += " (TLS error)"
        elif isinstance(cause, socket.gaierror):
            what += " (DNS lookup failed)"
        message = f"upstream {provider!r}: {what}"
    elif isinstance(exc, httpx.RemoteProtocolError):
        text = str(exc)
        if "StreamReset" in text:
            what = "server reset the stream"
        elif "ConnectionTerminated" in text:
            what = "server closed the connection (GOAWAY)"
        elif "disconnected" in text.lower() or "peer closed" in text.lower():
            what = "server closed the connection"
        else:
            what = "HTTP protocol error"
        message = f"upstream {provider!r}: {what}"
    elif isinstance(exc, httpx.DecodingError):
        message = f"upstream {provider!r}: response body could not be decoded"
    elif isinstance(exc, httpx.NetworkError):  # ReadError, WriteError, CloseError
        message = f"upstream {provider!r}: connection error ({type(exc).__name__})"
    else:  # LocalProtocolError, UnsupportedProtocol, TooManyRedirects, InvalidURL ...: our side
        message = f"upstream {provider!r}: HTTP client error ({type(exc).__name__})"
        return UpstreamError(scrub(message, secrets), provider=provider, retryable=False, kind=BROKEN)
    return UpstreamError(scrub(message, secrets), provider=provider, retryable=True, kind=TRANSIENT)


# ---------------------------------------------------------------------------------- httpcore hooks
class _ResettingHTTP2Connection(httpcore.AsyncHTTP2Connection):
    """httpcore's HTTP/2 connection, except that a stream released before it ended (by either
    side) is cancelled with ``RST_STREAM(CANCEL)``: the upstream stops sending and h2 stops
    counting the stream against ``MAX_CONCURRENT_STREAMS``. The connection itself stays up."""

    async def _response_closed(self, stream_id: int) -> None:
        stream = self._h2_state.streams.get(stream_id)
        if stream is not None and not stream.closed:
            try:
                self._h2_state.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
                await self._write_outgoing_data(_RESET_REQUEST)
            except (h2.exceptions.ProtocolError, httpcore.NetworkError, httpcore.TimeoutException, OSError):
                pass  # the connection is closed or broken: there is nothing left to cancel
        await super()._response_closed(stream_id)


class _ResettingHTTPConnection(httpcore.AsyncHTTPConnection):
    """httpcore's per-origin connection (connect, TLS, ALPN, then HTTP/1.1 or HTTP/2), whose
    HTTP/2 protocol object is a `_ResettingHTTP2Connection`.

    httpcore builds that object inline right after connecting and assigns it to
    ``self._connection``; this property catches the assignment and gives the brand-new (not yet
    used) object the subclass, which adds behaviour only, no state."""

    @property
    def _connection(self) -> httpcore.AsyncConnectionInterface | None:
        return self.__dict__.get("_connection")

    @_connection.setter
    def _connection(self, connection: httpcore.AsyncConnectionInterface | None) -> None:
        if type(connection) is httpcore.AsyncHTTP2Connection:
            connection.__class__ = _ResettingHTTP2Connection
        self.__dict__["_connection"] = connection


class _ResettingPool(httpcore.AsyncConnectionPool):
    """httpcore's connection pool creating `_ResettingHTTPConnection` s (no proxy is ever set:
    the client ignores the environment, like the aiohttp one)."""

    def create_connection(self, origin: httpcore.Origin) -> httpcore.AsyncConnectionInterface:
        if self._proxy is not None:  # pragma: no cover - never configured
            return super().create_connection(origin)
        return _ResettingHTTPConnection(
            origin=origin,
            ssl_context=self._ssl_context,
            keepalive_expiry=self._keepalive_expiry,
            http1=self._http1,
            http2=self._http2,
            retries=self._retries,
            local_address=self._local_address,
            uds=self._uds,
            network_backend=self._network_backend,
            socket_options=self._socket_options,
        )


class _Transport(httpx.AsyncHTTPTransport):
    """httpx's transport over a `_ResettingPool` configured exactly as httpx configures its own."""

    def __init__(self, *, http1: bool, limits: httpx.Limits) -> None:
        super().__init__(http1=http1, http2=True, limits=limits, trust_env=False, retries=0)
        stock = self._pool
        assert isinstance(stock, httpcore.AsyncConnectionPool)
        self._pool = _ResettingPool(
            ssl_context=stock._ssl_context,
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            http1=http1,
            http2=True,
            retries=0,
        )


def _refuse_cookies() -> httpx.Cookies:
    """A cookie jar that never stores a cookie (the aiohttp client uses a DummyCookieJar)."""
    return httpx.Cookies(CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])))


def _h2c_origin(base_url: str) -> str | None:
    """The httpx mount pattern of a cleartext upstream's origin (``http://host:port``), or None
    for an ``https://`` (or empty) base URL."""
    if not base_url.startswith("http://"):
        return None
    url = httpx.URL(base_url)
    return f"http://{url.netloc.decode('ascii')}"


async def _encode_body(
    body: bytes | aiohttp.FormData | None, headers: Mapping[str, str]
) -> tuple[bytes | None, Mapping[str, str]]:
    """The request body as bytes, with the Content-Type of a form (unless the caller set one)."""
    if not isinstance(body, aiohttp.FormData):
        return body, headers
    payload = body()  # aiohttp's own serialisation: multipart/form-data or urlencoded
    content = await payload.as_bytes()
    if any(name.lower() == "content-type" for name in headers):
        return content, headers
    return content, {**headers, "Content-Type": payload.content_type}


# ---------------------------------------------------------------------------------- response
class H2UpstreamResponse(UpstreamResponse):
    """An upstream response over httpx whose status was 2xx; the `UpstreamResponse` interface.

    `close()` (or ``async with``) before the end of the body cancels the HTTP/2 stream (or, on a
    connection that negotiated HTTP/1.1, closes it); a fully read response has already released
    its stream.
    """

    __slots__ = ("_chunks", "_closed", "_eof")

    # The base class's slots, holding the httpx twins of its aiohttp objects (deliberately the same
    # slots: adapters see one interface). Annotations only: no class attributes, so no slot clash.
    _client: H2UpstreamClient
    _resp: httpx.Response  # type: ignore[assignment]  # deliberate: an httpx response in the aiohttp slot
    _content: None  # type: ignore[assignment]  # unused here: httpx has no aiohttp StreamReader
    headers: httpx.Headers  # type: ignore[assignment]  # deliberate: httpx headers in the aiohttp slot

    def __init__(self, client: H2UpstreamClient, resp: httpx.Response, deadline: float) -> None:
        self._client = client
        self._resp = resp
        self._content = None
        self._deadline = deadline  # loop time by which the first body byte must arrive
        self._first = True
        self.status = resp.status_code
        self.headers = resp.headers
        self._chunks: AsyncIterator[bytes] = resp.aiter_bytes()  # decoded (gzip, deflate ...)
        self._eof = False
        self._closed = False

    @property
    def http_version(self) -> str:
        """The protocol the response came over: ``HTTP/2`` or ``HTTP/1.1``."""
        return str(self._resp.http_version)

    @property
    def content_type(self) -> str:
        """The media type (lower case, no parameters), ``application/octet-stream`` if absent."""
        raw = self._resp.headers.get("content-type", "")
        return raw.partition(";")[0].strip().lower() or "application/octet-stream"

    @property
    def at_eof(self) -> bool:
        """Whether the whole body has been read (HTTP/2 data cannot be peeked at: a body whose
        end arrived but was not read yet counts as not at its end)."""
        return self._eof

    async def chunk(self) -> bytes:
        """The next piece of the body (whatever has arrived), b"" at its end.

        Raises UpstreamTimeout when the first byte misses its deadline or a later read waits
        longer than the idle timeout, UpstreamError when the connection or stream fails."""
        if self._eof:
            return b""
        client = self._client
        if self._closed:
            raise UpstreamError(f"upstream {client.provider!r}: response already closed", provider=client.provider)
        which = "first byte" if self._first else "idle"
        try:
            if self._first:
                async with within_at(self._deadline):
                    data = await anext(self._chunks, b"")
            else:
                async with within(client.idle_timeout):
                    data = await anext(self._chunks, b"")
        except httpx.HTTPError as exc:  # before TimeoutError: httpx's timeouts are not TimeoutErrors
            raise client.transport_error(exc) from None
        except TimeoutError:
            raise client.timeout_error(which) from None
        except OSError as exc:
            raise client.transport_error(exc) from None
        if data:
            self._first = False
        else:
            self._eof = True
        return data

    async def finish(self, grace: float = 0.5) -> None:
        """Leaves a response whose meaningful content has been consumed: waits up to `grace` s
        for the rest of the body (so the stream ends without a reset), else cancels it."""
        try:
            async with within(grace):
                while not self._eof and not self._closed:
                    if not await anext(self._chunks, b""):
                        self._eof = True
        except (TimeoutError, httpx.HTTPError, OSError):
            pass
        await self.aclose()

    async def aclose(self) -> None:
        """`close()`, awaited: the stream is released (or cancelled) when this returns."""
        if self._closed:
            return
        self._closed = True
        await self._release()

    def close(self) -> None:
        """Releases the stream if the body was fully read, else cancels it (``RST_STREAM``).
        Synchronous like `UpstreamResponse.close`: the cancel is sent by a task the client
        tracks (and `H2UpstreamClient.aclose` waits for)."""
        if self._closed:
            return
        self._closed = True
        if self._eof and self._resp.is_closed:
            return  # httpx released the stream at the end of the body
        self._client._in_background(self._release())

    async def _release(self) -> None:
        # RuntimeError: the iterator is running in another task or already failed; closing the
        # response below is what releases (or cancels) the stream anyway.
        with contextlib.suppress(RuntimeError, httpx.HTTPError, OSError):
            await self._chunks.aclose()  # type: ignore[attr-defined]  # an async generator; httpx says AsyncIterator
        with contextlib.suppress(httpx.HTTPError, OSError):
            await self._resp.aclose()


# ---------------------------------------------------------------------------------- client
class H2UpstreamClient(UpstreamClient):
    """One provider's HTTP/2 client: a lazily created, shared ``httpx.AsyncClient`` (one
    multiplexed connection per origin, no cookie jar, environment ignored), its timeouts, and
    error mapping bound to its name/secrets.

    The httpx client is created inside the running event loop on first use (and again if the
    provider is later used from another loop); `aclose()` closes it.
    """

    def __init__(
        self,
        provider: str,
        *,
        base_url: str = "",
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 120.0,
        idle_timeout: float = 60.0,
        limit: int = 256,
        ttl_dns_cache: int = 300,
        keepalive_timeout: float = 30.0,
    ) -> None:
        super().__init__(
            provider,
            connect_timeout=connect_timeout,
            first_byte_timeout=first_byte_timeout,
            idle_timeout=idle_timeout,
            limit=limit,
            ttl_dns_cache=ttl_dns_cache,  # unused: httpcore resolves on each new connection
            keepalive_timeout=keepalive_timeout,
        )
        self._h2c = _h2c_origin(base_url)
        self._client: httpx.AsyncClient | None = None
        self._background: set[asyncio.Task[None]] = set()

    @classmethod
    def from_config(cls, provider: str, cfg: UpstreamSettings, **kwargs: Any) -> H2UpstreamClient:
        """A client for `cfg`'s base URL with its connect / first-byte / idle timeouts."""
        return cls(
            provider,
            base_url=cfg.base_url,
            connect_timeout=cfg.connect_timeout,
            first_byte_timeout=cfg.first_byte_timeout,
            idle_timeout=cfg.idle_timeout,
            **kwargs,
        )

    def session(self) -> NoReturn:
        """Not available: this client has no aiohttp session (see `client()`)."""
        raise TypeError(f"provider {self.provider!r} speaks HTTP/2 through httpx: use client(), not session()")

    def client(self) -> httpx.AsyncClient:
        """The shared httpx client for the running loop (created on first use)."""
        loop = asyncio.get_running_loop()
        client = self._client
        if client is None or client.is_closed or self._loop is not loop:
            limits = httpx.Limits(
                max_connections=self._limit,
                max_keepalive_connections=self._limit,
                keepalive_expiry=self._keepalive_timeout,
            )
            mounts: dict[str, httpx.AsyncBaseTransport | None] = {}
            if self._h2c is not None:  # cleartext: HTTP/2 with prior knowledge, for this origin only
                mounts[self._h2c] = _Transport(http1=False, limits=limits)
            client = httpx.AsyncClient(
                http2=True,
                transport=_Transport(http1=True, limits=limits),  # ALPN: h2 where offered, else HTTP/1.1
                mounts=mounts,
                limits=limits,
                timeout=httpx.Timeout(
                    connect=self.connect_timeout, read=None, write=self.idle_timeout, pool=self.first_byte_timeout
                ),
                cookies=_refuse_cookies(),
                follow_redirects=False,
                trust_env=False,
            )
            self._client, self._loop = client, loop
        return client

    def transport_error(self, exc: BaseException) -> UpstreamError:
        return error_from_httpx(self.provider, exc, secrets=self.secrets)

    def _in_background(self, coro: Coroutine[Any, Any, None]) -> None:
        """Runs `coro` (a response release) as a task `aclose()` waits for."""
        try:
            task = asyncio.get_running_loop().create_task(coro)
        except RuntimeError:  # no running loop (interpreter shutdown): nothing can be sent anyway
            coro.close()
            return
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def send(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        body: bytes | aiohttp.FormData | None = None,
        error_limit: int = 64 * 1024,
        follow_redirects: bool = False,
    ) -> H2UpstreamResponse:
        """Sends a request and waits (within the first-byte deadline) for the response headers.

        A 2xx answer comes back as an `H2UpstreamResponse` (the caller must close it); any other
        status is read (up to `error_limit` bytes), closed and raised as the mapped UpstreamError.
        Redirects are not followed unless asked (API calls never need them; CDN downloads may).
        """
        client = self.client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_byte_timeout
        content, headers = await _encode_body(body, headers)
        try:
            async with within_at(deadline):
                request = client.build_request(method, url, headers=headers, content=content)
                resp = await client.send(request, stream=True, follow_redirects=follow_redirects)
        except httpx.HTTPError as exc:  # before TimeoutError: httpx's timeouts are not TimeoutErrors
            raise self.transport_error(exc) from None
        except TimeoutError:
            raise self.timeout_error("first byte") from None
        except OSError as exc:
            raise self.transport_error(exc) from None
        if 200 <= resp.status_code < 300:
            return H2UpstreamResponse(self, resp, deadline)
        parts: list[bytes] = []
        chunks = resp.aiter_bytes()
        try:
            async with within_at(max(deadline, loop.time() + min(self.idle_timeout, 10.0))):
                size = 0
                async for data in chunks:
                    parts.append(data)
                    size += len(data)
                    if size >= error_limit:
                        break
        except (TimeoutError, httpx.HTTPError, OSError):
            pass  # map the status with whatever part of the body arrived
        finally:
            with contextlib.suppress(RuntimeError, httpx.HTTPError, OSError):
                await chunks.aclose()  # type: ignore[attr-defined]  # an async generator; httpx says AsyncIterator
            with contextlib.suppress(httpx.HTTPError, OSError):
                await resp.aclose()  # cancels the stream if the body did not end
        body_bytes = b"".join(parts)[:error_limit]
        raise error_from_status(self.provider, resp.status_code, resp.headers, body_bytes, secrets=self.secrets)

    async def aclose(self) -> None:
        """Waits for pending stream cancellations, then closes the pooled connections."""
        while self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None and not client.is_closed:
            await client.aclose()
