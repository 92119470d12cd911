"""A fake OpenAI-compatible upstream: a real aiohttp server on 127.0.0.1 (ephemeral port).

The envoy ``testupstreamlib`` idea: each test scripts what the upstream does with `Scenario`
objects, the fake speaks the real wire format (payload templates transcribed from OpenAI's API
reference live in ``payloads/openai/``), and it records every request it received, including
whether the client went away before the reply was complete.

Picking a reply for a request, first match wins:

1. `FakeOpenAI.script(*scenarios)`: a FIFO queue, one scenario per request;
2. `FakeOpenAI.on_model(model, scenario)`: every request whose JSON body names `model`
   (lets gateway / e2e tests route a slug to a misbehaving upstream);
3. the default behaviour, a small but complete OpenAI: chat (JSON or SSE, with the usage chunk
   when ``stream_options.include_usage`` is set), images (real PNGs of the requested size,
   b64_json), video jobs (queued -> in_progress -> completed over a few polls, then content),
   models. With ``api_key`` set, a wrong ``Authorization`` gets OpenAI's 401.

Faults a scenario can inject: any status with headers (429 + Retry-After, 500, 503 ...), slow
first byte (`slow_first_byte`), headers then a slow body (`slow_body`), stalls between events
(`stall`), a TCP reset mid-body (`reset`), SSE events split across TCP writes mid-line or in
n-byte pieces (`split_writes`), comment lines, CRLF / CR line endings, malformed lines and
``error`` payloads mid-stream (pass raw bytes or an ``{"error": ...}`` dict as an event).

Use it in async tests (``async with FakeOpenAI() as fake``), from sync tests or other processes'
tests (``with FakeOpenAI.in_thread() as fake``: own loop in a daemon thread), or standalone:
``python -m tests.fakes.openai_upstream --port 8099 [--api-key K]``.

It imports nothing from raven_service.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import contextlib
import copy
import functools
import itertools
import json
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from aiohttp import web

__all__ = [
    "DONE",
    "FakeOpenAI",
    "Received",
    "Scenario",
    "chat_completion",
    "chunk",
    "error_body",
    "images_response",
    "payload",
    "png_bytes",
    "sse_event",
    "text_chunks",
    "tool_call_chunks",
    "usage_chunk",
    "video_job",
]

PAYLOADS = Path(__file__).parent / "payloads" / "openai"
DONE = b"data: [DONE]\n\n"
DEFAULT_TEXT = "Hello! How can I assist you today?"
_POLL = 0.005  # how often sleeping handlers look for a client disconnect


# ------------------------------------------------------------------------------------ payloads
@functools.cache
def _load(name: str) -> Any:
    return json.loads((PAYLOADS / f"{name}.json").read_text())


def payload(name: str) -> Any:
    """A fresh copy of a recorded payload from ``payloads/openai/<name>.json``."""
    return copy.deepcopy(_load(name))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sse_event(data: Any, *, event: str | None = None) -> bytes:
    """One SSE frame: ``data: <json>`` (or the given bytes/str verbatim as data), blank line."""
    if isinstance(data, bytes):
        body = data
    elif isinstance(data, str):
        body = data.encode()
    else:
        body = _dumps(data)
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + body + b"\n\n"


def chat_completion(
    content: str | None = DEFAULT_TEXT,
    *,
    tool_calls: Sequence[tuple[str, str, str]] = (),
    finish_reason: str | None = "stop",
    usage: tuple[int, int] | None = (19, 10),
    model: str = "gpt-4.1-2025-04-14",
) -> dict[str, Any]:
    """A ``chat.completion`` object; `tool_calls` are (id, name, arguments) triples."""
    obj = payload("chat_completion")
    obj["model"] = model
    choice = obj["choices"][0]
    choice["message"]["content"] = content
    if tool_calls:
        choice["message"]["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": a}} for i, n, a in tool_calls
        ]
    choice["finish_reason"] = finish_reason
    if usage is None:
        del obj["usage"]
    else:
        obj["usage"].update(prompt_tokens=usage[0], completion_tokens=usage[1], total_tokens=sum(usage))
    return obj


def chunk(delta: Mapping[str, Any], finish_reason: str | None = None, *, index: int = 0) -> dict[str, Any]:
    """A ``chat.completion.chunk`` with one choice (``usage: null``, as with include_usage)."""
    obj = payload("chat_stream_text")[1]
    obj["choices"] = [{"index": index, "delta": dict(delta), "logprobs": None, "finish_reason": finish_reason}]
    return obj


def usage_chunk(prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
    """The last chunk of an include_usage stream: empty ``choices`` and the usage."""
    obj = payload("chat_stream_text")[-1]
    obj["usage"].update(
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, total_tokens=prompt_tokens + completion_tokens
    )
    return obj


def text_chunks(
    pieces: Sequence[str], *, finish_reason: str | None = "stop", usage: tuple[int, int] | None = (9, 12)
) -> list[dict[str, Any]]:
    """A text stream as OpenAI sends it: role chunk with empty content, one chunk per piece, a
    chunk with the finish_reason and an empty delta, then (if `usage`) the usage chunk."""
    out = [chunk({"role": "assistant", "content": ""})]
    out.extend(chunk({"content": p}) for p in pieces)
    if finish_reason is not None:
        out.append(chunk({}, finish_reason))
    if usage is not None:
        out.append(usage_chunk(*usage))
    return out


def tool_call_chunks(
    calls: Sequence[tuple[str | None, str, Sequence[str]]],
    *,
    finish_reason: str | None = "tool_calls",
    usage: tuple[int, int] | None = (85, 42),
) -> list[dict[str, Any]]:
    """Streamed tool calls, one after the other: for each (id or None, name, argument pieces), a
    first fragment with index, id, type and name, then one fragment per argument piece."""
    out = [chunk({"role": "assistant", "content": None})]
    for index, (call_id, name, pieces) in enumerate(calls):
        first: dict[str, Any] = {"index": index, "type": "function", "function": {"name": name, "arguments": ""}}
        if call_id is not None:
            first["id"] = call_id
        out.append(chunk({"tool_calls": [first]}))
        out.extend(chunk({"tool_calls": [{"index": index, "function": {"arguments": p}}]}) for p in pieces)
    if finish_reason is not None:
        out.append(chunk({}, finish_reason))
    if usage is not None:
        out.append(usage_chunk(*usage))
    return out


def embeddings_response(vectors: Sequence[Sequence[float]], *, model: str = "text-embedding-3-small",
                        prompt_tokens: int | None = 8) -> dict[str, Any]:
    """OpenAI's embeddings list object (API reference: "The embedding object")."""
    out: dict[str, Any] = {"object": "list", "model": model, "data": [
        {"object": "embedding", "index": i, "embedding": list(v)} for i, v in enumerate(vectors)]}
    if prompt_tokens is not None:
        out["usage"] = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return out


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    """OpenAI's error shape."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def png_bytes(width: int = 8, height: int = 8, rgb: tuple[int, int, int] = (40, 120, 200)) -> bytes:
    """A valid solid-colour PNG."""

    def block(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + block(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + block(b"IDAT", zlib.compress(row * height))
        + block(b"IEND", b"")
    )


def images_response(images: Sequence[bytes], *, revised_prompt: str | None = None) -> dict[str, Any]:
    """An Images API response with `images` as b64_json."""
    obj = payload("images_response")
    template = obj["data"][0]
    obj["data"] = []
    for data in images:
        item = dict(template, b64_json=base64.b64encode(data).decode())
        if revised_prompt is None:
            item.pop("revised_prompt", None)
        else:
            item["revised_prompt"] = revised_prompt
        obj["data"].append(item)
    return obj


def video_job(
    job_id: str, status: str = "queued", progress: int = 0, *, model: str = "sora-2", seconds: str = "8",
    size: str = "1024x1808", error: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A Videos API job object."""
    obj = payload("video_job")
    obj.update(id=job_id, status=status, progress=progress, model=model, seconds=seconds, size=size)
    if error is not None:
        obj["error"] = dict(error)
    return obj


