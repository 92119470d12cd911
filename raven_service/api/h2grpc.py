"""The public gRPC port, served on the event loop itself: gRPC's HTTP/2 protocol over libnghttp2.

Why not grpc.aio's server: its C core runs the sockets on its own threads and hands every batch
operation (a call arriving, a message read, headers sent, the status sent) to the event loop through
a poller thread, two thread switches per operation. On the core the service is pinned to, that hand-
off was about half of a unary call's CPU (bench: h2load at c=64, an echo handler on one core: grpc.aio
3,100 calls/s, this server on python-hyper's `h2` 6,200; docs/performance.md). Here one
`asyncio.Protocol` per connection feeds the bytes to an HTTP/2 state machine and the servicer runs in
a task of its own; nothing crosses a thread.

The state machine is libnghttp2 (the HTTP/2 engine of curl and of Node.js's `http2`), through
`ngh2`'s sans-I/O binding: framing, HPACK, flow control, stream states and header validation in C,
with nghttp2's own defences against CONTINUATION floods, rapid reset and other abuse ("glitch"
limits). Until 2026-12-08 this was python-hyper's `h2`, whose pure-Python frame handling was ~0.1 ms
of a unary call's CPU (`ngh2`: ~5 µs; docs/performance.md).

The servicers are the same objects the grpc.aio server and the in-process channel run: generated
`add_*Servicer_to_server` functions register their method handlers here (`add_registered_method_
handlers`, `add_generic_rpc_handlers`), each call gets a `ServicerContext` with the subset of
grpc.aio's the servicers, health and reflection use. What the protocol asks of a server:

- requests: ``POST``, ``content-type: application/grpc[+proto]`` (else HTTP 415), length-prefixed
  messages, identity/gzip/deflate compression (decoded within the size limit), ``grpc-timeout``
  (the handler is cancelled at the deadline: DEADLINE_EXCEEDED);
- responses: headers (initial metadata), messages within the peer's flow-control windows, trailers
  with ``grpc-status``, percent-encoded ``grpc-message`` and trailing metadata (``-bin`` keys
  base64); an error before any message is a trailers-only response;
- RST_STREAM from the client, a lost connection or the deadline cancel the handler's task (its
  `finally` blocks settle, as with grpc.aio); a protocol error closes the connection with GOAWAY;
- `stop(grace)`: listeners close, every connection gets GOAWAY, calls in flight have `grace`
  seconds before they are cancelled.

Unary-request handlers and streaming-request handlers (reflection) are both served; unary and
streaming responses, from an async generator or through `context.write` (health's Watch).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import os
import re
import socket
import struct
import zlib
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any, NamedTuple

import grpc
import ngh2

from raven_service.core.deadline import within

__all__ = ["H2GrpcServer"]

log = logging.getLogger("raven.grpc")

_Code = grpc.StatusCode
_STATUS_NUM = {code: code.value[0] for code in grpc.StatusCode}
_RESERVED = frozenset({b"content-type", b"te", b"grpc-timeout", b"grpc-encoding", b"grpc-accept-encoding",
                       b"content-length", b"connection"})
_TIMEOUT_UNITS = {b"H": 3600.0, b"M": 60.0, b"S": 1.0, b"m": 1e-3, b"u": 1e-6, b"n": 1e-9}
_HEADER = struct.Struct(">BI")
_METADATA_NAME = re.compile(rb"[0-9a-z_.\-]+\Z")
_METADATA_VALUE = re.compile(rb"[\x20-\x7e]*\Z")
_RESPONSE_HEADERS = ((b":status", b"200"), (b"content-type", b"application/grpc"),
                     (b"grpc-accept-encoding", b"identity,deflate,gzip"))
#: Per-connection limits: concurrent calls, one header block, the receive windows granted up front.
MAX_CONCURRENT_STREAMS = 1024
MAX_HEADER_LIST_SIZE = 16 * 1024
STREAM_WINDOW = 1024 * 1024
CONNECTION_WINDOW = 16 * 1024 * 1024
#: Transport output above this pauses streaming responses until the peer reads; so does response
#: data queued on one stream beyond the peer's flow-control window.
HIGH_WATER = 1024 * 1024
#: nghttp2 answers a larger frame with GOAWAY(FRAME_SIZE_ERROR) from its 9-byte header, before
#: buffering any of it: HTTP/2's default SETTINGS_MAX_FRAME_SIZE, which this server keeps.
MAX_FRAME_SIZE = 16384
_CONFIG = ngh2.Configuration(max_inbound_header_list_size=MAX_HEADER_LIST_SIZE)
_SETTINGS = {
    ngh2.Setting.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
    ngh2.Setting.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_SIZE,
    ngh2.Setting.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
    ngh2.Setting.MAX_FRAME_SIZE: MAX_FRAME_SIZE,
}
_NO_ERROR = int(ngh2.ErrorCode.NO_ERROR)
_PROTOCOL_ERROR = int(ngh2.ErrorCode.PROTOCOL_ERROR)
_ENHANCE_YOUR_CALM = int(ngh2.ErrorCode.ENHANCE_YOUR_CALM)
#: A GOAWAY frame (RFC 9113 §6.8): 24-bit length, type, flags, stream 0, last stream id, error code.
_GOAWAY = struct.Struct(">BHBBIII")
_H2Error = ngh2.NGH2Error


class _Abort(Exception):
    """Raised by `ServicerContext.abort`: ends the call with this status (like grpc.aio.AbortError)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = trailing


