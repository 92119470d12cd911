"""An in-process gRPC channel: the co-located gateway calls the servicers without a socket.

`raven serve` runs the REST gateway and the gRPC service in one process. Going through a real
channel there costs a serialisation, an HTTP/2 round trip through grpc's C core and a
deserialisation on each side of every call (measured: about 0.4 ms of CPU per unary call, a third
of the whole REST request). This channel keeps the exact gRPC contract the gateway relies on --
generated stubs, `raven.v1` messages, metadata, `grpc.aio.AioRpcError` with `google.rpc.Status`
details in `grpc-status-details-bin`, cancellation -- while dispatching straight to the same
servicer methods the network server uses (grpc-java calls this an InProcessChannel; grpc Python has
none). External clients keep using the real gRPC port.

Only what the servicers and the gateway use is implemented: unary-unary and unary-stream calls,
invocation metadata, initial/trailing metadata, abort, deadlines and cancellation.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import grpc

from raven_service.core.deadline import within

_EOF = grpc.aio.EOF
_SENTINEL = object()


class HandlerRegistry:
    """Collects method handlers from the generated `add_*Servicer_to_server` functions."""

    def __init__(self) -> None:
        self.handlers: dict[str, grpc.RpcMethodHandler] = {}

    # the two methods the generated registration code calls on a server
    def add_generic_rpc_handlers(self, handlers: Iterable[Any]) -> None:
        """Ignored: the registered-method table below carries the same handlers."""

    def add_registered_method_handlers(self, service: str, handlers: dict[str, grpc.RpcMethodHandler]) -> None:
        for name, handler in handlers.items():
            self.handlers[f"/{service}/{name}"] = handler


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, details: str, trailing: Sequence[tuple[str, Any]]) -> None:
        super().__init__(details)
        self.code = code
        self.details = details
        self.trailing = tuple(trailing)


class _Context:
    """The subset of grpc.aio.ServicerContext the servicers use."""

    __slots__ = ("_initial", "_metadata", "_sent", "_trailing")

    def __init__(self, metadata: Sequence[tuple[str, str]] | None,
                 sent: asyncio.Future[tuple] | None = None) -> None:
        self._metadata = tuple(metadata or ())
        self._initial: tuple = ()
        self._trailing: tuple = ()
        self._sent = sent  # resolved with the initial metadata when the servicer sends it

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    async def send_initial_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._initial = tuple(metadata)
        if self._sent is not None:
            _resolve(self._sent, self._initial)

    def set_trailing_metadata(self, metadata: Sequence[tuple[str, Any]]) -> None:
        self._trailing = tuple(metadata)

    async def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Sequence = ()) -> None:
        raise _Abort(code, details, tuple(self._trailing) + tuple(trailing_metadata))

    def cancelled(self) -> bool:
        return False

    def done(self) -> bool:
        return False

    def peer(self) -> str:
        return "inprocess"


def _resolve(future: asyncio.Future[tuple], metadata: tuple) -> None:
    if not future.done():
        future.set_result(metadata)


def _error(exc: BaseException, initial: tuple, trailing: tuple = ()) -> grpc.aio.AioRpcError:
    if isinstance(exc, _Abort):
        return grpc.aio.AioRpcError(exc.code, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*exc.trailing),
                                    exc.details, None)
    if isinstance(exc, TimeoutError):
        return grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(*initial),
                                    grpc.aio.Metadata(*trailing), "Deadline Exceeded", None)
    return grpc.aio.AioRpcError(grpc.StatusCode.UNKNOWN, grpc.aio.Metadata(*initial), grpc.aio.Metadata(*trailing),
                                f"Unexpected {type(exc).__name__}", None)


class _UnaryCall:
    __slots__ = ("_context", "_handler", "_request", "_timeout")

    def __init__(self, handler: Callable, request: Any, metadata: Any, timeout: float | None) -> None:
        self._handler = handler
        self._request = request
        self._context = _Context(metadata)
        self._timeout = timeout

    def __await__(self):
        return self._run().__await__()

    async def _run(self) -> Any:
        try:
            if self._timeout is None:
                return await self._handler(self._request, self._context)
            async with within(self._timeout):
                return await self._handler(self._request, self._context)
        except (_Abort, Exception) as exc:
            raise _error(exc, self._context._initial, self._context._trailing) from None

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*self._context._initial)

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*self._context._trailing)

    def cancel(self) -> bool:
        return False


async def _pump(handler: Callable, request: Any, deadline_s: float | None, context: _Context,
                initial: asyncio.Future[tuple], queue: asyncio.Queue[Any]) -> None:
    """A stream's task: the servicer's messages into `queue`. A function of the parts it needs, not
    a method of the call: a cancelled task keeps its CancelledError, whose traceback keeps this
    frame, so a frame holding the call would make call -> task -> error -> frame -> call a cycle."""
    try:
        async with within(deadline_s):
            async for message in handler(request, context):
                _resolve(initial, ())
                await queue.put(message)
        _resolve(initial, ())
        await queue.put(_EOF)
    except asyncio.CancelledError:
        _resolve(initial, ())
        raise
    except (_Abort, Exception) as exc:
        _resolve(initial, ())
        await queue.put(_error(exc, context._initial, context._trailing))


class _StreamCall:
    """Runs the servicer's async generator in its own task, like a real call would."""

    __slots__ = ("_context", "_initial", "_queue", "_task")

    def __init__(self, handler: Callable, request: Any, metadata: Any, timeout: float | None) -> None:
        loop = asyncio.get_running_loop()
        self._initial: asyncio.Future[tuple] = loop.create_future()
        # The context gets the future, not a method of this call: no reference cycle, so a stream
        # is freed when it ends rather than at the next full collection (rare by design, see
        # `raven_service.server.GC_THRESHOLDS`).
        self._context = _Context(metadata, self._initial)
        self._queue: asyncio.Queue[Any] = asyncio.Queue(64)
        self._task = loop.create_task(_pump(handler, request, timeout, self._context, self._initial, self._queue))

    async def initial_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*await asyncio.shield(self._initial))

    def initial_metadata_nowait(self) -> grpc.aio.Metadata | None:
        """The initial metadata if the servicer sent it already (None otherwise)."""
        return grpc.aio.Metadata(*self._initial.result()) if self._initial.done() else None

    @property
    def direct_queue(self) -> asyncio.Queue[Any]:
        """The queue the servicer's messages go to, then `grpc.aio.EOF` or the `AioRpcError` that
        ended the call. A reader may wait on it with a timeout (or take items from it directly):
        unlike a pending `read()` on a real call, abandoning a wait here cannot cancel the call.
        The gateway's `RpcStream` reads it instead of pumping `read()` into a queue of its own."""
        return self._queue

    async def trailing_metadata(self) -> grpc.aio.Metadata:
        return grpc.aio.Metadata(*self._context._trailing)

    async def read(self) -> Any:
        item = await self._queue.get()
        if isinstance(item, grpc.aio.AioRpcError):
            self._queue.put_nowait(item)  # later reads fail the same way
            raise item
        if item is _EOF:
            self._queue.put_nowait(_EOF)
        return item

    def __aiter__(self) -> AsyncIterator[Any]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Any]:
        while True:
            item = await self.read()
            if item is _EOF:
                return
            yield item

    def cancel(self) -> bool:
        """Cancels the servicer's generator at once (its `finally` blocks run, as on a real cancel)."""
        if self._task.done():
            return False
        self._task.cancel()
        return True

    def done(self) -> bool:
        return self._task.done()


class _Callable:
    __slots__ = ("_call_type", "_handler")

    def __init__(self, handler: Callable, call_type: type) -> None:
        self._handler = handler
        self._call_type = call_type

    def __call__(self, request: Any, *, timeout: float | None = None, metadata: Any = None, **_: Any) -> Any:
        return self._call_type(self._handler, request, metadata, timeout)


class InProcessChannel:
    """A `grpc.aio.Channel` stand-in dispatching to registered servicer handlers."""

    def __init__(self, registry: HandlerRegistry) -> None:
        self._handlers = registry.handlers

    def _handler(self, method: str) -> grpc.RpcMethodHandler:
        handler = self._handlers.get(method)
        if handler is None:
            raise ValueError(f"no in-process handler for {method}")
        return handler

    def unary_unary(self, method: str, *args: Any, **kwargs: Any) -> _Callable:
        return _Callable(self._handler(method).unary_unary, _UnaryCall)

    def unary_stream(self, method: str, *args: Any, **kwargs: Any) -> _Callable:
        return _Callable(self._handler(method).unary_stream, _StreamCall)

    async def close(self, grace: float | None = None) -> None:
        """Nothing to close: there is no connection."""

    async def __aenter__(self) -> InProcessChannel:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
