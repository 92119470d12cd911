"""Upstream HTTP for provider adapters: the client interface (`UpstreamClient`, `UpstreamResponse`)
with its aiohttp implementation, the timeouts, and THE one place that maps transport failures and
upstream HTTP statuses to `core.errors`.

Adapters hold an `_h1.H1UpstreamClient` (the default: HTTP/1.1 on httptools, a subclass that hands
multipart bodies and redirect-following requests to the aiohttp code here) or an
`_http2.H2UpstreamClient` (``http2 = true``); `_client.upstream_client` picks.

Error mapping (`UpstreamError.retryable` drives the router's retries and fallbacks):

    connect refused / DNS / TLS / reset / truncated body ... UpstreamError(retryable=True)
    connect, first-byte or idle timeout ..................... UpstreamTimeout (retryable)
    429 ..................................................... retryable, retry_after from the
                                                              Retry-After (seconds or HTTP date)
                                                              or retry-after-ms header
    408, 409, 5xx (529 included) ............................ retryable (retry_after if given)
    any other status >= 300 ................................. UpstreamError(retryable=False)

Every error is classified here, once, as `UpstreamError.kind` (core.errors): ``transient``
(connect errors, timeouts, 429, 408/409, 5xx), ``rejected`` (400/413/415/422 that are not retryable:
the request itself is wrong) or ``broken`` (anything else: our upstream key refused or unset, the
upstream model missing, a malformed reply, a client-side HTTP error). The router and the gRPC edge
act on that class only.

The internal description (``detail``, ``str(exc)``: for the log and the usage record) carries the
upstream's own error message when its body is OpenAI-shaped (``{"error": {"message": ...}}``) or
one of the common variants (``{"error": "..."}``, ``{"message": ...}``, ``{"detail": ...}``), cut
to a sane length. The client-facing ``message`` names the class of failure only; for a rejected
request it adds the upstream's reason, short and with URLs, host:port pairs and paths removed
(`public_reason`). Neither ever carries request headers, and every text passes through `scrub`,
which blanks the provider's secrets (the API key) in case an upstream echoes them back.

Timeouts (from `ProviderConfig`):

- ``connect_timeout``: the TCP (and TLS) connect, enforced by aiohttp's ``sock_connect``;
- ``first_byte_timeout``: from sending the request until the first body byte (response headers
  included), one asyncio deadline;
- ``idle_timeout``: the longest gap between two body reads, an asyncio timeout around each read
  that actually has to wait (data already buffered is taken without arming any timer).

There is deliberately no total timeout: a healthy stream may run for many minutes.

HTTP/2: a provider configured with ``http2 = true`` gets an `_http2.H2UpstreamClient` from
`_client.upstream_client` instead (httpx + h2, one multiplexed connection per origin); it is a
subclass with the same interface, timeouts and error mapping (httpx failures through
`_http2.error_from_httpx`, statuses through `error_from_status` here), so adapters never know
which one they hold.
"""

from __future__ import annotations

import asyncio
import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec

from raven_service.core.deadline import within, within_at
from raven_service.core.errors import BROKEN, REJECTED, TRANSIENT, UpstreamError, UpstreamTimeout

if TYPE_CHECKING:
    from raven_service.providers.settings import UpstreamSettings

__all__ = [
    "UpstreamClient",
    "UpstreamResponse",
    "error_from_payload",
    "error_from_status",
    "error_from_transport",
    "parse_retry_after",
    "public_reason",
    "scrub",
    "upstream_message",
]