class _CallDetails(NamedTuple):
    method: str
    invocation_metadata: tuple


def _percent_encode(text: str) -> bytes:
    raw = text.encode("utf-8", "replace")
    if all(0x20 <= b <= 0x7E and b != 0x25 for b in raw):
        return raw
    return b"".join(bytes((b,)) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b for b in raw)


def _encode_metadata(metadata: Iterable[tuple[str, Any]]) -> list[tuple[bytes, bytes]]:
    out = []
    for key, value in metadata:
        k = key.lower().encode("ascii")
        if k.endswith(b"-bin"):
            v = value if isinstance(value, bytes) else str(value).encode("utf-8")
            out.append((k, base64.b64encode(v).rstrip(b"=")))
        else:
            v = value.encode("ascii") if isinstance(value, str) else bytes(value)
            if b"\r" in v or b"\n" in v or b"\0" in v:
                raise ValueError(f"metadata {key!r} holds a control character")
            out.append((k, v))
    return out


def _decode_bin(value: bytes) -> bytes:
    return base64.b64decode(value + b"=" * (-len(value) % 4), validate=True)


def _timeout(value: bytes) -> float | None:
    if not 2 <= len(value) <= 9 or not value[:-1].isdigit():
        return None
    unit = _TIMEOUT_UNITS.get(value[-1:])
    return None if unit is None else int(value[:-1]) * unit


def _decompress(data: bytes, encoding: str, limit: int) -> bytes | None:
    """The message decoded, or None if it would exceed `limit` bytes (a bomb is not inflated)."""
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    d = zlib.decompressobj(wbits)
    out = d.decompress(data, limit + 1)
    if len(out) > limit or d.unconsumed_tail:
        return None
    return out


class _Request(NamedTuple):
    method: bytes
    path: bytes
    content_type: bytes
    timeout: float | None
    encoding: str
    metadata: tuple


def _parse_request(headers: Iterable[tuple[bytes, bytes]]) -> _Request:
    """A request's HEADERS: the pseudo-headers and gRPC's own, and the rest as call metadata
    (``-bin`` values base64-decoded to bytes, as grpc passes them).

    What h2's header validation would refuse is not passed on: a name that is not a lowercase
    metadata name, a text value with a control or non-ASCII byte (CR/LF included), a second
    ``:path`` or ``:method`` (the request then has neither, and is refused)."""
    method = path = content_type = b""
    timeout: float | None = None
    encoding = "identity"
    metadata: list[tuple[str, Any]] = []
    pseudo: set[bytes] = set()
    for name, value in headers:
        if name[:1] == b":":
            if name in pseudo:
                method = path = b"\0"
                continue
            pseudo.add(name)
            if name == b":path":
                path = value
            elif name == b":method":
                method = value
        elif name in _RESERVED:
            if name == b"content-type":
                content_type = value
            elif name == b"grpc-timeout":
                timeout = _timeout(value)
            elif name == b"grpc-encoding":
                encoding = value.decode("ascii", "replace")
        elif _METADATA_NAME.match(name):
            if name.endswith(b"-bin"):
                try:
                    metadata.append((name.decode("ascii"), _decode_bin(value)))
                except ValueError:
                    continue  # not base64: not a metadata entry grpc would pass on
            elif _METADATA_VALUE.match(value):
                metadata.append((name.decode("ascii"), value.decode("ascii")))
    return _Request(method, path, content_type, timeout, encoding, tuple(metadata))