# ------------------------------------------------------------------------------------ scenarios
@dataclass(frozen=True)
class Scenario:
    """What the fake does with one request. Build with the classmethods, adjust with the
    modifiers (each returns a new Scenario).

    The body is a sequence of frames (one per SSE event; a JSON body is one frame). Frame
    positions (`stall(after=...)`, `reset(after=...)`) count frames already written.
    """

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    content_type: str = "application/json"
    frames: tuple[bytes, ...] = ()
    streamed: bool = False  # chunked transfer (SSE) rather than Content-Length
    header_delay: float = 0.0  # before the status line: a slow first byte
    body_delay: float = 0.0  # after the headers, before the first body byte
    interval: float = 0.0  # between frames
    split: int | str | None = None  # None: a write per frame; "mid_line": 3 writes cut inside lines; n: n bytes
    split_pause: float = 0.002  # between the pieces of a split frame, so they reach the client apart
    stalls: tuple[tuple[int, float], ...] = ()  # (frames written, seconds)
    reset_after: int | None = None  # abort the TCP connection (RST) after this many frames
    hold: float = 0.0  # keep the connection open this long after the last frame

    # -- builders
    @classmethod
    def json(cls, body: Any, *, status: int = 200, headers: Mapping[str, str] | None = None) -> Scenario:
        return cls(status=status, headers=tuple((headers or {}).items()), frames=(_dumps(body),))

    @classmethod
    def error(
        cls, status: int, message: str = "error", *, type: str = "invalid_request_error", code: str | int | None = None,
        param: str | None = None, headers: Mapping[str, str] | None = None,
    ) -> Scenario:
        return cls.json(error_body(message, type=type, code=code, param=param), status=status, headers=headers)

    @classmethod
    def raw(
        cls, body: bytes, *, status: int = 200, content_type: str = "text/plain",
        headers: Mapping[str, str] | None = None,
    ) -> Scenario:
        return cls(status=status, headers=tuple((headers or {}).items()), content_type=content_type, frames=(body,))

    @classmethod
    def sse(
        cls, events: Iterable[Any], *, done: bool = True, line_ending: str = "\n", comments: bool = False,
        status: int = 200, headers: Mapping[str, str] | None = None,
    ) -> Scenario:
        """An event stream: dicts become ``data: <json>`` events, bytes are sent verbatim (a
        malformed line, a custom frame), then ``data: [DONE]`` if `done`. With `comments`, a
        ``: ...`` comment block opens the stream and each event carries a comment line."""
        frames = [e if isinstance(e, bytes) else sse_event(e) for e in events]
        if done:
            frames.append(DONE)
        if comments:
            frames = [b": OPENROUTER PROCESSING\n" + f for f in frames]
            frames[0] = b": connected\n\n" + frames[0]
        if line_ending != "\n":
            frames = [f.replace(b"\n", line_ending.encode()) for f in frames]
        return cls(status=status, headers=tuple((headers or {}).items()), content_type="text/event-stream",
                   frames=tuple(frames), streamed=True)

    @classmethod
    def chat_stream(
        cls, pieces: Sequence[str] = ("Hello", "!", " How can I assist you today?"), *,
        finish_reason: str | None = "stop", usage: tuple[int, int] | None = (9, 12), **sse_options: Any,
    ) -> Scenario:
        return cls.sse(text_chunks(pieces, finish_reason=finish_reason, usage=usage), **sse_options)

    # -- modifiers
    def slow_first_byte(self, seconds: float) -> Scenario:
        return replace(self, header_delay=seconds)

    def slow_body(self, seconds: float) -> Scenario:
        return replace(self, body_delay=seconds)

    def stall(self, after: int, seconds: float) -> Scenario:
        return replace(self, stalls=(*self.stalls, (after, seconds)))

    def reset(self, after: int) -> Scenario:
        return replace(self, reset_after=after)

    def split_writes(self, how: int | str = "mid_line", pause: float = 0.002) -> Scenario:
        return replace(self, split=how, split_pause=pause)

    def paced(self, interval: float) -> Scenario:
        return replace(self, interval=interval)

    def held_open(self, seconds: float) -> Scenario:
        return replace(self, hold=seconds)

    def with_headers(self, **headers: str) -> Scenario:
        return replace(self, headers=(*self.headers, *headers.items()))