MAX_MESSAGE_CHARS = 500
#: The longest upstream reason shown to a client (for rejected requests only).
MAX_PUBLIC_REASON_CHARS = 200
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_HOST_PORT = re.compile(r"\b[\w.-]+:\d{2,5}\b")
_ROUTE_KEY_REFUSED = re.compile(rb'"(?:API_KEY_INVALID|API_KEY_SERVICE_BLOCKED|API_KEY_HTTP_REFERRER_BLOCKED)"')
error_scan_limit = 16 * 1024
_PATH = re.compile(r"(?<![\w.])(?:/[\w.@-]+){2,}/?")
_REDACTED = "[redacted]"
_RETRYABLE_STATUSES = frozenset({408, 409, 429})
#: Statuses that mean the request itself was refused (when not retryable).
_REJECTED_STATUSES = frozenset({400, 413, 415, 422})
#: Error `type` / `code` values in an error payload that mean "the request itself is wrong".
_REJECTED_ERROR_KINDS = frozenset({"invalid_request_error", "invalid_request", "invalid_argument",
                                   "invalid_value", "context_length_exceeded", "INVALID_ARGUMENT",
                                   "moderation_blocked", "content_policy_violation", "content_filter"})
#: Error `type` / `code` values in an OpenAI-shaped error payload that mean "try again".
_RETRYABLE_ERROR_KINDS = frozenset(
    {"server_error", "internal_error", "api_error", "overloaded_error", "rate_limit_error", "rate_limit_exceeded",
     "service_unavailable", "timeout", "requests", "tokens"}
)