def _is_grpc(content_type: bytes) -> bool:
    return content_type == b"application/grpc" or content_type.startswith((b"application/grpc+", b"application/grpc;"))


class ServicerContext:
    """The subset of grpc.aio.ServicerContext the servicers use, for one call."""

    __slots__ = ("_call", "_code", "_details", "_metadata", "_trailing")

    def __init__(self, call: _Call, metadata: tuple) -> None:
        self._call = call
        self._metadata = metadata
        self._trailing: tuple = ()
        self._code: grpc.StatusCode | None = None
        self._details = ""

    def invocation_metadata(self) -> tuple:
        return self._metadata

    def peer(self) -> str:
        return self._call.conn.peer

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        call = self._call
        if call.headers_sent:
            raise RuntimeError("initial metadata was already sent")
        call.send_headers(_encode_metadata(metadata))
        call.conn.flush()

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(metadata)

    def trailing_metadata(self) -> tuple:
        return self._trailing

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence = ()) -> None:
        if code is _Code.OK:
            raise ValueError("abort with an OK status")
        self._code = code
        raise _Abort(code, details, self._trailing + tuple(trailing_metadata))

    def set_code(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode | None:
        return self._code

    def set_details(self, details: str) -> None:
        self._details = details

    def details(self) -> str:
        return self._details

    async def write(self, message: Any) -> None:
        await self._call.write(message)

    def time_remaining(self) -> float | None:
        timeout = self._call.timeout
        if timeout is None:
            return None
        return max(0.0, self._call.started + timeout - asyncio.get_running_loop().time())

    def cancelled(self) -> bool:
        return self._call.cancelled

    def done(self) -> bool:
        return self._call.finished


class _Call:
    """One RPC on one HTTP/2 stream: its request bytes, its handler's task, its response."""

    __slots__ = (
        "buffer",
        "cancelled",
        "conn",
        "encoding",
        "finished",
        "handler",
        "headers_sent",
        "input_done",
        "messages",
        "metadata",
        "method",
        "overflow",
        "started",
        "stream_id",
        "task",
        "timeout",
        "window",
    )

    def __init__(self, conn: _Connection, stream_id: int, method: str, handler: Any, metadata: tuple,
                 timeout: float | None, encoding: str) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.method = method
        self.handler = handler
        self.timeout = timeout
        self.encoding = encoding
        self.started = conn.loop.time()
        self.buffer = bytearray()
        self.messages: asyncio.Queue[Any] | None = asyncio.Queue() if handler.request_streaming else None
        self.headers_sent = False
        self.input_done = False
        self.cancelled = False
        self.finished = False
        self.overflow = False
        self.task: asyncio.Task | None = None
        self.window: asyncio.Event | None = None
        self.metadata = metadata

    # ------------------------------------------------------------------ request side (protocol)
    def feed(self, data: bytes) -> None:
        if self.overflow or self.finished:
            return
        conn = self.conn
        if conn.buffered + len(data) > conn.server.buffer_budget:
            self.overflow = True
            self.fail(_Code.RESOURCE_EXHAUSTED, "Too much request data in flight on this connection")
            return
        buf = self.buffer
        before = len(buf)
        buf += data
        self._account(before)
        limit = conn.server.max_receive
        while len(buf) >= 5:
            flag, size = _HEADER.unpack_from(buf)
            if size > limit:
                self.overflow = True
                self.fail(_Code.RESOURCE_EXHAUSTED,
                          f"Received message larger than max ({size} vs. {limit})")
                self._release()
                return
            if len(buf) < 5 + size:
                return
            if self.messages is None:  # unary request: the whole body is one message, read at the end
                if len(buf) > 5 + size:
                    self.overflow = True
                    self.fail(_Code.UNIMPLEMENTED, "More than one request message for a unary method")
                    self._release()
                return
            payload = bytes(buf[5:5 + size])
            before = len(buf)
            del buf[:5 + size]
            self._account(before)
            message = self.decode(flag, payload)
            if message is None:
                return
            self.messages.put_nowait(message)

    def _account(self, before: int) -> None:
        self.conn.buffered += len(self.buffer) - before

    def _release(self) -> None:
        """Drops what this call holds unread (counted against the connection's budget)."""
        self.conn.buffered -= len(self.buffer)
        self.buffer = bytearray()

    def decode(self, flag: int, payload: bytes) -> Any | None:
        """The request message (deserialised), or None after answering the call with an error."""
        if flag & 1:
            if self.encoding not in ("gzip", "deflate"):
                self.fail(_Code.INTERNAL if self.encoding == "identity" else _Code.UNIMPLEMENTED,
                          f"Compressed message with grpc-encoding {self.encoding!r}")
                return None
            decoded = _decompress(payload, self.encoding, self.conn.server.max_receive)
            if decoded is None:
                self.overflow = True
                self.fail(_Code.RESOURCE_EXHAUSTED, "Decompressed message larger than max")
                return None
            payload = decoded
        deserializer = self.handler.request_deserializer
        if deserializer is None:
            return payload
        try:
            return deserializer(payload)
        except Exception:
            self.fail(_Code.INTERNAL, "Failed to deserialize the request message")
            return None

    def end_of_input(self) -> None:
        self.input_done = True
        if self.finished or self.overflow:
            return
        if self.messages is not None:
            if self.buffer:
                self.fail(_Code.INTERNAL, "Truncated request message")
                return
            self.messages.put_nowait(_END)
            return
        buf = self.buffer
        if len(buf) < 5:
            self.fail(_Code.INTERNAL, "Missing request message" if not buf else "Truncated request message")
            return
        flag, size = _HEADER.unpack_from(buf)
        if len(buf) != 5 + size:
            self.fail(_Code.INTERNAL, "Truncated request message")
            return
        payload = bytes(buf[5:])
        self._release()
        message = self.decode(flag, payload)
        if message is not None:
            self.start(message)

    def start(self, request: Any) -> None:
        # The context points at the call, and only the handler's frame points at the context: no
        # reference cycle, so a call is freed when it ends instead of at the next full collection
        # (which the server's GC thresholds make rare; see `raven_service.server.GC_THRESHOLDS`).
        self.task = self.conn.loop.create_task(self.run(request, ServicerContext(self, self.metadata)))
        self.conn.server.track(self.task)

    def cancel(self) -> None:
        """The client reset the stream, or the connection is gone: the handler is cancelled."""
        self.cancelled = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.finished = True
        self._release()
        if self.messages is not None:
            self.messages.put_nowait(_END)
        if self.window is not None:
            self.window.set()

    # ------------------------------------------------------------------ the handler
    async def _requests(self) -> AsyncIterator[Any]:
        queue = self.messages
        assert queue is not None
        while True:
            item = await queue.get()
            if item is _END:
                return
            yield item

    async def run(self, request: Any, context: ServicerContext) -> None:
        handler = self.handler
        try:
            if self.timeout is None:
                await self._invoke(handler, request, context)
            else:
                async with within(self.timeout):
                    await self._invoke(handler, request, context)
        except _Abort as exc:
            self.finish(exc.code, exc.details, exc.trailing)
        except TimeoutError:
            self.finish(_Code.DEADLINE_EXCEEDED, "Deadline Exceeded", context._trailing)
        except asyncio.CancelledError:
            if not self.cancelled:  # the server stopping (the client's own cancel needs no answer)
                self.finish(_Code.UNAVAILABLE, "The server is shutting down", ())
            raise
        except _H2Error:  # the stream or the connection closed under the response
            self.finished = True
            self.conn.call_done(self)
        except Exception as exc:  # a handler that raised instead of aborting: no internals in the answer
            code = context._code if context._code not in (None, _Code.OK) else _Code.UNKNOWN
            log.exception("unhandled error in %s", self.method)
            self.finish(code, context._details or f"Unexpected {type(exc).__name__}", context._trailing)
        else:
            code = context._code or _Code.OK
            self.finish(code, context._details, context._trailing)
        finally:
            # Nothing is awaited past here. A cancelled task keeps its CancelledError, whose
            # traceback keeps this frame and so this call: the call must not keep the task.
            self.task = None

    async def _invoke(self, handler: Any, request: Any, context: ServicerContext) -> None:
        if handler.request_streaming:
            requests = self._requests()
            if handler.response_streaming:
                await self._stream_out(handler.stream_stream(requests, context))
            else:
                await self._unary_out(await handler.stream_unary(requests, context))
        elif handler.response_streaming:
            await self._stream_out(handler.unary_stream(request, context))
        else:
            await self._unary_out(await handler.unary_unary(request, context))

    async def _unary_out(self, response: Any) -> None:
        if self.finished:
            return
        serializer = self.handler.response_serializer
        data = serializer(response) if serializer is not None else response
        if len(data) > self.conn.server.max_send:
            raise _Abort(_Code.RESOURCE_EXHAUSTED, "Sent message larger than max", ())
        if not self.headers_sent:
            self.send_headers(())
        # Queued whole (it is within max_send): nghttp2 sends it as the peer's windows allow, and
        # the status after it, in the same write as the headers when the windows are open.
        self.conn.h2.send_data(self.stream_id, _HEADER.pack(0, len(data)) + data)

    async def _stream_out(self, result: Any) -> None:
        if hasattr(result, "__aiter__"):
            serializer = self.handler.response_serializer
            async for message in result:
                await self.write(message, serializer)
        elif result is not None:
            await result  # a coroutine writing through context.write (health's Watch)

    async def write(self, message: Any, serializer: Callable | None = None) -> None:
        if self.finished:
            raise asyncio.CancelledError
        if serializer is None:
            serializer = self.handler.response_serializer
        data = serializer(message) if serializer is not None else message
        if len(data) > self.conn.server.max_send:
            raise _Abort(_Code.RESOURCE_EXHAUSTED, "Sent message larger than max", ())
        if not self.headers_sent:
            self.send_headers(())
        await self.conn.write_message(self, data)

    # ------------------------------------------------------------------ response side
    def send_headers(self, metadata: list[tuple[bytes, bytes]] | tuple) -> None:
        self.headers_sent = True
        self.conn.h2.send_response(self.stream_id, [*_RESPONSE_HEADERS, *metadata])

    def fail(self, code: grpc.StatusCode, details: str) -> None:
        """An error found by the protocol side (before or beside the handler)."""
        if self.task is not None and not self.task.done():
            self.task.cancel()
            self.cancelled = True
        self.finish(code, details, ())
        self.conn.flush()

    def finish(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, Any]]) -> None:
        if self.finished:
            return
        self.finished = True
        self._release()
        conn = self.conn
        try:
            extra = _encode_metadata(trailing)
        except (ValueError, UnicodeError):
            code, details, extra = _Code.INTERNAL, "Invalid trailing metadata", []
        status = [(b"grpc-status", b"%d" % _STATUS_NUM[code])]
        if details:
            status.append((b"grpc-message", _percent_encode(details)))
        h = conn.h2
        try:
            if self.headers_sent:
                h.send_trailers(self.stream_id, status + extra)
            else:  # trailers-only
                h.send_response(self.stream_id, [*_RESPONSE_HEADERS, *status, *extra], end_stream=True)
            if not self.input_done and not self.cancelled and not h.queued_body_size(self.stream_id):
                # the client may still be sending: tell it to stop (RFC 9113 §8.1), once the
                # answer is out (nghttp2 drops what a stream still has queued when it is reset).
                # Not while response data waits for the peer's window.
                conn.flush()
                with contextlib.suppress(_H2Error):
                    h.reset_stream(self.stream_id, _NO_ERROR)
        except _H2Error:
            pass  # the stream or the connection went away first
        conn.call_done(self)
        conn.flush()


