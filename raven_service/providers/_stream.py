"""The read loop every streaming adapter shares: upstream bytes -> SSE events -> domain events.

Each adapter keeps its own per-request translation state (the `StreamState` protocol below: how
to handle one SSE event, and when the upstream has said everything that matters); the rules for
ending a stream are the same for all of them and live here once:

- an upstream read failure after the content finished (only a usage tail or `[DONE]` missing)
  ends the stream normally; before that it is an error, no longer retryable once events went out;
- a body that ends before the content finished is an error;
- events that arrived before a failure are handed out first, then the failure is raised.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from raven_service.core.errors import BROKEN, UpstreamError
from raven_service.core.types import (
    ChatEvent,
    ChatResult,
    Finish,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    UsageReport,
)
from raven_service.providers._http import UpstreamResponse, scrub
from raven_service.providers._sse import SSEDecoder, SSEError, SSEEvent


class StreamState(Protocol):
    out: list[ChatEvent]  # events translated but not yet handed out
    done: bool  # the stream is over
    emitted: bool  # any event handed out (or about to be)
    error: UpstreamError | None  # raised after the events that preceded it

    @property
    def finished(self) -> bool:
        """The upstream said everything that matters (a finish / stop reason arrived)."""
        ...

    def on_event(self, event: SSEEvent) -> None: ...

    def malformed(self, what: str) -> UpstreamError: ...


class StreamStateBase:
    """The bookkeeping every adapter's per-stream state shares (subclasses add the translation)."""

    __slots__ = ("done", "emitted", "error", "out", "provider", "secrets")

    def __init__(self, provider: str, secrets: Sequence[str]) -> None:
        self.provider = provider
        self.secrets = secrets
        self.out: list[ChatEvent] = []
        self.done = False  # the stream is over
        self.emitted = False  # any event handed out (or about to be)
        self.error: UpstreamError | None = None  # raised after the events that preceded it

    def malformed(self, what: str) -> UpstreamError:
        return UpstreamError(
            scrub(f"upstream {self.provider!r} sent {what}", self.secrets), provider=self.provider, retryable=False,
            kind=BROKEN,
        )


async def next_batch(provider: str, resp: UpstreamResponse, state: StreamState,
                     decoder: SSEDecoder) -> list[ChatEvent] | None:
    """The events of the next read (maybe none); None once the stream is over. Raises if it ends
    before finishing."""
    if state.error is not None:
        raise state.error
    if state.done:
        return None
    try:
        data = await resp.chunk()
    except UpstreamError as exc:
        if state.finished:
            return None  # all content arrived; only the tail (usage, [DONE], end of body) is missing
        if state.emitted:
            exc.retryable = False
        raise
    try:
        events = decoder.feed(data) if data else decoder.flush()
    except SSEError as exc:
        raise state.malformed(str(exc)) from None
    try:
        for event in events:
            state.on_event(event)
            if state.done:
                break
        if not data and not state.done:
            if not state.finished:
                raise UpstreamError(f"upstream {provider!r} ended the stream before it finished",
                                    provider=provider, retryable=not state.emitted)
            state.done = True
    except UpstreamError as exc:
        if not state.out:
            raise
        state.error = exc  # hand out what arrived before the failure first
    batch, state.out = state.out, []
    return batch


def result_events(result: ChatResult) -> list[ChatEvent]:
    """A whole completion as stream events (an upstream that answered a stream request with one
    JSON body)."""
    events: list[ChatEvent] = [
        ReasoningDelta(index=i, text=part.text, signature=part.signature, encrypted=part.encrypted)
        for i, part in enumerate(result.reasoning)
    ]
    if result.content:
        events.append(TextDelta(text=result.content))
    for i, call in enumerate(result.tool_calls):
        events.append(ToolCallDelta(index=i, id=call.id, name=call.name, arguments=call.arguments))
    events.append(Finish(reason=result.finish_reason, native=result.native_finish_reason,
                         stop_sequence=result.stop_sequence))
    events.append(UsageReport(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                              estimated=result.usage_estimated, cached_tokens=result.cached_tokens,
                              cache_creation_tokens=result.cache_creation_tokens,
                              reasoning_tokens=result.reasoning_tokens))
    return events
