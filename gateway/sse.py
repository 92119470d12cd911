"""Server-streaming gRPC calls -> HTTP streams (SSE for chat, raw bytes for files).

:class:`RpcStream` pumps a call into a small bounded queue, so that a consumer can wait for the next
message with a timeout *without* cancelling the call (cancelling a pending ``call.read()`` would
cancel the RPC), and can take every message that is already there in one go (bursts of chunks
become one socket write). :func:`sse_events` turns the batches into SSE frames: one
``data: <json>`` event per message, a ``: RAVEN PROCESSING`` comment whenever nothing arrived for
``keepalive`` seconds, a final error event if the call fails after the headers went out, and
``data: [DONE]``. Whatever ends the generator (end of stream, failure, client disconnect) cancels
the gRPC call in ``finally``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any, Final, Generic, TypeVar

import grpc
from litestar.response import Stream
from litestar.response.base import ASGIResponse
from litestar.response.streaming import ASGIStreamingResponse
from litestar.types import Receive, Send

__all__ = [
    "DONE",
    "END",
    "KEEPALIVE",
    "EventStream",
    "RpcStream",
    "data_event",
    "open_stream",
    "sse_events",
]

T = TypeVar("T")

DONE: Final = b"data: [DONE]\n\n"
KEEPALIVE: Final = b": RAVEN PROCESSING\n\n"


class _End:
    """The end-of-stream marker in a batch."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "END"


END: Final = _End()

#: A batch item: a message, END, or the exception that ended the call (after which nothing follows).
Item = Any


def data_event(payload: bytes) -> bytes:
    """One SSE ``data:`` event (``payload`` is single-line JSON)."""
    return b"data: " + payload + b"\n\n"


class _Tick:
    """Put in a stream's queue by its keepalive timer: nothing arrived for ``keepalive`` seconds."""

    __slots__ = ()


_TICK: Final = _Tick()