_END = object()


class _Connection(asyncio.Protocol):
    """One client connection: nghttp2's state machine fed from the socket, calls by stream id."""

    def __init__(self, server: H2GrpcServer) -> None:
        self.server = server
        self.loop = asyncio.get_running_loop()
        self.h2 = ngh2.Connection(ngh2.Role.SERVER, _CONFIG)
        self.calls: dict[int, _Call] = {}
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.closed = False
        self.going_away = False
        self.last_stream_id = 0  # the highest stream the client opened: what a GOAWAY lets finish
        self._paused = False
        self._drained: asyncio.Event | None = None
        self._waiting: deque[_Call] = deque()
        self.buffered = 0  # request bytes held by this connection's calls, not yet a message

    # ------------------------------------------------------------------ asyncio.Protocol
    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        peername = transport.get_extra_info("peername")
        family = getattr(sock, "family", None)
        if family == socket.AF_INET and peername:
            self.peer = f"ipv4:{peername[0]}:{peername[1]}"
        elif family == socket.AF_INET6 and peername:
            self.peer = f"ipv6:[{peername[0]}]:{peername[1]}"
        else:
            self.peer = "unix:"
        if family in (socket.AF_INET, socket.AF_INET6):
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport.set_write_buffer_limits(high=HIGH_WATER)
        self.h2.initiate_connection(_SETTINGS)
        self.h2.set_local_window_size(CONNECTION_WINDOW)
        self.server.connections.add(self)
        self.flush()

    def data_received(self, data: bytes) -> None:
        h = self.h2
        try:
            h.receive_data(data)
        except _H2Error as exc:
            # nghttp2 queues a GOAWAY itself for a protocol error; what it raises for (a flood of
            # frames, or state it cannot go on from) leaves the session unusable: the GOAWAY that
            # says why is written here, then the connection closes.
            log.debug("HTTP/2 error from %s: %s", self.peer, exc)
            code = _ENHANCE_YOUR_CALM if isinstance(exc, ngh2.DenialOfServiceError) else _PROTOCOL_ERROR
            if self.transport is not None and not self.transport.is_closing():
                self.transport.write(_GOAWAY.pack(0, 8, 7, 0, 0, self.last_stream_id, code))
            self._end()
            return
        events: list[Any] = h.events()  # dispatched on their exact type: cheaper than isinstance
        for event in events:
            kind = type(event)
            if kind is ngh2.DataReceived:
                call = self.calls.get(event.stream_id)
                if call is not None:
                    if event.data:
                        call.feed(event.data)
                    if event.end_stream:
                        call.end_of_input()
            elif kind is ngh2.RequestReceived:
                self._request(event)
            elif kind is ngh2.StreamReset or kind is ngh2.StreamClosed:
                # the client reset it, or nghttp2 closed it for a stream error; after the call's
                # own end (call_done) it is no longer here
                call = self.calls.pop(event.stream_id, None)
                if call is not None:
                    call.cancel()
            elif kind is ngh2.TrailersReceived:  # a request's trailers end its input
                call = self.calls.get(event.stream_id)
                if call is not None:
                    call.end_of_input()
            elif kind is ngh2.WindowUpdated or kind is ngh2.SettingsReceived:
                self._wake_writers()
            elif kind is ngh2.GoAwayReceived or kind is ngh2.ConnectionClosed:
                self.going_away = True
        self.flush()
        if not h.want_read and not h.want_write:  # a GOAWAY went out for a protocol error
            log.debug("HTTP/2 connection from %s closed by the protocol", self.peer)
            self._end()

    def _end(self) -> None:
        self.flush()
        self.abort_all()
        if self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.abort_all()
        self.server.connections.discard(self)
        if self._drained is not None:
            self._drained.set()
        self._waiting.clear()
        self.transport = None  # the transport points back at its protocol

    def pause_writing(self) -> None:
        """The peer is not reading: nor do we, until it does (else its PINGs, SETTINGS and
        requests would pile up answers in memory)."""
        self._paused = True
        if self.transport is not None:
            with contextlib.suppress(Exception):
                self.transport.pause_reading()

    def resume_writing(self) -> None:
        self._paused = False
        if self.transport is not None and not self.closed:
            with contextlib.suppress(Exception):
                self.transport.resume_reading()
        if self._drained is not None:
            self._drained.set()

    # ------------------------------------------------------------------ calls
    def _request(self, event: Any) -> None:
        sid = event.stream_id
        if sid > self.last_stream_id:
            self.last_stream_id = sid
        request = _parse_request(event.headers or ())
        if request.method != b"POST" or not _is_grpc(request.content_type):
            status = b"405" if request.method != b"POST" else b"415"
            self._refuse(sid, event.end_stream, [(b":status", status)])
            return
        rpc = request.path.decode("ascii", "replace")
        handler = None if self.going_away or self.server.stopping else self.server.handler(rpc, request.metadata)
        if handler is None:
            code, details = ((_Code.UNAVAILABLE, "The server is shutting down") if self.going_away
                             or self.server.stopping else (_Code.UNIMPLEMENTED, "Method not found!"))
        elif request.encoding not in ("identity", "gzip", "deflate"):
            code, details = _Code.UNIMPLEMENTED, f"Unsupported grpc-encoding {request.encoding}"
        else:
            call = _Call(self, sid, rpc, handler, request.metadata, request.timeout, request.encoding)
            self.calls[sid] = call
            if call.messages is not None:  # streaming requests: the handler starts at once
                call.start(None)
            if event.end_stream:
                call.end_of_input()
            return
        self._refuse(sid, event.end_stream,
                     [*_RESPONSE_HEADERS, (b"grpc-status", b"%d" % _STATUS_NUM[code]),
                      (b"grpc-message", _percent_encode(details))])

    def _refuse(self, sid: int, ended: bool, headers: list[tuple[bytes, bytes]]) -> None:
        """Answers a stream no handler takes (one HEADERS frame) and stops its body, if any."""
        with contextlib.suppress(_H2Error):
            self.h2.send_response(sid, headers, end_stream=True)
            if not ended:  # after the answer is out: nghttp2 drops a reset stream's queued frames
                self.flush()
                self.h2.reset_stream(sid, _NO_ERROR)

    def call_done(self, call: _Call) -> None:
        self.calls.pop(call.stream_id, None)
        if self.going_away and not self.calls and self.server.stopping:
            self._close()

    def abort_all(self) -> None:
        calls, self.calls = self.calls, {}
        for call in calls.values():
            call.cancel()

    # ------------------------------------------------------------------ output
    def flush(self) -> None:
        try:
            data = self.h2.data_to_send()
        except _H2Error:  # the connection is no longer usable (its transport is closing)
            return
        if data and self.transport is not None and not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    async def write_message(self, call: _Call, data: bytes) -> None:
        """One message of a streaming response: queued with nghttp2, which sends it within the
        peer's windows; the writer waits while more than HIGH_WATER of it waits for them, or while
        the transport's own buffer is full."""
        if call.finished:
            raise asyncio.CancelledError
        h = self.h2
        sid = call.stream_id
        try:
            h.send_data(sid, _HEADER.pack(0, len(data)) + data)
        except _H2Error:
            raise asyncio.CancelledError from None
        self.flush()
        while not call.finished and h.queued_body_size(sid) > HIGH_WATER:
            await self._wait_window(call)
        if call.finished:
            raise asyncio.CancelledError
        if self._paused:
            await self._wait_drained()

    async def _wait_window(self, call: _Call) -> None:
        event = call.window = asyncio.Event()
        self._waiting.append(call)
        try:
            await event.wait()
        finally:
            call.window = None
            with contextlib.suppress(ValueError):
                self._waiting.remove(call)

    def _wake_writers(self) -> None:
        for call in self._waiting:
            if call.window is not None:
                call.window.set()

    async def _wait_drained(self) -> None:
        if self._drained is None:
            self._drained = asyncio.Event()
        self._drained.clear()
        while self._paused and not self.closed:
            await self._drained.wait()
            self._drained.clear()
        if self.closed:
            raise asyncio.CancelledError

    def go_away(self) -> None:
        """Graceful stop: a GOAWAY tells the client to open no more streams here (nghttp2 ignores
        any it opens past the last one seen); the calls in flight go on, and the connection closes
        once they are done."""
        if self.going_away:
            return
        self.going_away = True
        with contextlib.suppress(_H2Error):
            self.h2.send_goaway(_NO_ERROR, last_stream_id=self.last_stream_id)
        self.flush()
        if not self.calls:
            self._close()

    def _close(self) -> None:
        self.flush()  # what the last calls queued goes first: terminating drops it
        with contextlib.suppress(_H2Error):
            if self.h2.queued_body_size():  # waiting for the peer's windows: `data_received`
                return  # closes once it is out (nghttp2 then wants neither to read nor to write)
            self.h2.terminate_connection(_NO_ERROR, last_stream_id=self.last_stream_id)
        self.flush()
        if self.transport is not None:
            self.transport.close()


