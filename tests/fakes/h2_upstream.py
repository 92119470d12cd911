"""A fake OpenAI-compatible upstream speaking HTTP/2 only: cleartext with prior knowledge (h2c),
written with the ``h2`` state machine on asyncio streams, on 127.0.0.1 (ephemeral port).

It takes the same `Scenario` scripts as `fakes.openai_upstream.FakeOpenAI` (one per request,
FIFO; default: a small OpenAI chat, JSON or SSE, and video-job creation) and applies them per
HTTP/2 stream: ``header_delay`` delays the HEADERS frame (slow first byte), ``body_delay`` the
first DATA frame, ``interval`` / ``stalls`` pause between frames (each SSE event is one DATA
frame, split further by ``split``), ``reset_after`` makes the SERVER reset the stream
(``RST_STREAM(INTERNAL_ERROR)``), ``hold`` keeps the stream open after the last frame.

A client that does not speak HTTP/2 gets nowhere: anything but the HTTP/2 connection preface is
a protocol error (counted in `protocol_errors`) and the connection is closed, so every recorded
request arrived in HTTP/2 frames. For each request it records the connection it came on, its
stream id, and whether the client reset the stream (``RST_STREAM``) before the reply ended.

It imports nothing from raven_service.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions

from fakes.openai_upstream import Scenario, _pieces, chat_completion, video_job

__all__ = ["FakeH2", "H2Received"]

DEFAULT_WORDS = ("Hello", "!", " How can I assist you today?")


@dataclass
class H2Received:
    """One request (one HTTP/2 stream) as the fake saw it, and how its reply went."""

    connection: int  # 1-based number of the TCP connection it came on
    stream_id: int
    method: str
    path: str
    scheme: str  # the :scheme pseudo-header
    authority: str  # the :authority pseudo-header
    headers: dict[str, str]  # regular headers, lower-case names
    body: bytes = b""
    json: Any = None
    completed: bool = False  # END_STREAM sent: the whole reply went out
    client_reset: bool = False  # the client sent RST_STREAM for this stream
    reset_code: int | None = None  # its error code
    server_reset: bool = False  # the fake reset the stream (Scenario.reset)
    connection_lost: bool = False  # the TCP connection went away before the reply ended
    ended: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    async def wait_ended(self, within: float = 5.0) -> None:
        """Waits until the reply is over (completed, reset by either side, or the connection
        lost); raises TimeoutError after `within` seconds."""
        async with asyncio.timeout(within):
            await self.ended.wait()


class _Conn:
    """One accepted TCP connection and its h2 state."""

    def __init__(self, number: int, writer: asyncio.StreamWriter) -> None:
        self.number = number
        self.writer = writer
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        self.streams: dict[int, H2Received] = {}
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.window_open = asyncio.Event()
        self.closed = False

    def flush(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)


class FakeH2:
    """The fake HTTP/2 upstream. `base_url` is ``http://127.0.0.1:<port>/v1``."""

    def __init__(self) -> None:
        self.requests: list[H2Received] = []
        self.port = 0
        self.connections = 0  # TCP connections accepted
        self.open_connections = 0
        self.protocol_errors = 0  # connections closed because the client did not speak HTTP/2
        self.max_concurrent_streams = 0  # most streams in flight at once on one connection
        self._queue: collections.deque[Scenario] = collections.deque()
        self._server: asyncio.Server | None = None
        self._conn_tasks: set[asyncio.Task[None]] = set()
        self._no_connections = asyncio.Event()
        self._no_connections.set()
        self._ids = itertools.count(1)

    # -- scripting
    def script(self, *scenarios: Scenario) -> FakeH2:
        """Queues one scenario per upcoming request (in order)."""
        self._queue.extend(scenarios)
        return self

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> H2Received:
        return self.requests[-1]

    # -- lifecycle
    async def start(self) -> FakeH2:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._conn_tasks):
            task.cancel()
        await asyncio.gather(*self._conn_tasks, return_exceptions=True)

    async def __aenter__(self) -> FakeH2:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def wait_connections_closed(self, within: float = 5.0) -> None:
        """Waits until the client has closed every connection."""
        async with asyncio.timeout(within):
            await self._no_connections.wait()

    # -- the connection loop
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._conn_tasks.add(task)
        self.connections += 1
        self.open_connections += 1
        self._no_connections.clear()
        conn = _Conn(self.connections, writer)
        conn.h2.initiate_connection()
        conn.flush()
        try:
            while data := await reader.read(65536):
                try:
                    events = conn.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    self.protocol_errors += 1
                    conn.flush()  # the GOAWAY
                    break
                for event in events:
                    self._on_event(conn, event)
                conn.flush()
                await writer.drain()
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            conn.closed = True
            self.open_connections -= 1
            if not self.open_connections:
                self._no_connections.set()
            for stream_id, t in conn.tasks.items():
                t.cancel()
                rec = conn.streams.get(stream_id)
                if rec is not None and not rec.ended.is_set():
                    rec.connection_lost = True
                    rec.ended.set()
            with contextlib.suppress(Exception):
                writer.close()
            self._conn_tasks.discard(task)

    def _on_event(self, conn: _Conn, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            headers = dict(event.headers or [])
            rec = H2Received(
                connection=conn.number,
                stream_id=event.stream_id,
                method=str(headers.pop(":method", "")),
                path=str(headers.pop(":path", "")),
                scheme=str(headers.pop(":scheme", "")),
                authority=str(headers.pop(":authority", "")),
                headers={str(k).lower(): str(v) for k, v in headers.items()},
            )
            conn.streams[event.stream_id] = rec
            self.requests.append(rec)
            active = sum(1 for r in conn.streams.values() if not r.ended.is_set())
            self.max_concurrent_streams = max(self.max_concurrent_streams, active)
        elif isinstance(event, h2.events.DataReceived):
            rec = conn.streams[event.stream_id]
            rec.body += event.data or b""
            conn.h2.acknowledge_received_data(event.flow_controlled_length or 0, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            rec = conn.streams[event.stream_id]
            if rec.body and rec.headers.get("content-type", "").startswith("application/json"):
                with contextlib.suppress(ValueError):
                    rec.json = json.loads(rec.body)
            conn.tasks[event.stream_id] = asyncio.create_task(self._respond(conn, rec, self._pick(rec)))
        elif isinstance(event, h2.events.StreamReset):
            rec = conn.streams.get(event.stream_id)
            if rec is not None and event.remote_reset:
                rec.client_reset = True
                rec.reset_code = int(event.error_code) if event.error_code is not None else None
                task = conn.tasks.get(event.stream_id)
                if task is not None:
                    task.cancel()
                rec.ended.set()
        elif isinstance(event, h2.events.WindowUpdated):
            conn.window_open.set()

    def _pick(self, rec: H2Received) -> Scenario:
        if self._queue:
            return self._queue.popleft()
        body = rec.json if isinstance(rec.json, dict) else {}
        if rec.path.endswith("/chat/completions"):
            if body.get("stream"):
                return Scenario.chat_stream(DEFAULT_WORDS)
            return Scenario.json(chat_completion(model=str(body.get("model", "gpt-4o-mini"))))
        if rec.path.endswith("/videos") and rec.method == "POST":
            return Scenario.json(video_job(f"video_{next(self._ids):06d}"))
        return Scenario.error(404, f"Unknown path {rec.path}", code="not_found")

    # -- replying
    async def _send(self, conn: _Conn, stream_id: int, data: bytes) -> None:
        """One DATA frame (waiting for flow-control credit if needed)."""
        while data:
            window = min(conn.h2.local_flow_control_window(stream_id), conn.h2.max_outbound_frame_size)
            if window <= 0:
                conn.window_open.clear()
                await conn.window_open.wait()
                continue
            piece, data = data[:window], data[window:]
            conn.h2.send_data(stream_id, piece)
            conn.flush()
            await conn.writer.drain()

    async def _respond(self, conn: _Conn, rec: H2Received, sc: Scenario) -> None:
        sid = rec.stream_id
        try:
            if sc.header_delay:
                await asyncio.sleep(sc.header_delay)
            headers = [(":status", str(sc.status)), ("content-type", sc.content_type), *sc.headers]
            if not sc.streamed:
                headers.append(("content-length", str(sum(len(f) for f in sc.frames))))
            conn.h2.send_headers(sid, headers)
            conn.flush()
            await conn.writer.drain()
            if sc.body_delay:
                await asyncio.sleep(sc.body_delay)
            stalls = dict(sc.stalls)
            for i, frame in enumerate(sc.frames):
                if sc.reset_after == i:
                    self._server_reset(conn, rec)
                    return
                pause = stalls.get(i, 0.0) + (sc.interval if i else 0.0)
                if pause:
                    await asyncio.sleep(pause)
                for n, piece in enumerate(_pieces(frame, sc.split)):
                    if n:
                        await asyncio.sleep(sc.split_pause)
                    await self._send(conn, sid, piece)
            if sc.reset_after is not None and sc.reset_after >= len(sc.frames):
                self._server_reset(conn, rec)
                return
            if sc.hold:
                await asyncio.sleep(sc.hold)
            conn.h2.end_stream(sid)
            conn.flush()
            await conn.writer.drain()
            rec.completed = True
        except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, ConnectionError):
            pass  # the client reset the stream / went away
        finally:
            conn.tasks.pop(sid, None)
            rec.ended.set()

    @staticmethod
    def _server_reset(conn: _Conn, rec: H2Received) -> None:
        rec.server_reset = True
        conn.h2.reset_stream(rec.stream_id, h2.errors.ErrorCodes.INTERNAL_ERROR)
        conn.flush()
