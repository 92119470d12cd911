"""The in-loop gRPC server (api/h2grpc.py) against grpc's own client over real sockets, and against
raw HTTP/2 (h2 as a client) where a grpc client cannot be made to misbehave."""

from __future__ import annotations

import asyncio
import gzip
import socket
import struct

import grpc
import h2.config
import h2.connection
import h2.events
import pytest
from tests_support import left_for_the_collector

from raven_service.api import h2grpc
from raven_service.api.h2grpc import H2GrpcServer

SERVICE = "test.Echo"
pytestmark = pytest.mark.timeout(30)


def _raw(b: bytes) -> bytes:
    return b


class Probe:
    """Handlers recording how each call ended."""

    def __init__(self) -> None:
        self.ended: list[str] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.peers: list[str] = []
        self.metadata: list[tuple] = []
        self.yielded = 0

    async def echo(self, request: bytes, context) -> bytes:
        self.peers.append(context.peer())
        self.metadata.append(context.invocation_metadata())
        context.set_trailing_metadata((("x-trailer", "t"), ("x-blob-bin", b"\x00\xff")))
        return request

    async def hold(self, request: bytes, context) -> bytes:
        self.started.set()
        try:
            await self.release.wait()
            return b"released"
        finally:
            self.ended.append("hold")

    async def fail(self, request: bytes, context) -> bytes:
        await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "naïve 100% wrong",
                            trailing_metadata=(("x-why", "because"),))
        raise AssertionError("unreachable")

    async def boom(self, request: bytes, context) -> bytes:
        raise RuntimeError("secret internals")

    async def big(self, request: bytes, context) -> bytes:
        return bytes(range(256)) * (3 * 4096)  # 3 MiB: beyond every default window

    async def count(self, request: bytes, context):
        await context.send_initial_metadata((("x-first", "1"),))
        try:
            for i in range(int(request or b"3")):
                yield b"%d" % i
        finally:
            self.ended.append("count")

    async def written(self, request: bytes, context) -> None:
        for word in (b"a", b"b", b"c"):
            await context.write(word)

    async def forever(self, request: bytes, context):
        self.started.set()
        try:
            while True:
                yield b"tick"
                await asyncio.sleep(0.01)
        finally:
            self.ended.append("forever")

    async def flood(self, request: bytes, context):
        try:
            while True:
                self.yielded += 1
                yield b"f" * (64 * 1024)
        finally:
            self.ended.append("flood")

    async def joined(self, requests, context):
        parts = [r async for r in requests]
        yield b"+".join(parts)


def _handlers(p: Probe):
    u, s = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    return grpc.method_handlers_generic_handler(SERVICE, {
        "Echo": u(p.echo, _raw, _raw), "Hold": u(p.hold, _raw, _raw), "Fail": u(p.fail, _raw, _raw),
        "Boom": u(p.boom, _raw, _raw), "Big": u(p.big, _raw, _raw), "Count": s(p.count, _raw, _raw),
        "Written": s(p.written, _raw, _raw), "Forever": s(p.forever, _raw, _raw), "Flood": s(p.flood, _raw, _raw),
        "Joined": grpc.stream_stream_rpc_method_handler(p.joined, _raw, _raw),
    })