class H2GrpcServer:
    """A grpc.aio-shaped server (`add_insecure_port`, `start`, `stop`, `wait_for_termination`)
    serving registered handlers on the running event loop (see the module doc)."""

    def __init__(self, *, max_receive_message_length: int, max_send_message_length: int,
                 reuse_port: bool = False, wrap: Callable[[str, Any], Any] | None = None) -> None:
        self.max_receive = max_receive_message_length
        self.max_send = max_send_message_length
        #: Request bytes one connection's calls may hold before their messages are complete.
        self.buffer_budget = max(2 * max_receive_message_length, 32 * 1024 * 1024)
        self._reuse_port = reuse_port
        self._wrap = wrap
        self._registered: dict[str, Any] = {}
        self._generic: list[Any] = []
        self._resolved: dict[str, Any] = {}
        self._sockets: list[socket.socket] = []
        self._unix_paths: list[str] = []
        self._servers: list[asyncio.AbstractServer] = []
        self._tasks: set[asyncio.Task] = set()
        self.connections: set[_Connection] = set()
        self.stopping = False
        self._terminated: asyncio.Event | None = None

    # ------------------------------------------------------------------ registration (generated code calls these)
    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        self._generic.extend(handlers)
        self._resolved.clear()

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        for name, handler in handlers.items():
            self._registered[f"/{service}/{name}"] = handler
        self._resolved.clear()

    def handler(self, method: str, metadata: tuple) -> Any:
        found = self._resolved.get(method)
        if found is not None:
            return found
        found = self._registered.get(method)
        if found is None:
            details = _CallDetails(method, metadata)
            for generic in self._generic:
                found = generic.service(details)
                if found is not None:
                    break
        if found is None:
            return None
        if self._wrap is not None:
            found = self._wrap(method, found)
        if len(self._resolved) < 4096:  # bounded: only methods that exist are resolved at all
            self._resolved[method] = found
        return found

    # ------------------------------------------------------------------ ports and lifecycle
    def add_insecure_port(self, address: str) -> int:
        """Binds now (so the port is known before `start`); "unix:PATH" for a unix socket."""
        if address.startswith("unix:"):
            path = address[len("unix:"):]
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.bind(path)
            self._unix_paths.append(path)  # the listener is closed (its name gone) by the time stop unlinks
            port = 1
        else:
            host, _, port_text = address.rpartition(":")
            host = host.strip("[]") or "0.0.0.0"
            family = socket.AF_INET6 if ":" in host else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if self._reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            try:
                sock.bind((host, int(port_text)))
            except OSError:
                sock.close()
                return 0
            port = sock.getsockname()[1]
        sock.listen(1024)
        sock.setblocking(False)
        self._sockets.append(sock)
        return port

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._terminated = asyncio.Event()
        for sock in self._sockets:
            if sock.family == socket.AF_UNIX:
                server = await loop.create_unix_server(lambda: _Connection(self), sock=sock)
            else:
                server = await loop.create_server(lambda: _Connection(self), sock=sock)
            self._servers.append(server)

    def track(self, task: asyncio.Task) -> None:
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:  # run() answers everything else
            log.error("gRPC call task failed", exc_info=task.exception())

    async def stop(self, grace: float | None) -> None:
        """Stops accepting; calls in flight get `grace` seconds (None: none) before cancellation."""
        if self.stopping:
            if self._terminated is not None:
                await self._terminated.wait()
            return
        self.stopping = True
        for server in self._servers:
            server.close()
        for conn in list(self.connections):
            conn.go_away()
        if grace and self._tasks:
            await asyncio.wait(list(self._tasks), timeout=grace)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        for conn in list(self.connections):
            conn.abort_all()
            if conn.transport is not None:
                conn.transport.close()
        for server in self._servers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1)
        for path in self._unix_paths:
            with contextlib.suppress(OSError):
                os.unlink(path)
        if self._terminated is not None:
            self._terminated.set()

    async def wait_for_termination(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109 (grpc.aio's signature)
        if self._terminated is None:
            return True
        try:
            await asyncio.wait_for(self._terminated.wait(), timeout)
        except TimeoutError:
            return False
        return True