def _pieces(frame: bytes, how: int | str | None) -> list[bytes]:
    if how is None or len(frame) < 2:
        return [frame]
    if isinstance(how, int):
        return [frame[i : i + how] for i in range(0, len(frame), how)]
    # "mid_line": cut inside the field name, inside the value, and between the two newlines.
    cuts = sorted({3, len(frame) // 2, len(frame) - 1} - {0, len(frame)})
    bounds = [0, *cuts, len(frame)]
    return [frame[a:b] for a, b in itertools.pairwise(bounds) if b > a]


# ------------------------------------------------------------------------------------ recording
@dataclass
class Received:
    """One request as the fake saw it, and how its reply went."""

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes
    peer: tuple[str, int] | None  # the client's address: equal ports = one reused connection
    json: Any = None
    disconnected: bool = False  # the client went away before the reply was complete
    completed: bool = False  # the whole reply was written
    reset: bool = False  # the fake reset the connection (Scenario.reset)
    ended: threading.Event = field(default_factory=threading.Event, repr=False)

    async def wait_ended(self, within: float = 5.0) -> None:
        """Waits (from any loop or thread) until the handler is done with this request; raises
        TimeoutError after `within` seconds."""
        deadline = time.monotonic() + within
        while not self.ended.is_set():
            if time.monotonic() > deadline:
                raise TimeoutError("the fake upstream is still handling the request")
            await asyncio.sleep(_POLL)


# ------------------------------------------------------------------------------------ the server
class FakeOpenAI:
    """The fake upstream server. `base_url` is ``http://127.0.0.1:<port>/v1``."""

    def __init__(
        self, *, api_key: str | None = None, text: str = DEFAULT_TEXT, video_polls: int = 2,
        video_bytes: bytes = b"\x00\x00\x00\x18ftypmp42fake-video-bytes",
    ) -> None:
        self.api_key = api_key
        self.text = text
        self.video_polls = video_polls
        self.video_bytes = video_bytes
        self.requests: list[Received] = []
        self.port = 0
        self._queue: collections.deque[Scenario] = collections.deque()
        self._by_model: dict[str, Scenario] = {}
        self._videos: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None

    # -- scripting
    def script(self, *scenarios: Scenario) -> FakeOpenAI:
        """Queues one scenario per upcoming request (in order)."""
        self._queue.extend(scenarios)
        return self

    def on_model(self, model: str, scenario: Scenario) -> FakeOpenAI:
        """Answers every request for `model` with `scenario` (until replaced)."""
        self._by_model[model] = scenario
        return self

    def clear(self) -> FakeOpenAI:
        """Forgets the scripted scenarios, the per-model answers and the recorded requests (so one
        fake can serve many tests)."""
        self._queue.clear()
        self._by_model.clear()
        self.requests.clear()
        return self

    @property
    def pending(self) -> int:
        """How many scripted scenarios no request has used yet."""
        return len(self._queue)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def last(self) -> Received:
        return self.requests[-1]

    # -- lifecycle
    async def start(self, port: int = 0, host: str = "127.0.0.1") -> FakeOpenAI:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, reuse_address=True)
        await site.start()
        server = site._server
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @classmethod
    @contextlib.contextmanager
    def in_thread(cls, **kwargs: Any) -> Iterator[FakeOpenAI]:
        """Runs a fake on its own event loop in a daemon thread (for sync tests)."""
        fake = cls(**kwargs)
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            loop.run_until_complete(fake.start())
            ready.set()
            loop.run_forever()

        thread = threading.Thread(target=run, name="fake-openai", daemon=True)
        thread.start()
        if not ready.wait(10):
            raise RuntimeError("the fake upstream did not start")
        try:
            yield fake
        finally:
            asyncio.run_coroutine_threadsafe(fake.stop(), loop).result(10)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)
            loop.close()

    # -- handling
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        rec = Received(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            peer=request.transport.get_extra_info("peername") if request.transport else None,
        )
        if body and request.content_type == "application/json":
            with contextlib.suppress(ValueError):
                rec.json = json.loads(body)
        self.requests.append(rec)
        try:
            return await self._serve(request, rec, self._pick(rec))
        finally:
            rec.ended.set()

    def _pick(self, rec: Received) -> Scenario:
        if self.api_key is not None and rec.headers.get("authorization") != f"Bearer {self.api_key}":
            return Scenario.error(401, "Incorrect API key provided.", code="invalid_api_key")
        if self._queue:
            return self._queue.popleft()
        model = rec.json.get("model") if isinstance(rec.json, dict) else None
        if isinstance(model, str) and model in self._by_model:
            return self._by_model[model]
        return self._default(rec)

    def _default(self, rec: Received) -> Scenario:
        path, body = rec.path, rec.json if isinstance(rec.json, dict) else {}
        if path.endswith("/chat/completions") and rec.method == "POST":
            words = [w if i == 0 else " " + w for i, w in enumerate(self.text.split(" "))]
            if body.get("stream"):
                options = body.get("stream_options") or {}
                usage = (9, len(words)) if options.get("include_usage") else None
                return Scenario.chat_stream(words, usage=usage)
            return Scenario.json(chat_completion(self.text, model=str(body.get("model", "gpt-4o-mini"))))
        if path.endswith("/embeddings") and rec.method == "POST":
            inputs = body.get("input")
            inputs = inputs if isinstance(inputs, list) else [inputs]
            dims = int(body.get("dimensions") or 3)
            return Scenario.json(embeddings_response([[float(i + 1)] * dims for i in range(len(inputs))],
                                                     model=str(body.get("model", "text-embedding-3-small"))))
        if path.endswith("/images/generations") and rec.method == "POST":
            width, _, height = str(body.get("size", "8x8")).partition("x")
            png = png_bytes(int(width or 8), int(height or 8))
            return Scenario.json(images_response([png] * int(body.get("n", 1))))
        if path.endswith("/videos") and rec.method == "POST":
            job_id = f"video_{next(self._ids):06d}"
            form = body or {}
            self._videos[job_id] = {"polls": 0, "model": form.get("model", "sora-2")}
            return Scenario.json(video_job(job_id, "queued", 0, model=str(self._videos[job_id]["model"])))
        if "/videos/" in path and rec.method == "GET":
            return self._video_answer(path)
        if path.endswith("/models"):
            return Scenario.json({"object": "list", "data": [
                {"id": "gpt-4o-mini", "object": "model", "created": 1721172741, "owned_by": "system"}]})
        return Scenario.error(404, f"Unknown path {path}", code="not_found")

    def _video_answer(self, path: str) -> Scenario:
        rest = path.split("/videos/", 1)[1]
        job_id, _, tail = rest.partition("/")
        job = self._videos.get(job_id)
        if job is None:
            return Scenario.error(404, f"Video {job_id} not found", code="not_found")
        if tail == "content":
            if job["polls"] < self.video_polls:
                return Scenario.error(409, "Video is not ready yet")
            return Scenario.raw(self.video_bytes, content_type="video/mp4")
        job["polls"] += 1
        if job["polls"] >= self.video_polls:
            return Scenario.json(video_job(job_id, "completed", 100))
        return Scenario.json(video_job(job_id, "in_progress", int(100 * job["polls"] / self.video_polls)))

    @staticmethod
    async def _wait(request: web.Request, seconds: float) -> bool:
        """Sleeps, watching the connection; False as soon as the client has gone."""
        deadline = time.monotonic() + seconds
        while True:
            transport = request.transport
            if transport is None or transport.is_closing():
                return False
            left = deadline - time.monotonic()
            if left <= 0:
                return True
            await asyncio.sleep(min(_POLL, left))

    async def _serve(self, request: web.Request, rec: Received, sc: Scenario) -> web.StreamResponse:
        if sc.header_delay and not await self._wait(request, sc.header_delay):
            rec.disconnected = True
            return web.Response(status=499)
        resp = web.StreamResponse(status=sc.status, headers=dict(sc.headers))
        resp.content_type = sc.content_type
        if not sc.streamed:
            resp.content_length = sum(len(f) for f in sc.frames)
        try:
            await resp.prepare(request)
            if sc.body_delay and not await self._wait(request, sc.body_delay):
                rec.disconnected = True
                return resp
            stalls = dict(sc.stalls)
            for i, frame in enumerate(sc.frames):
                if sc.reset_after == i:
                    self._reset(request, rec)
                    return resp
                pause = stalls.get(i, 0.0) + (sc.interval if i else 0.0)
                if pause and not await self._wait(request, pause):
                    rec.disconnected = True
                    return resp
                pieces = _pieces(frame, sc.split)
                for n, piece in enumerate(pieces):
                    if n and not await self._wait(request, sc.split_pause):
                        rec.disconnected = True
                        return resp
                    await resp.write(piece)
            if sc.reset_after is not None and sc.reset_after >= len(sc.frames):
                self._reset(request, rec)
                return resp
            if sc.hold and not await self._wait(request, sc.hold):
                rec.disconnected = True
                return resp
            await resp.write_eof()
        except ConnectionError:
            rec.disconnected = True
            return resp
        rec.completed = True
        return resp

    @staticmethod
    def _reset(request: web.Request, rec: Received) -> None:
        transport = request.transport
        rec.reset = True
        if transport is None:
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:  # SO_LINGER 0: close() sends a RST instead of a FIN
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()


# ------------------------------------------------------------------------------------ standalone
def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible upstream (default behaviours).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None)
    parser.add_argument("--text", default=DEFAULT_TEXT)
    args = parser.parse_args(argv)

    async def serve() -> None:
        fake = FakeOpenAI(api_key=args.api_key, text=args.text)
        await fake.start(args.port, args.host)
        print(f"fake OpenAI upstream on http://{args.host}:{fake.port}/v1", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.stop()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