@pytest.fixture
async def served():
    probe = Probe()
    server = H2GrpcServer(max_receive_message_length=64 * 1024, max_send_message_length=8 * 1024 * 1024)
    server.add_generic_rpc_handlers((_handlers(probe),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield server, port, channel, probe
    finally:
        await channel.close()
        await server.stop(0)


def _call(channel, name: str, kind: str = "unary_unary", **kw):
    return getattr(channel, kind)(f"/{SERVICE}/{name}", request_serializer=_raw, response_deserializer=_raw, **kw)


async def test_a_unary_call_carries_metadata_both_ways(served):
    _, _, channel, probe = served
    call = _call(channel, "Echo")(b"hello", metadata=(("x-in", "v"), ("x-in-bin", b"\x01\x02")))
    assert await call == b"hello"
    trailing = dict(await call.trailing_metadata())
    assert trailing["x-trailer"] == "t" and trailing["x-blob-bin"] == b"\x00\xff"
    received = dict(probe.metadata[0])
    assert received["x-in"] == "v" and received["x-in-bin"] == b"\x01\x02"
    assert "content-type" not in received and ":path" not in received
    assert probe.peers[0].startswith("ipv4:127.0.0.1:")


async def test_abort_gives_the_status_details_and_trailers(served):
    _, _, channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _call(channel, "Fail")(b"")
    err = ei.value
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert err.details() == "naïve 100% wrong"  # percent-encoded on the wire, decoded by the client
    assert dict(err.trailing_metadata())["x-why"] == "because"


async def test_a_handler_that_raises_is_unknown_without_its_text(served):
    _, _, channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _call(channel, "Boom")(b"")
    assert ei.value.code() == grpc.StatusCode.UNKNOWN
    assert "secret" not in (ei.value.details() or "")


async def test_an_unknown_method_is_unimplemented(served):
    _, _, channel, _ = served
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _call(channel, "Nope")(b"")
    assert ei.value.code() == grpc.StatusCode.UNIMPLEMENTED


async def test_a_large_response_crosses_the_flow_control_windows_intact(served):
    _, _, channel, _ = served
    data = await _call(channel, "Big")(b"")
    assert data == bytes(range(256)) * (3 * 4096)


async def test_an_oversized_request_is_resource_exhausted(served):
    _, _, channel, probe = served
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _call(channel, "Echo")(b"x" * (64 * 1024 + 1))
    assert ei.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert probe.metadata == []  # the handler never ran
    assert await _call(channel, "Echo")(b"after") == b"after"  # the connection still serves


async def test_a_gzip_request_is_decoded_and_a_bomb_is_not_inflated(served):
    _, _, channel, probe = served
    assert await _call(channel, "Echo")(b"z" * 1000, compression=grpc.Compression.Gzip) == b"z" * 1000
    bomb = gzip.compress(b"\0" * (16 * 1024 * 1024))
    assert len(bomb) < 64 * 1024
    _, port, _, _ = served
    status = await asyncio.to_thread(_raw_call, port, f"/{SERVICE}/Echo", _frame(bomb, compressed=True),
                                     extra=[(b"grpc-encoding", b"gzip")])
    assert status["grpc-status"] == b"8"  # RESOURCE_EXHAUSTED
    assert len(probe.metadata) == 1


async def test_server_streams_from_a_generator_and_from_context_write(served):
    _, _, channel, probe = served
    call = _call(channel, "Count", "unary_stream")(b"4")
    assert [m async for m in call] == [b"0", b"1", b"2", b"3"]
    assert dict(await call.initial_metadata())["x-first"] == "1"
    assert await call.code() == grpc.StatusCode.OK
    assert probe.ended == ["count"]
    assert [m async for m in _call(channel, "Written", "unary_stream")(b"")] == [b"a", b"b", b"c"]


async def test_client_streaming_requests_reach_the_handler_in_order(served):
    _, _, channel, _ = served

    async def parts():
        for p in (b"x", b"y", b"z"):
            yield p

    call = _call(channel, "Joined", "stream_stream")(parts())
    assert [m async for m in call] == [b"x+y+z"]


async def test_the_deadline_cancels_the_handler(served):
    _, _, channel, probe = served
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _call(channel, "Hold")(b"", timeout=0.2)
    assert ei.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    for _ in range(100):
        if probe.ended:
            break
        await asyncio.sleep(0.01)
    assert probe.ended == ["hold"]  # its finally ran: the server cancelled it, not only the client


async def test_a_client_cancel_cancels_the_handler(served):
    _, _, channel, probe = served
    call = _call(channel, "Forever", "unary_stream")(b"")
    assert await call.read() == b"tick"
    call.cancel()
    for _ in range(200):
        if probe.ended:
            break
        await asyncio.sleep(0.01)
    assert probe.ended == ["forever"]


async def test_a_lost_connection_cancels_its_calls(served):
    server, port, _, probe = served
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    conn.initiate_connection()
    conn.send_headers(1, _request_headers(f"/{SERVICE}/Hold"))
    conn.send_data(1, _frame(b""), end_stream=True)
    writer.write(conn.data_to_send())
    await writer.drain()
    await asyncio.wait_for(probe.started.wait(), 5)
    writer.transport.abort()
    for _ in range(200):
        if probe.ended:
            break
        await asyncio.sleep(0.01)
    assert probe.ended == ["hold"]
    assert not server.connections or all(c.closed or not c.calls for c in server.connections)


async def test_not_grpc_is_refused_by_http_status(served):
    _, port, _, _ = served
    for method, ctype, want in (("GET", b"application/grpc", b"405"), ("POST", b"application/json", b"415")):
        headers = await asyncio.to_thread(_raw_call, port, f"/{SERVICE}/Echo", _frame(b"x"), method=method,
                                          content_type=ctype)
        assert headers[":status"] == want


async def test_protocol_garbage_closes_only_that_connection(served):
    _, port, channel, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\xff" * 64)
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)  # the server's SETTINGS and GOAWAY, then EOF
    assert rest is not None
    writer.close()
    assert await _call(channel, "Echo")(b"still") == b"still"


async def test_graceful_stop_lets_a_call_in_flight_finish_and_refuses_new_ones(served):
    server, _port, channel, probe = served
    held = asyncio.ensure_future(_call(channel, "Hold")(b""))
    await asyncio.wait_for(probe.started.wait(), 5)
    stopping = asyncio.ensure_future(server.stop(5))
    await asyncio.sleep(0.1)
    assert not stopping.done()
    probe.release.set()
    assert await held == b"released"
    await asyncio.wait_for(stopping, 5)
    with pytest.raises(grpc.aio.AioRpcError) as ei:
        await _call(channel, "Echo")(b"late", timeout=2)
    assert ei.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


async def test_stop_without_grace_cancels_what_is_in_flight(served):
    server, _, channel, probe = served
    held = asyncio.ensure_future(_call(channel, "Hold")(b""))
    await asyncio.wait_for(probe.started.wait(), 5)
    await server.stop(0)
    with pytest.raises(grpc.aio.AioRpcError):
        await held
    assert probe.ended == ["hold"]


# ------------------------------------------------------------------------------- raw HTTP/2
def _frame(payload: bytes, compressed: bool = False) -> bytes:
    return struct.pack(">BI", 1 if compressed else 0, len(payload)) + payload


def _request_headers(path: str, method: str = "POST", content_type: bytes = b"application/grpc", extra=()):
    return [(b":method", method.encode()), (b":scheme", b"http"), (b":path", path.encode()),
            (b":authority", b"localhost"), (b"content-type", content_type), (b"te", b"trailers"), *extra]


def _raw_call(port: int, path: str, body: bytes, *, method: str = "POST", content_type: bytes = b"application/grpc",
              extra=(), headers=None) -> dict[str, bytes]:
    """One request over a fresh socket; the response's headers and trailers merged (blocking).
    `headers` replaces the whole request header block (sent unvalidated, as a hostile client would)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(
        client_side=True, header_encoding=None, validate_outbound_headers=False, normalize_outbound_headers=False))
    seen: dict[str, bytes] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        conn.send_headers(1, headers if headers is not None else _request_headers(path, method, content_type, extra))
        conn.send_data(1, body, end_stream=True)
        sock.sendall(conn.data_to_send())
        done = False
        while not done:
            data = sock.recv(65536)
            if not data:
                break
            for ev in conn.receive_data(data):
                if isinstance(ev, (h2.events.ResponseReceived, h2.events.TrailersReceived)):
                    seen.update((k.decode(), v) for k, v in ev.headers)
                if isinstance(ev, (h2.events.StreamEnded, h2.events.StreamReset)):
                    done = True
            sock.sendall(conn.data_to_send())
    return seen


async def test_a_frame_declaring_more_than_the_frame_size_closes_the_connection_at_once(served):
    """Answered from the frame's 9-byte header, before any of the 16 MiB it claims is read."""
    _server, port, channel, _ = served
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # SETTINGS
                 + b"\xff\xff\xff\x00\x00\x00\x00\x00\x01" + b"x" * 1000)  # DATA claiming 16 MiB
    await writer.drain()
    rest = await asyncio.wait_for(reader.read(), 5)  # GOAWAY, then the server closes
    assert b"\x07" in rest  # a GOAWAY frame (type 7) came before the close
    writer.close()
    assert await _call(channel, "Echo")(b"still") == b"still"