class RpcStream(Generic[T]):
    """A server-streaming call read into a bounded queue that a consumer can wait on without
    cancelling the call.

    A real ``grpc.aio`` call is read by a background pump task (cancelling a pending
    ``call.read()`` would cancel the RPC). A call that hands out its own queue (``direct_queue``:
    messages, then ``grpc.aio.EOF`` or the ``AioRpcError`` that ended it; the in-process channel's
    calls do) is read straight from that queue: one queue and one task fewer per message.

    Waiting with a ``keepalive`` costs one timer per stream, not one per wait: the timer puts a
    tick into the queue whenever nothing was taken from it for ``keepalive`` seconds.
    """

    __slots__ = ("_call", "_direct", "_keepalive", "_last", "_loop", "_pump", "_queue", "_tick_handle",
                 "_ticked", "initial_metadata")

    def __init__(self, call: grpc.aio.UnaryStreamCall[Any, T], *, buffer: int = 64,
                 keepalive: float | None = None) -> None:
        """Start reading ``call`` (must run inside the event loop)."""
        self._call = call
        self._loop = loop = asyncio.get_running_loop()
        direct = getattr(call, "direct_queue", None)
        self._direct = direct is not None
        self._queue: asyncio.Queue[Any] = direct if direct is not None else asyncio.Queue(buffer)
        #: The call's initial metadata once received (None until then).
        self.initial_metadata: grpc.aio.Metadata | None = None
        self._pump = None if direct is not None else loop.create_task(self._run())
        self._keepalive = keepalive
        self._last = loop.time()
        self._ticked = False
        self._tick_handle = (loop.call_at(self._last + keepalive, self._on_tick)
                             if keepalive is not None else None)

    async def _run(self) -> None:
        call, queue = self._call, self._queue
        try:
            self.initial_metadata = await call.initial_metadata()
            while True:
                message = await call.read()
                if message is grpc.aio.EOF:
                    await queue.put(END)
                    return
                await queue.put(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # AioRpcError, or a bug: either way the consumer reports it
            await queue.put(exc)

    def _on_tick(self) -> None:
        keepalive = self._keepalive
        assert keepalive is not None
        now = self._loop.time()
        if now - self._last >= keepalive:
            if not self._ticked and not self._queue.full():
                self._ticked = True
                self._queue.put_nowait(_TICK)
            self._last = now
        self._tick_handle = self._loop.call_at(self._last + keepalive, self._on_tick)

    async def next_batch(self, wait: float | None) -> list[Item] | None:
        """Every item available now, waiting up to ``wait`` seconds (None: forever) for the first.

        Returns:
            The items (the last may be END or an exception), or None if ``wait`` passed first.
        """
        queue = self._queue
        if not queue.empty():
            first = queue.get_nowait()
        elif wait is None or wait == self._keepalive:
            first = await queue.get()
        else:  # not the stream's own keepalive: a timer of its own
            try:
                async with asyncio.timeout(wait):
                    first = await queue.get()
            except TimeoutError:
                return None
        self._last = self._loop.time()
        if self._direct and self.initial_metadata is None:
            self.initial_metadata = self._call.initial_metadata_nowait()
        batch: list[Item] = []
        item = first
        while True:
            if item is not _TICK:
                if self._direct and item is grpc.aio.EOF:
                    item = END
                batch.append(item)
                if item is END or isinstance(item, BaseException):
                    break  # nothing follows the end
            if queue.empty():
                break
            item = queue.get_nowait()
        self._ticked = False
        return batch or None

    def cancel(self) -> None:
        """Stop reading and cancel the RPC (a no-op once it finished)."""
        if self._tick_handle is not None:
            self._tick_handle.cancel()
        pump, self._pump = self._pump, None  # a cancelled task keeps its error, whose frames hold self
        if pump is not None:
            pump.cancel()
        self._call.cancel()


async def open_stream(
    call: grpc.aio.UnaryStreamCall[Any, T], wait: float | None, *, buffer: int = 64
) -> tuple[RpcStream[T], list[Item] | None]:
    """Start reading ``call`` and wait up to ``wait`` seconds for its first message.

    ``wait`` is also the stream's keepalive: later ``next_batch(wait)`` calls with the same value use
    the stream's one keepalive timer.

    Returns:
        The stream and its first batch (None if ``wait`` passed first).

    Raises:
        grpc.aio.AioRpcError: the call failed before its first message (answer with an HTTP error).
    """
    stream: RpcStream[T] = RpcStream(call, buffer=buffer, keepalive=wait)
    try:
        first = await stream.next_batch(wait)
    except BaseException:
        stream.cancel()
        raise
    if first is not None and isinstance(first[0], BaseException):
        stream.cancel()
        raise first[0]
    return stream, first


async def sse_events(
    stream: RpcStream[T],
    first: list[Item] | None,
    *,
    keepalive: float,
    render: Callable[[T], bytes],
    render_error: Callable[[BaseException], bytes],
    done: bytes = DONE,
    keepalive_frame: bytes = KEEPALIVE,
) -> AsyncIterator[bytes]:
    """SSE frames for ``stream``, starting with the batch ``first`` (None: nothing arrived yet).

    Args:
        stream: The stream being read.
        first: The batch :func:`open_stream` returned.
        keepalive: Seconds of silence after which a comment is sent.
        render: One message -> one complete ``data:`` event.
        render_error: The exception that ended the call -> one complete ``data:`` event.
        done: The frame after the last one (``data: [DONE]``; b"" for dialects without one).
        keepalive_frame: What is sent after ``keepalive`` seconds of silence (a comment; Anthropic's
            dialect sends its ``ping`` event).
    """
    try:
        batch = first
        while True:
            if batch is None:
                yield keepalive_frame
            else:
                try:
                    frames, ended = _frames(batch, render, render_error, done)
                except Exception as exc:  # a rendering bug must still end the stream properly
                    frames, ended = [render_error(exc), done], True
                if out := (b"".join(frames) if len(frames) > 1 else frames[0]):
                    yield out
                if ended:
                    return
            batch = await stream.next_batch(keepalive)
    finally:
        stream.cancel()


def _frames(
    batch: list[Item], render: Callable[[Any], bytes], render_error: Callable[[BaseException], bytes],
    done: bytes = DONE,
) -> tuple[list[bytes], bool]:
    """The SSE frames of one batch, and whether the stream ended with it."""
    frames: list[bytes] = []
    for item in batch:
        if item is END:
            frames.append(done)
            return frames, True
        if isinstance(item, BaseException):
            frames.append(render_error(item))
            frames.append(done)
            return frames, True
        frames.append(render(item))
    return frames, False


class _ASGIEventStream(ASGIStreamingResponse):
    """Litestar's streaming response, sending from the request's own task. Litestar's runs the body
    in a task of an anyio task group beside a disconnect listener: a task group and a cancel scope
    per stream, and on a client disconnect anyio keeps the CancelledError in a frame its traceback
    holds, a reference cycle that kept the whole request's objects until a full collection. Here
    one listener task cancels the request's task when the client goes; that cancellation ends the
    body like anyio's did (the stream's generator is closed, which cancels the gRPC call) and is
    then absorbed, any other one propagates."""

    __slots__ = ()

    async def send_body(self, send: Send, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        listener = asyncio.get_running_loop().create_task(_cancel_on_disconnect(receive, task))
        try:
            await self._stream(send)
        except asyncio.CancelledError:
            if not (listener.done() and not listener.cancelled() and listener.result()):
                raise
            if task.uncancel() > 0:  # cancelled from elsewhere too (shutdown)
                raise
            if (aclose := getattr(self.iterator, "aclose", None)) is not None:
                await aclose()  # the generator's finally now, not when it is collected
        finally:
            listener.cancel()


async def _cancel_on_disconnect(receive: Receive, task: asyncio.Task[Any]) -> bool:
    """Waits for the client's disconnect, then cancels `task` (True); cancelled once the body is out."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            task.cancel()
            return True


class EventStream(Stream):
    """`litestar.response.Stream` for the SSE routes, answered by :class:`_ASGIEventStream`."""

    __slots__ = ()

    def to_asgi_response(self, *args: Any, **kwargs: Any) -> ASGIResponse:
        response = super().to_asgi_response(*args, **kwargs)
        assert type(response) is ASGIStreamingResponse
        # Litestar's own response, sent by our send_body: the subclass adds no state (no slots).
        response.__class__ = _ASGIEventStream
        return response