# ---------------------------------------------------------------------------------- error mapping
def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with every (non-trivial) secret replaced by ``[redacted]``."""
    for secret in secrets:
        if secret and len(secret) >= 4 and secret in text:
            text = text.replace(secret, _REDACTED)
    return text


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MAX_MESSAGE_CHARS else text[: MAX_MESSAGE_CHARS - 3] + "..."


def _message_from(obj: Any) -> str:
    """The human message inside a decoded error body, or ""."""
    if isinstance(obj, list) and obj:
        obj = obj[0]  # some upstreams wrap the error object in a list
    if not isinstance(obj, dict):
        return obj if isinstance(obj, str) else ""
    err = obj.get("error")
    if isinstance(err, dict):
        msg = err.get("message")
        if isinstance(msg, str) and msg:
            return msg
    elif isinstance(err, str) and err:
        return err
    for key in ("message", "detail"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, list) and value:  # FastAPI validation errors
            first = value[0]
            if isinstance(first, dict) and isinstance(first.get("msg"), str):
                return first["msg"]
    return ""


def public_reason(text: str, secrets: Iterable[str] = ()) -> str:
    """An upstream's reason made fit for a client: secrets, URLs, host:port pairs and file paths
    removed, whitespace collapsed, at most MAX_PUBLIC_REASON_CHARS characters."""
    text = scrub(text, secrets)
    text = _URL.sub("[url]", text)
    text = _HOST_PORT.sub("[address]", text)
    text = _PATH.sub("[path]", text)
    text = " ".join(text.split())
    if len(text) > MAX_PUBLIC_REASON_CHARS:
        text = text[: MAX_PUBLIC_REASON_CHARS - 3] + "..."
    return text


def _rejected_public(reason: str, secrets: Iterable[str]) -> str:
    reason = public_reason(reason, secrets)
    return f"The upstream rejected the request: {reason}" if reason else "The upstream rejected the request."


def upstream_message(body: bytes) -> str:
    """The upstream's error message from a response body: OpenAI-shaped JSON and common variants,
    else the body's text if it is short plain text (never an HTML page), else ""."""
    if not body:
        return ""
    try:
        return _clip(_message_from(msgspec.json.decode(body)))
    except msgspec.DecodeError:
        pass
    text = body[:2000].decode("utf-8", "replace").strip()
    if not text or text.startswith("<"):
        return ""
    return _clip(text)


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (delta-seconds or an HTTP date);
    None when absent or unparseable. Never negative."""
    raw_ms = headers.get("retry-after-ms")
    if raw_ms:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    raw = raw.strip()
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def error_from_status(
    provider: str, status: int, headers: Mapping[str, str], body: bytes, *, secrets: Iterable[str] = ()
) -> UpstreamError:
    """The core error for a non-2xx upstream response."""
    detail = upstream_message(body)
    message = f"upstream {provider!r} returned HTTP {status}" + (f": {detail}" if detail else "")
    message = scrub(message, secrets)
    retryable = status in _RETRYABLE_STATUSES or status >= 500
    retry_after = (parse_retry_after(headers) or _body_retry_delay(body)) if retryable else None
    code = "upstream_rate_limited" if status == 429 else None
    kind = TRANSIENT if retryable else REJECTED if status in _REJECTED_STATUSES else BROKEN
    if kind == REJECTED and _ROUTE_KEY_REFUSED.search(body[:error_scan_limit]):
        kind = BROKEN  # Google answers a wrong API key with 400 API_KEY_INVALID: our key, not the request
    public = None
    if kind == REJECTED:
        public = _rejected_public(detail, secrets)
    elif status == 429:
        public = "The upstream is rate limiting requests. Please retry."
    return UpstreamError(
        message, provider=provider, status=status, retryable=retryable, retry_after=retry_after, code=code,
        kind=kind, public=public,
    )


def _body_retry_delay(body: bytes) -> float | None:
    """Google APIs put the delay in the body, as a google.rpc.RetryInfo detail: {"error": {"details":
    [{"@type": ".../google.rpc.RetryInfo", "retryDelay": "37s"}]}}."""
    if b"RetryInfo" not in body:
        return None
    try:
        details = msgspec.json.decode(body).get("error", {}).get("details", [])
        for detail in details:
            if isinstance(detail, dict) and str(detail.get("@type", "")).endswith("RetryInfo"):
                delay = str(detail.get("retryDelay", "")).removesuffix("s")
                return max(0.0, float(delay))
    except (msgspec.DecodeError, AttributeError, TypeError, ValueError):
        return None
    return None


def error_from_payload(provider: str, error: Any, *, secrets: Iterable[str] = ()) -> UpstreamError:
    """The core error for an ``error`` object sent inside a 200 response (an SSE ``data:``
    payload or a JSON body). Retryable when its type/code says the server failed or was busy
    (the router only acts on that before a stream's first event)."""
    detail = _clip(_message_from({"error": error})) or "unknown error"
    kind = code = None
    status: int | None = None
    if isinstance(error, dict):
        kind, code = error.get("type"), error.get("code")
        for value in (code, error.get("status")):
            if isinstance(value, int) and 100 <= value <= 599:
                status = value
    retryable = (
        (isinstance(kind, str) and kind in _RETRYABLE_ERROR_KINDS)
        or (isinstance(code, str) and code in _RETRYABLE_ERROR_KINDS)
        or (status is not None and (status in _RETRYABLE_STATUSES or status >= 500))
    )
    message = scrub(f"upstream {provider!r} reported an error: {detail}", secrets)
    rejected = not retryable and (
        (status is not None and status in _REJECTED_STATUSES)
        or (isinstance(kind, str) and kind in _REJECTED_ERROR_KINDS)
        or (isinstance(code, str) and code in _REJECTED_ERROR_KINDS)
    )
    if rejected:
        return UpstreamError(message, provider=provider, status=status, retryable=False, kind=REJECTED,
                             public=_rejected_public(detail, secrets))
    return UpstreamError(message, provider=provider, status=status, retryable=retryable,
                         kind=TRANSIENT if retryable else BROKEN)


def error_from_transport(provider: str, exc: BaseException, *, secrets: Iterable[str] = ()) -> UpstreamError:
    """The core error for an aiohttp / OS exception raised while talking to the upstream."""
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return UpstreamTimeout(f"upstream {provider!r}: timed out connecting", provider=provider)
    if isinstance(exc, aiohttp.ServerTimeoutError):
        return UpstreamTimeout(f"upstream {provider!r}: timed out", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorError):
        what = f"cannot connect to {exc.host}:{exc.port}"
        if isinstance(exc, aiohttp.ClientSSLError):
            what += " (TLS error)"
        elif isinstance(exc, aiohttp.ClientConnectorDNSError):
            what += " (DNS lookup failed)"
        message = f"upstream {provider!r}: {what}"
    elif isinstance(exc, aiohttp.ServerDisconnectedError):
        message = f"upstream {provider!r}: server closed the connection"
    elif isinstance(exc, aiohttp.ClientPayloadError):
        message = f"upstream {provider!r}: response body was cut off"
    elif isinstance(exc, (aiohttp.ClientConnectionError, ConnectionError, OSError)):
        message = f"upstream {provider!r}: connection error ({type(exc).__name__})"
    else:
        message = f"upstream {provider!r}: HTTP client error ({type(exc).__name__})"
        return UpstreamError(scrub(message, secrets), provider=provider, retryable=False, kind=BROKEN)
    return UpstreamError(scrub(message, secrets), provider=provider, retryable=True, kind=TRANSIENT)


# ---------------------------------------------------------------------------------- client
class UpstreamResponse:
    """An upstream response whose status was 2xx. Read it with `chunk()` (streams) or `read()`.

    Leave it with `close()` (or ``async with``): a fully read response returns its connection
    to the pool, anything else closes the connection at once so the upstream sees the client go
    (and stops generating).
    """

    __slots__ = ("_client", "_content", "_deadline", "_first", "_resp", "headers", "status")

    def __init__(self, client: UpstreamClient, resp: aiohttp.ClientResponse, deadline: float) -> None:
        self._client = client
        self._resp = resp
        self._content = resp.content
        self._deadline = deadline  # loop time by which the first body byte must arrive
        self._first = True
        self.status = resp.status
        self.headers = resp.headers

    @property
    def content_type(self) -> str:
        """The media type (lower case, no parameters)."""
        return self._resp.content_type.lower()

    @property
    def at_eof(self) -> bool:
        """Whether the whole body has been received (possibly not all read)."""
        return self._content.is_eof()

    async def chunk(self) -> bytes:
        """The next piece of the body (whatever has arrived), b"" at its end.

        Raises UpstreamTimeout when the first byte misses its deadline or a later read waits
        longer than the idle timeout, UpstreamError when the connection fails."""
        content = self._content
        which = "idle"
        try:
            data = content.read_nowait()
            if data:
                self._first = False
                return data
            if content.is_eof():
                return b""
            if self._first:
                which = "first byte"
                async with within_at(self._deadline):
                    data = await content.readany()
                self._first = False
                return data
            async with within(self._client.idle_timeout):
                return await content.readany()
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            if isinstance(exc, aiohttp.ClientError):
                raise self._client.transport_error(exc) from None
            raise self._client.timeout_error(which) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self._client.transport_error(exc) from None

    async def read(self, limit: int | None = None) -> bytes:
        """The whole body (subject to the same timeouts as `chunk`); with `limit`, an
        UpstreamError once it exceeds that many bytes."""
        parts: list[bytes] = []
        size = 0
        while data := await self.chunk():
            parts.append(data)
            size += len(data)
            if limit is not None and size > limit:
                raise UpstreamError(
                    f"upstream {self._client.provider!r}: response larger than {limit} bytes",
                    provider=self._client.provider,
                    kind=BROKEN,
                )
        return parts[0] if len(parts) == 1 else b"".join(parts)

    async def finish(self, grace: float = 0.5) -> None:
        """Leaves a response whose meaningful content has been consumed: waits up to `grace` s
        for the rest of the body so the connection can be reused, else closes it."""
        try:
            async with within(grace):
                while not self._content.is_eof():
                    await self._content.readany()
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass
        self.close()

    def close(self) -> None:
        """Releases the connection to the pool if the body was fully received, else closes it."""
        resp = self._resp
        if resp.closed:
            return
        if self._content.is_eof() and self._content.exception() is None:
            resp.release()
        else:
            resp.close()

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class UpstreamClient:
    """One provider's HTTP client: a lazily created, shared `aiohttp.ClientSession` (keep-alive
    pool, DNS cache, no cookie jar), its timeouts, and error mapping bound to its name/secrets.

    The session is created inside the running event loop on first use (and again if the
    provider is later used from another loop); `aclose()` closes it.
    """

    def __init__(
        self,
        provider: str,
        *,
        connect_timeout: float = 10.0,
        first_byte_timeout: float = 120.0,
        idle_timeout: float = 60.0,
        limit: int = 256,
        ttl_dns_cache: int = 300,
        keepalive_timeout: float = 30.0,
    ) -> None:
        self.provider = provider
        self.connect_timeout = connect_timeout
        self.first_byte_timeout = first_byte_timeout
        self.idle_timeout = idle_timeout
        self._limit = limit
        self._ttl_dns_cache = ttl_dns_cache
        self._keepalive_timeout = keepalive_timeout
        self._session: aiohttp.ClientSession | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Strings never to appear in an error message (set by the adapter: its API key).
        self.secrets: tuple[str, ...] = ()

    @classmethod
    def from_config(cls, provider: str, cfg: UpstreamSettings, **kwargs: Any) -> UpstreamClient:
        """An aiohttp client (HTTP/1.1 keep-alive) with `cfg`'s connect / first-byte / idle timeouts.
        Adapters get theirs from `_client.upstream_client`, which picks HTTP/2 when configured."""
        return cls(
            provider,
            connect_timeout=cfg.connect_timeout,
            first_byte_timeout=cfg.first_byte_timeout,
            idle_timeout=cfg.idle_timeout,
            **kwargs,
        )

    def session(self) -> aiohttp.ClientSession:
        """The shared session for the running loop (created on first use)."""
        loop = asyncio.get_running_loop()
        session = self._session
        if session is None or session.closed or self._loop is not loop:
            connector = aiohttp.TCPConnector(
                limit=self._limit,
                limit_per_host=0,
                ttl_dns_cache=self._ttl_dns_cache,
                keepalive_timeout=self._keepalive_timeout,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, connect=None, sock_read=None,
                                              sock_connect=self.connect_timeout),
                auto_decompress=True,
                cookie_jar=aiohttp.DummyCookieJar(),
                raise_for_status=False,
                trust_env=False,
            )
            self._session, self._loop = session, loop
        return session

    def timeout_error(self, which: str) -> UpstreamTimeout:
        """The UpstreamTimeout for a missed "first byte" or "idle" deadline."""
        limit = self.first_byte_timeout if which == "first byte" else self.idle_timeout
        return UpstreamTimeout(
            f"upstream {self.provider!r}: no {'response' if which == 'first byte' else 'data'} "
            f"within {limit:g}s ({which} timeout)",
            provider=self.provider,
        )

    def transport_error(self, exc: BaseException) -> UpstreamError:
        return error_from_transport(self.provider, exc, secrets=self.secrets)

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
        """Sends a request and waits (within the first-byte deadline) for the response headers.

        A 2xx answer comes back as an `UpstreamResponse` (the caller must close it); any other
        status is read (up to `error_limit` bytes), closed and raised as the mapped UpstreamError.
        Redirects are not followed unless asked (API calls never need them; CDN downloads may).
        """
        session = self.session()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.first_byte_timeout
        resp: aiohttp.ClientResponse | None = None
        try:
            async with within_at(deadline):
                resp = await session.request(
                    method, url, headers=headers, data=body, allow_redirects=follow_redirects
                )
        except TimeoutError as exc:  # before OSError: TimeoutError is one
            if isinstance(exc, aiohttp.ClientError):  # aiohttp's own (sock_connect) timeout
                raise self.transport_error(exc) from None
            raise self.timeout_error("first byte") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise self.transport_error(exc) from None
        if 200 <= resp.status < 300:
            return UpstreamResponse(self, resp, deadline)
        parts: list[bytes] = []
        try:
            async with within_at(max(deadline, loop.time() + min(self.idle_timeout, 10.0))):
                size = 0
                while size < error_limit and (data := await resp.content.read(error_limit - size)):
                    parts.append(data)
                    size += len(data)
        except (TimeoutError, aiohttp.ClientError, OSError):
            pass  # map the status with whatever part of the body arrived
        finally:
            resp.close()
        raise error_from_status(self.provider, resp.status, resp.headers, b"".join(parts), secrets=self.secrets)

    async def aclose(self) -> None:
        """Closes the pooled connections."""
        session, self._session = self._session, None
        if session is not None and not session.closed:
            await session.close()