def _open_streams(port: int, count: int, size: int) -> list[tuple[int, dict[str, bytes]]]:
    """Starts `count` unary calls each sending `size` bytes of a message that never completes;
    returns the streams the server answered early, with their headers (blocking)."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    answered: dict[int, dict[str, bytes]] = {}
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        conn.increment_flow_control_window(16 * 1024 * 1024)
        sock.sendall(conn.data_to_send())
        for i in range(count):
            sid = 1 + 2 * i
            conn.send_headers(sid, _request_headers(f"/{SERVICE}/Echo"))
            payload = struct.pack(">BI", 0, size * 2) + b"x" * size  # declares twice what it sends
            while payload:
                window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
                if window <= 0:
                    for ev in conn.receive_data(sock.recv(65536)):
                        if isinstance(ev, h2.events.ResponseReceived):
                            answered[ev.stream_id] = {k.decode(): v for k, v in ev.headers}
                    sock.sendall(conn.data_to_send())
                    continue
                conn.send_data(sid, payload[:window])
                payload = payload[window:]
            sock.sendall(conn.data_to_send())
        sock.settimeout(0.5)
        try:
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ResponseReceived):
                        answered[ev.stream_id] = {k.decode(): v for k, v in ev.headers}
        except TimeoutError:
            pass
    return sorted(answered.items())


async def test_request_bytes_held_per_connection_are_bounded(served):
    """Unfinished messages of many streams cannot pile up without bound: past the connection's
    budget the stream that needs more is answered RESOURCE_EXHAUSTED and its bytes dropped."""
    server, port, _channel, probe = served
    server.buffer_budget = 100_000
    answered = await asyncio.to_thread(_open_streams, port, 5, 30_000)  # each under the message limit
    assert [(sid, h["grpc-status"]) for sid, h in answered] == [(7, b"8"), (9, b"8")]
    for _ in range(100):
        if all(not c.calls for c in server.connections):
            break
        await asyncio.sleep(0.01)
    assert all(c.buffered == 0 for c in server.connections)  # released when the streams went
    assert probe.metadata == []


async def test_a_peer_that_never_reads_stops_being_read(served):
    """PINGs each need an answer; a client that sends them without reading is not read either,
    so the answers waiting in the server stay bounded."""
    server, port, _, _ = served
    ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00" + b"12345678"

    def flood() -> int:
        sent = 0
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            sock.settimeout(1.0)
            burst = ping * 4096
            held = 0
            try:
                while sent < 64 * 1024 * 1024:
                    sent += sock.send(burst)
                    held = max([held, *(c.transport.get_write_buffer_size() for c in server.connections
                                        if c.transport)])
            except TimeoutError:
                pass  # the server stopped reading: the client's sends blocked
            except (ConnectionResetError, BrokenPipeError):
                pass  # or nghttp2 saw a flood of unanswered PINGs and closed the connection
        return sent, held

    sent, held = await asyncio.to_thread(flood)
    assert sent < 64 * 1024 * 1024
    assert held < 4 * 1024 * 1024


async def test_header_fields_grpc_would_refuse_are_not_passed_to_the_handler(served):
    """Valid HTTP/2 but not gRPC metadata (a non-ASCII value, a -bin value that is not base64):
    the call goes on without them."""
    _, port, _, probe = served
    headers = [*_request_headers(f"/{SERVICE}/Echo"), (b"x-ok", b"fine"), (b"x-utf8", "é".encode()),
               (b"x-blob-bin", b"AAE"), (b"x-junk-bin", b"!!!")]
    status = await asyncio.to_thread(_raw_call, port, "", _frame(b"m"), headers=headers)
    assert status["grpc-status"] == b"0"
    assert dict(probe.metadata[0]) == {"x-ok": "fine", "x-blob-bin": b"\x00\x01"}


@pytest.mark.parametrize("bad", [
    [(b"X-Upper", b"v")], [(b"x-crlf", b"a\r\nset: evil")], [(b"x-nul", b"a\x00b")],
    [(b"connection", b"keep-alive")], [(b":path", f"/{SERVICE}/Boom".encode())],  # a second :path
], ids=["uppercase-name", "crlf-value", "nul-value", "connection-header", "two-paths"])
async def test_a_header_block_http2_forbids_resets_the_stream_before_any_handler(served, bad):
    """RFC 9113 §8.2: such a request is malformed, a stream error (RST_STREAM), answered by nghttp2
    without a response; the connection serves on."""
    _, port, channel, probe = served
    headers = [*_request_headers(f"/{SERVICE}/Echo"), *bad]
    status = await asyncio.to_thread(_raw_call, port, "", _frame(b"m"), headers=headers)
    assert status == {} and probe.metadata == []
    assert await _call(channel, "Echo")(b"after") == b"after"


def _until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the server sends until it closes the connection (blocking)."""
    sock.settimeout(timeout)
    got = bytearray()
    try:
        while data := sock.recv(65536):
            got += data
    except (ConnectionResetError, BrokenPipeError):
        pass
    return bytes(got)


