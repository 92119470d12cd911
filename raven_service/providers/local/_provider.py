"""`LocalProvider`: the built-in, network-free chat, image and video upstream.

Chat replies are generated whole first (text, JSON or tool calls, from a generator seeded by
`seed` and the conversation), then cut for `max_tokens` / `stop` and streamed token by token
at `tokens_per_second`. Cutting after generation is what makes a cut reply a byte-identical
prefix of the uncut one, and it means a stream never shows text past a stop sequence, even
one that straddles tokens: the cut point is known before the first token is sent.

Any upstream model name is accepted, so a config may route its own slugs to `local`.

Replies that follow a client JSON Schema (tool calls, ``response_format`` json_schema) are
generated off the event loop, in a small thread pool, under the generator's size and time budget
(`_schema.Budget`): a hostile schema costs its own request a bounded error, never the loop that
serves everyone else (SPEC §10).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import msgspec

from raven_service.core.errors import REJECTED, InvalidArgument, UpstreamError
from raven_service.core.tokens import count_message_tokens, count_tokens, tokenize
from raven_service.core.types import (
    ChatEvent,
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    Finish,
    GeneratedImage,
    ImageRequest,
    ProviderChatRequest,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    UsageReport,
    VideoRequest,
    VideoResult,
    VideoState,
)
from raven_service.providers.local._embed import DEFAULT_DIMENSIONS, embed_text, embed_tokens
from raven_service.providers.local._embed import MAX_DIMENSIONS as MAX_EMBED_DIMENSIONS
from raven_service.providers.local._images import render_png
from raven_service.providers.local._schema import BudgetExceeded
from raven_service.providers.local._text import compose_reply
from raven_service.providers.local._tools import plan_tool_calls, select_tools
from raven_service.providers.local._video import encode_video

__all__ = ["LocalProvider", "LocalVideoStatus"]

_ARGUMENT_TOKENS_PER_DELTA = 3
_YIELD_EVERY = 32  # without pacing, let other tasks run every this many tokens
_MAX_PARALLEL_VIDEOS = 2
#: Threads generating schema-driven replies (shared by all LocalProviders of the process).
_PLANNERS = 2
_planner: ThreadPoolExecutor | None = None
log = logging.getLogger("raven.providers.local")


def _planner_pool() -> ThreadPoolExecutor:
    global _planner
    if _planner is None:
        _planner = ThreadPoolExecutor(max_workers=_PLANNERS, thread_name_prefix="raven-local-schema")
    return _planner


def _uses_schema(request: ChatRequest) -> bool:
    fmt = request.response_format
    return bool(request.tools) or (fmt is not None and fmt.type == "json_schema")


def _plan(request: ChatRequest, rng: random.Random) -> tuple[list[ToolCall], str]:
    """The whole reply: tool calls, or else the text (CPU only; may run in a thread)."""
    tools = select_tools(request)
    if tools:
        return plan_tool_calls(request, tools, rng), ""
    return [], compose_reply(request, rng)


# ------------------------------------------------------------------------------------ chat helpers
def _rng_for(request: ChatRequest) -> random.Random:
    """Seeded by `seed` (or temperature 0) and the conversation, else from OS entropy."""
    if request.seed is None and request.temperature != 0:
        return random.Random()
    material = msgspec.json.encode(
        [request.messages, request.tools, request.tool_choice, request.response_format]
    )
    digest = hashlib.sha256(material).hexdigest()
    return random.Random(f"{request.seed or 0}:{digest}")


def _cut(
    text: str, pieces: Sequence[str], max_tokens: int | None, stop: Sequence[str]
) -> tuple[int, str, str]:
    """Where the reply ends (a character offset into `text`), why ("stop" or "length") and the
    stop sequence that ended it ("" if none did)."""
    limit, reason = len(text), "stop"
    if max_tokens is not None and max_tokens < len(pieces):
        limit, reason = sum(len(p) for p in pieces[: max(0, max_tokens)]), "length"
    hits = [(i, s) for s in stop if s and (i := text.find(s)) != -1 and i + len(s) <= limit]
    if hits:
        limit, matched = min(hits, key=lambda hit: hit[0])
        return limit, "stop", matched
    return limit, reason, ""


class _Pacer:
    """Spaces tokens out: the first after `first_latency`, then one every 1/tokens_per_second
    (against a fixed schedule, so slow consumers do not accumulate drift)."""

    def __init__(self, first_latency: float, tokens_per_second: float) -> None:
        self._first = max(0.0, first_latency)
        self._interval = 1.0 / tokens_per_second if tokens_per_second > 0 else 0.0
        self._origin: float | None = None
        self._sent = 0

    async def tick(self, tokens: int = 1) -> None:
        loop = asyncio.get_running_loop()
        if self._origin is None:
            self._origin = loop.time() + self._first
        due = self._origin + max(0, self._sent + tokens - 1) * self._interval
        self._sent += tokens
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        elif self._sent % _YIELD_EVERY < tokens:
            await asyncio.sleep(0)


# ------------------------------------------------------------------------------------ video jobs
@dataclass(slots=True)
class LocalVideoStatus:
    """A snapshot of a local video job (satisfies `core.ports.VideoPoll`)."""

    state: VideoState
    progress: int = 0
    error: str = ""


@dataclass(slots=True)
class _VideoJob:
    request: VideoRequest
    state: VideoState = VideoState.QUEUED
    encoded: float = 0.0  # fraction of frames encoded, written by the encoder thread
    started: float = 0.0  # time.monotonic() when encoding began
    error: str = ""
    data: bytes | None = None
    task: asyncio.Task[None] | None = None
    cancel: threading.Event = field(default_factory=threading.Event)


# ------------------------------------------------------------------------------------ provider
class LocalProvider:
    """A deterministic simulator of an LLM, image and video upstream (ChatProvider,
    ImageProvider and VideoProvider).

    Args:
        name: the provider name routes refer to.
        tokens_per_second: streaming pace; <= 0 streams without delays.
        first_token_latency: seconds before the first token (0 for none).
        video_min_seconds: the least wall time a video job takes, so that clients can observe
            it running.
    """

    def __init__(
        self,
        name: str = "local",
        *,
        tokens_per_second: float = 100.0,
        first_token_latency: float = 0.02,
        video_min_seconds: float = 1.0,
    ) -> None:
        self.name = name
        self.tokens_per_second = tokens_per_second
        self.first_token_latency = first_token_latency
        self.video_min_seconds = video_min_seconds
        self._videos: dict[str, _VideoJob] = {}
        self._video_slots = asyncio.Semaphore(_MAX_PARALLEL_VIDEOS)

    # -- chat
    async def complete(self, req: ProviderChatRequest) -> ChatResult:
        """The same generation and timing as `stream`, gathered into one result."""
        text: list[str] = []
        calls: dict[int, list[str]] = {}
        finish = Finish(reason="stop", native="stop")
        usage = UsageReport(prompt_tokens=0, completion_tokens=0)
        async for event in self.stream(req):
            if isinstance(event, TextDelta):
                text.append(event.text)
            elif isinstance(event, ToolCallDelta):
                call = calls.setdefault(event.index, ["", "", ""])
                call[0] = event.id or call[0]
                call[1] = event.name or call[1]
                call[2] += event.arguments
            elif isinstance(event, Finish):
                finish = event
            elif isinstance(event, UsageReport):
                usage = event
        tool_calls = tuple(ToolCall(id=c[0], name=c[1], arguments=c[2]) for _, c in sorted(calls.items()))
        return ChatResult(
            content="".join(text) if text or not tool_calls else None,
            tool_calls=tool_calls,
            finish_reason=finish.reason,
            native_finish_reason=finish.native,
            stop_sequence=finish.stop_sequence,
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            usage_estimated=False,
        )

    async def stream(self, req: ProviderChatRequest) -> AsyncIterator[ChatEvent]:
        """TextDelta or ToolCallDelta events, then one Finish, then one UsageReport."""
        request = req.request
        rng = _rng_for(request)
        prompt_tokens = count_message_tokens(request.messages, request.tools)
        pacer = _Pacer(self.first_token_latency, self.tokens_per_second)
        calls, text = await self._planned(request, rng)
        if calls:
            async for event in self._stream_tool_calls(calls, request.max_tokens, pacer, prompt_tokens):
                yield event
            return
        pieces = tokenize(text)
        limit, reason, matched = _cut(text, pieces, request.max_tokens, request.stop)
        position = emitted = 0
        for piece in pieces:
            if position >= limit:
                break
            chunk = piece[: limit - position]
            position += len(piece)
            await pacer.tick()
            emitted += 1
            yield TextDelta(text=chunk)
        yield Finish(reason=reason, native=reason, stop_sequence=matched)
        yield UsageReport(prompt_tokens=prompt_tokens, completion_tokens=emitted, estimated=False)

    async def _planned(self, request: ChatRequest, rng: random.Random) -> tuple[list[ToolCall], str]:
        """`_plan`, in the planner threads when a client schema drives it; a schema the budget
        cannot satisfy is the caller's error (400), never a stalled loop or a 500."""
        if not _uses_schema(request):
            return _plan(request, rng)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(_planner_pool(), _plan, request, rng)
        except InvalidArgument:
            raise
        except BudgetExceeded as exc:
            raise UpstreamError(
                f"local simulator: generation budget exceeded ({exc})", provider=self.name, kind=REJECTED,
                public="The schema asks for a larger or more complex value than the local simulator generates "
                       "(its size and time budget ran out).",
            ) from None
        except (ValueError, TypeError, KeyError, AttributeError, IndexError, RecursionError, OverflowError) as exc:
            log.info("local simulator could not follow a schema: %r", exc)
            raise UpstreamError(
                f"local simulator: cannot generate for this schema ({type(exc).__name__})", provider=self.name,
                kind=REJECTED, public="The local simulator cannot generate a value for this schema.",
            ) from None

    async def _stream_tool_calls(
        self, calls: Sequence[ToolCall], max_tokens: int | None, pacer: _Pacer, prompt_tokens: int
    ) -> AsyncIterator[ChatEvent]:
        budget = max_tokens if max_tokens is not None else -1
        used = 0
        reason = "tool_calls"
        for index, call in enumerate(calls):
            if 0 <= budget <= used:
                reason = "length"
                break
            name_tokens = count_tokens(call.name)
            await pacer.tick(name_tokens)
            used += name_tokens
            yield ToolCallDelta(index=index, id=call.id, name=call.name, arguments="")
            pieces = tokenize(call.arguments)
            for start in range(0, len(pieces), _ARGUMENT_TOKENS_PER_DELTA):
                group = pieces[start : start + _ARGUMENT_TOKENS_PER_DELTA]
                if budget >= 0:
                    group = group[: max(0, budget - used)]
                    if not group:
                        reason = "length"
                        break
                await pacer.tick(len(group))
                used += len(group)
                yield ToolCallDelta(index=index, arguments="".join(group))
            if reason == "length":
                break
        yield Finish(reason=reason, native=reason)
        yield UsageReport(prompt_tokens=prompt_tokens, completion_tokens=used, estimated=False)

    # -- embeddings
    async def embed(self, upstream_model: str, req: EmbeddingRequest) -> EmbeddingResult:
        """Deterministic unit vectors (see `_embed`), `req.dimensions` long (default 384)."""
        dims = req.dimensions or DEFAULT_DIMENSIONS
        if dims > MAX_EMBED_DIMENSIONS:
            too_many = f"'dimensions' must be at most {MAX_EMBED_DIMENSIONS}."
            raise UpstreamError(too_many, provider=self.name, kind=REJECTED, status=400, public=too_many)
        if req.texts:
            vectors = tuple(embed_text(t, dims) for t in req.texts)
            tokens = sum(count_tokens(t) for t in req.texts)
        else:
            vectors = tuple(embed_tokens(t, dims) for t in req.token_arrays)
            tokens = sum(len(t) for t in req.token_arrays)
        return EmbeddingResult(vectors=vectors, prompt_tokens=tokens)

    # -- images
    async def generate_images(self, upstream_model: str, req: ImageRequest) -> list[GeneratedImage]:
        """`req.n` PNGs of exactly req.width x req.height, the same for the same (prompt, seed)."""
        seed = req.seed if req.seed is not None else random.randrange(2**32)

        def render() -> list[GeneratedImage]:
            return [
                GeneratedImage(png=render_png(req.prompt, seed, i, req.width, req.height), revised_prompt=req.prompt)
                for i in range(req.n)
            ]

        return await asyncio.to_thread(render)

    # -- video
    async def submit_video(self, upstream_model: str, req: VideoRequest, task_id: str) -> str:
        """Starts rendering in the background; returns "localvid-<task_id>". Submitting the same
        task again while its job is alive is a no-op."""
        upstream_id = f"localvid-{task_id}"
        job = self._videos.get(upstream_id)
        if job is None or job.state == VideoState.FAILED:
            self._start_video(upstream_id, req)
        return upstream_id

    async def poll_video(self, upstream_model: str, req: VideoRequest, upstream_id: str) -> LocalVideoStatus:
        """The job's state and progress (0-100). An unknown id (the process restarted since the
        submit) is resubmitted under the same id and reported RUNNING."""
        job = self._videos.get(upstream_id)
        if job is None:
            self._start_video(upstream_id, req)
            return LocalVideoStatus(state=VideoState.RUNNING, progress=0)
        if job.state == VideoState.SUCCEEDED:
            return LocalVideoStatus(state=job.state, progress=100)
        if job.state == VideoState.RUNNING:
            elapsed = time.monotonic() - job.started
            timed = elapsed / self.video_min_seconds if self.video_min_seconds > 0 else 1.0
            return LocalVideoStatus(state=job.state, progress=int(99 * min(job.encoded, timed, 1.0)))
        return LocalVideoStatus(state=job.state, progress=0, error=job.error)

    async def fetch_video(self, upstream_id: str) -> VideoResult:
        """The finished MP4. Kept until `forget(upstream_id)`, so a retry can fetch it again."""
        job = self._videos.get(upstream_id)
        if job is None:
            raise UpstreamError(f"unknown local video job {upstream_id!r}", provider=self.name, status=404)
        if job.state != VideoState.SUCCEEDED or job.data is None:
            pending = job.state in (VideoState.QUEUED, VideoState.RUNNING)
            detail = f": {job.error}" if job.error else ""
            raise UpstreamError(
                f"local video job {upstream_id!r} is {job.state.value}{detail}",
                provider=self.name,
                status=409,
                retryable=pending,
            )
        return VideoResult(data=job.data, mime_type="video/mp4")

    def forget(self, upstream_id: str) -> None:
        """Drops a job and its bytes (cancelling it if it still runs)."""
        job = self._videos.pop(upstream_id, None)
        if job is not None:
            job.cancel.set()
            if job.task is not None and not job.task.done():
                job.task.cancel()

    async def aclose(self) -> None:
        """Cancels running video jobs (their encoder threads stop at the next frame)."""
        tasks = []
        for job in self._videos.values():
            job.cancel.set()
            if job.task is not None and not job.task.done():
                job.task.cancel()
                tasks.append(job.task)
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    def _start_video(self, upstream_id: str, req: VideoRequest) -> None:
        job = _VideoJob(request=req)
        self._videos[upstream_id] = job
        job.task = asyncio.create_task(self._run_video(upstream_id, job), name=f"local-video:{upstream_id}")

    async def _run_video(self, upstream_id: str, job: _VideoJob) -> None:
        req = job.request
        # Without a seed, the id picks one: a job resubmitted after a restart renders the same clip.
        seed = req.seed if req.seed is not None else int(hashlib.sha256(upstream_id.encode()).hexdigest()[:8], 16)

        def progress(fraction: float) -> None:
            job.encoded = fraction

        try:
            async with self._video_slots:
                job.state, job.started = VideoState.RUNNING, time.monotonic()
                data = await asyncio.to_thread(
                    encode_video,
                    req.prompt,
                    req.seconds,
                    req.width,
                    req.height,
                    seed,
                    req.image,
                    on_progress=progress,
                    cancel=job.cancel,
                )
                remaining = self.video_min_seconds - (time.monotonic() - job.started)
                if remaining > 0:
                    await asyncio.sleep(remaining)
        except asyncio.CancelledError:
            job.cancel.set()
            raise
        except Exception as exc:  # a bad input image, an encoder failure: the job fails
            job.state, job.error = VideoState.FAILED, f"video rendering failed: {exc}"
            return
        job.data, job.encoded, job.state = data, 1.0, VideoState.SUCCEEDED