def _goaway_code(received: bytes) -> int | None:
    """The error code of the first GOAWAY frame among `received` frames (after the preface)."""
    i = 0
    while i + 9 <= len(received):
        length = int.from_bytes(received[i:i + 3], "big")
        if received[i + 3] == 0x07:
            return int.from_bytes(received[i + 13:i + 17], "big")
        i += 9 + length
    return None


_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"  # + empty SETTINGS


def _rapid_reset(port: int, count: int) -> tuple[int, bytes]:
    """HEADERS then RST_STREAM, stream after stream (CVE-2023-44487): how many went before the
    server closed the connection, and what it sent."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        sock.sendall(conn.data_to_send())
        try:
            for i in range(count):
                sid = 1 + 2 * i
                conn.send_headers(sid, _request_headers(f"/{SERVICE}/Hold"), end_stream=True)
                conn.reset_stream(sid)
                sock.sendall(conn.data_to_send())
                sent += 1
        except (ConnectionResetError, BrokenPipeError):
            pass
        return sent, _until_closed(sock)


async def test_rapid_reset_closes_the_connection_and_leaves_no_call_behind(served):
    """Each reset stream would otherwise cost a handler start and cancel for free: nghttp2's reset
    rate limit (1,000 at once, then 33 a second) ends the connection with GOAWAY."""
    server, port, channel, _ = served
    _, received = await asyncio.to_thread(_rapid_reset, port, 20_000)
    assert _goaway_code(received) not in (None, 0)  # an error GOAWAY (nghttp2 says INTERNAL_ERROR)
    for _ in range(200):
        if all(not c.calls for c in server.connections) and not server._tasks:
            break
        await asyncio.sleep(0.01)
    assert all(not c.calls for c in server.connections) and not server._tasks
    assert await _call(channel, "Echo")(b"still") == b"still"


def _continuation_flood(port: int, frames: int) -> bytes:
    """One HEADERS without END_HEADERS, then CONTINUATION frames that never end the block."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        block = b"\x83\x86"  # :method POST, :scheme http (static table)
        out = bytearray(_PREFACE)
        out += len(block).to_bytes(3, "big") + b"\x01\x00" + (1).to_bytes(4, "big") + block
        literal = b"\x40\x03x-a\x01b"  # x-a: b, literal with indexing: 7 bytes per frame
        for _ in range(frames):
            out += len(literal).to_bytes(3, "big") + b"\x09\x00" + (1).to_bytes(4, "big") + literal
        try:
            sock.sendall(out)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return _until_closed(sock)


async def test_a_continuation_flood_closes_the_connection(served):
    """A header block spread over endless CONTINUATION frames is never buffered whole (the
    2024 CONTINUATION flood): past a few frames the connection ends with GOAWAY."""
    _server, port, channel, probe = served
    received = await asyncio.to_thread(_continuation_flood, port, 5_000)
    assert _goaway_code(received) in (0x01, 0x0B)  # PROTOCOL_ERROR or ENHANCE_YOUR_CALM
    assert probe.metadata == []
    assert await _call(channel, "Echo")(b"still") == b"still"


def _settings_flood(port: int, frames: int) -> bytes:
    """SETTINGS frames, each needing an ACK, sent without reading any."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        settings = b"\x00\x00\x06\x04\x00\x00\x00\x00\x00" + b"\x00\x03\x00\x00\x00\x64"  # MAX_CONCURRENT=100
        try:
            sock.sendall(_PREFACE + settings * frames)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return _until_closed(sock)


async def test_a_settings_flood_closes_the_connection(served):
    _server, port, channel, _ = served
    received = await asyncio.to_thread(_settings_flood, port, 50_000)  # returns once closed
    assert _goaway_code(received) == 0x0B  # ENHANCE_YOUR_CALM
    assert received.count(b"\x00\x00\x00\x04\x01\x00\x00\x00\x00") <= 1_000  # ACKs: bounded
    assert await _call(channel, "Echo")(b"still") == b"still"


async def test_a_stream_the_client_does_not_read_holds_a_bounded_backlog(served):
    """The client opens a server stream and never grants flow-control window: what the handler
    yields queues with nghttp2 up to HIGH_WATER, then the handler waits; a reset ends it."""
    server, port, _, probe = served
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        conn.send_headers(1, _request_headers(f"/{SERVICE}/Flood"))
        conn.send_data(1, _frame(b""), end_stream=True)
        await asyncio.to_thread(sock.sendall, conn.data_to_send())
        for _ in range(500):
            server_conn = next(iter(server.connections), None)
            if server_conn is not None and server_conn._waiting:
                break
            await asyncio.sleep(0.01)
        assert server_conn is not None and server_conn._waiting  # the handler waits for the peer
        queued = server_conn.h2.queued_body_size(1)
        assert h2grpc.HIGH_WATER < queued <= h2grpc.HIGH_WATER + 64 * 1024 + 5
        yielded = probe.yielded
        assert yielded <= (h2grpc.HIGH_WATER + 65_535) // (64 * 1024) + 2
        await asyncio.sleep(0.05)
        assert probe.yielded == yielded  # and stays waiting
        conn.reset_stream(1)
        await asyncio.to_thread(sock.sendall, conn.data_to_send())
        for _ in range(500):
            if probe.ended:
                break
            await asyncio.sleep(0.01)
        assert probe.ended == ["flood"] and server_conn.calls == {} and not server_conn._waiting
        assert server_conn.h2.queued_body_size() == 0


def _oversized_headers(port: int) -> bytes:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding=None))
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        conn.initiate_connection()
        big = [(b"x-big-%d" % i, b"v" * 1000) for i in range(20)]  # 20 KiB against the 16 KiB advertised
        conn.send_headers(1, [*_request_headers(f"/{SERVICE}/Echo"), *big], end_stream=True)
        sock.sendall(conn.data_to_send())
        return _until_closed(sock)


async def test_a_header_block_over_the_advertised_limit_closes_the_connection(served):
    """SETTINGS_MAX_HEADER_LIST_SIZE is 16 KiB; a client past it (a well-behaved one fails the call
    itself) gets GOAWAY, nothing of it is decoded further, and the handler never runs."""
    _server, port, channel, probe = served
    received = await asyncio.to_thread(_oversized_headers, port)
    assert _goaway_code(received) == 0x0B  # ENHANCE_YOUR_CALM
    assert probe.metadata == []
    assert await _call(channel, "Echo")(b"still") == b"still"


async def test_a_unix_socket_listener_serves_and_its_file_goes_at_stop(tmp_path):
    """`gateway_link = "unix"`: the co-located gateway's private socket; its peer reads "unix:"."""
    probe = Probe()
    server = H2GrpcServer(max_receive_message_length=1024, max_send_message_length=1024)
    server.add_generic_rpc_handlers((_handlers(probe),))
    path = tmp_path / "g.sock"
    assert server.add_insecure_port(f"unix:{path}") == 1
    await server.start()
    async with grpc.aio.insecure_channel(f"unix:{path}") as channel:
        assert await _call(channel, "Echo")(b"u") == b"u"
    assert probe.peers == ["unix:"]
    await server.stop(0)
    assert not path.exists()


async def test_a_long_lived_connection_keeps_nothing_of_its_finished_calls(served):
    """Hundreds of calls on one connection: none of them is left in its calls, its waiting writers,
    its buffered request bytes or nghttp2's send queue."""
    server, port, _, _ = served
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as fresh:  # a connection made after
        echo, count = _call(fresh, "Echo"), _call(fresh, "Count", "unary_stream")
        for _ in range(6):
            assert await asyncio.gather(*(echo(b"x") for _ in range(40))) == [b"x"] * 40
            assert [m async for m in count(b"2")] == [b"0", b"1"]
        conn = next(c for c in server.connections if c.last_stream_id >= 2 * 246 - 1)
        for _ in range(100):  # the last trailers are written before the client sees them
            if not conn.calls:
                break
            await asyncio.sleep(0.01)
        assert conn.calls == {} and not conn._waiting and conn.buffered == 0
        assert conn.h2.queued_body_size() == 0


async def test_calls_and_closed_connections_are_freed_without_the_cycle_collector(served):
    """The server runs with rare full collections (GC_THRESHOLDS), so a call or a connection left in
    a reference cycle lingers for minutes: RSS grew ~100 B per gRPC call and ~0.5 MiB per closed
    client connection. Neither may need the collector."""
    server, port, _, _ = served
    with left_for_the_collector() as left:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as fresh:
            echo, count = _call(fresh, "Echo"), _call(fresh, "Count", "unary_stream")
            assert await asyncio.gather(*(echo(b"x") for _ in range(50))) == [b"x"] * 50
            assert [m async for m in count(b"3")] == [b"0", b"1", b"2"]
            with pytest.raises(grpc.aio.AioRpcError):
                await _call(fresh, "Fail")(b"")
        for _ in range(200):  # the server sees the connection go
            if not server.connections:
                break
            await asyncio.sleep(0.01)
        assert not server.connections
    assert {k for k in left if k.startswith((h2grpc.__name__ + ".", "ngh2."))} == set()
