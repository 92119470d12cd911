"""Image and video use cases, generated-file access."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal

from raven_service.accounting.pricing import image_cost, video_cost
from raven_service.app.admission import Admitter, Ticket
from raven_service.app.validation import validate_input_image
from raven_service.core.errors import InvalidArgument, NotFound, RavenError
from raven_service.core.ports import FileStore, ImageProvider, VideoTaskStore
from raven_service.core.types import (
    ImageRequest,
    Principal,
    StoredFile,
    UsageRecord,
    VideoRequest,
    VideoState,
    VideoTask,
)
from raven_service.routing.catalogue import Catalogue

IMAGE_SIZES = {(256, 256), (512, 512), (1024, 1024), (1024, 1792), (1792, 1024), (1536, 1024), (1024, 1536)}
MAX_IMAGES = 10
MAX_VIDEO_SECONDS = 20
MAX_VIDEO_SIDE = 1920


def parse_size(size: str, param: str = "size") -> tuple[int, int]:
    w, sep, h = size.lower().partition("x")
    if not sep or not w.isdigit() or not h.isdigit() or int(w) <= 0 or int(h) <= 0:
        raise InvalidArgument(f"'{param}' must look like WIDTHxHEIGHT, got '{size}'.", param=param,
                              code="invalid_value")
    return int(w), int(h)


@dataclass(frozen=True, slots=True)
class ImagesResult:
    id: str
    created: int
    images: list[tuple[bytes, str, str]]  # (png, stored file id or "", revised prompt)
    cost: Decimal


class ImageUseCase:
    def __init__(self, catalogue: Catalogue, providers: dict[str, ImageProvider], files: FileStore,
                 admitter: Admitter) -> None:
        self._catalogue = catalogue
        self._providers = providers
        self._files = files
        self._admitter = admitter

    async def generate(self, principal: Principal, model_slug: str, prompt: str, *, n: int | None,
                       size: str | None, response_format: str | None, seed: int | None = None,
                       quality: str | None = None, style: str | None = None) -> ImagesResult:
        try:
            model = self._catalogue.resolve(model_slug, "images")
            if not prompt.strip():
                raise InvalidArgument("'prompt' is required.", param="prompt", code="missing_required_parameter")
            count = 1 if n is None else n
            if not 1 <= count <= MAX_IMAGES:
                raise InvalidArgument(f"'n' must be between 1 and {MAX_IMAGES}.", param="n", code="invalid_value")
            width, height = parse_size(size or "1024x1024")
            if (width, height) not in IMAGE_SIZES:
                allowed = ", ".join(f"{w}x{h}" for w, h in sorted(IMAGE_SIZES))
                raise InvalidArgument(f"'size' must be one of {allowed}.", param="size", code="invalid_value")
            fmt = response_format or "b64_json"
            if fmt not in ("b64_json", "url"):
                raise InvalidArgument("'response_format' must be 'b64_json' or 'url'.", param="response_format",
                                      code="invalid_value")
            route = model.routes[0]
            provider = self._providers.get(route.provider)
            if provider is None:
                raise InvalidArgument(f"The model '{model_slug}' has no image route.", param="model")
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            raise
        cost = image_cost(model, count)
        gen_id = "img-" + os.urandom(16).hex()

        def record(ticket: Ticket, status: str, error: str, actual: Decimal = Decimal(0)) -> UsageRecord:
            return UsageRecord(
                id=gen_id, key_id=principal.key_id, kind="image", model=model.id, provider=route.provider,
                upstream_model=route.model, cost=actual, status=status, error=error,
                latency_ms=int((time.monotonic() - ticket.started) * 1000), created_at=ticket.created,
                attempts=(f"{route.provider}/{route.model}:{'ok' if status == 'completed' else 'error'}",),
            )

        async with self._admitter.admitted(principal, cost, record_id=gen_id, fallback=record,
                                           models=(model.id,)) as ticket:
            try:
                req = ImageRequest(model=route.model, prompt=prompt, n=count, width=width, height=height,
                                   response_format=fmt, seed=seed, quality=quality, style=style)  # type: ignore[arg-type]
                images = await provider.generate_images(route.model, req)
                out = []
                for img in images:
                    stored = ""
                    if fmt == "url":
                        file_id = "file-" + os.urandom(16).hex()
                        await self._files.put_file(StoredFile(id=file_id, key_id=principal.key_id,
                                                              mime_type="image/png", data=img.png,
                                                              created_at=time.time()))
                        stored = file_id
                    out.append((img.png, stored, img.revised_prompt))
            except RavenError as exc:
                exc.rate = ticket.rate
                raise
            ticket.record = record(ticket, "completed", "", cost)
            return ImagesResult(id=gen_id, created=int(ticket.created), images=out, cost=cost)


class VideoUseCase:
    """Submission and lookup; the work itself is done by jobs.videos.VideoWorker."""

    def __init__(self, catalogue: Catalogue, tasks: VideoTaskStore, admitter: Admitter, wake=None, *,
                 hold_seconds: float = 1800.0 + 120.0) -> None:
        self._catalogue = catalogue
        self._tasks = tasks
        self._admitter = admitter
        self._wake = wake
        self._hold_seconds = hold_seconds  # the task deadline plus a margin: the hold outlives the task

    async def create(self, principal: Principal, model_slug: str, prompt: str, *, seconds: int | None,
                     size: str | None, image: bytes | None, request_id: str, seed: int | None) -> VideoTask:
        try:
            model = self._catalogue.resolve(model_slug, "video")
            if not prompt.strip():
                raise InvalidArgument("'prompt' is required.", param="prompt", code="missing_required_parameter")
            secs = 4 if seconds is None else seconds
            if not 1 <= secs <= MAX_VIDEO_SECONDS:
                raise InvalidArgument(f"'seconds' must be between 1 and {MAX_VIDEO_SECONDS}.", param="seconds",
                                      code="invalid_value")
            width, height = parse_size(size or "640x360")
            if width > MAX_VIDEO_SIDE or height > MAX_VIDEO_SIDE or width < 16 or height < 16:
                raise InvalidArgument(f"'size' sides must be between 16 and {MAX_VIDEO_SIDE}.", param="size",
                                      code="invalid_value")
            if len(request_id) > 200:
                raise InvalidArgument("The idempotency key is longer than 200 characters.", param="request_id")
            if image is not None:
                validate_input_image(image)  # header only: a decompression bomb never reaches a worker
        except RavenError as exc:
            await self._admitter.attach_rate(exc, principal)
            raise
        cost = video_cost(model, secs)
        task_id = "vid-" + os.urandom(16).hex()

        def submit_record(ticket: Ticket, status: str, error: str) -> UsageRecord:
            # The submission itself, when it did not become a task (cancelled, failed, or a duplicate
            # of an earlier submission): its own id, so it can never stand in for the task's record.
            return UsageRecord(id="vsub-" + task_id[4:], key_id=principal.key_id, kind="video", model=model.id,
                               status=status, error=error, created_at=ticket.created,
                               latency_ms=int((time.monotonic() - ticket.started) * 1000))

        # The hold outlives this call: the task settles it when it ends (fenced, exactly once).
        async with self._admitter.admitted(principal, cost, record_id=task_id, fallback=submit_record,
                                           models=(model.id,), hold_seconds=self._hold_seconds) as ticket:
            task = VideoTask(
                id=task_id, key_id=principal.key_id, model=model.id, prompt=prompt, seconds=secs,
                width=width, height=height, request_id=request_id, seed=seed, image=image,
                state=VideoState.QUEUED, provider=model.routes[0].provider, reserved=ticket.reserved,
                hold_id=ticket.hold.id if ticket.hold is not None else "", created_at=time.time(),
                tags=principal.metadata,
            )
            stored, created = await self._tasks.create_video_task(task)
            if created:
                ticket.handed_over = True
            else:  # an idempotent replay: the earlier task is the answer, this hold is released
                ticket.record = submit_record(ticket, "completed", "")
        if created and self._wake is not None:
            self._wake()
        return stored

    async def get(self, principal: Principal, task_id: str) -> VideoTask:
        task = await self._tasks.get_video_task(task_id)
        if task is None or task.key_id != principal.key_id:
            raise NotFound(f"No video generation with id '{task_id}'.", param="id", code="task_not_found")
        return task

    async def list(self, principal: Principal, page_size: int, page_token: str) -> tuple[list[VideoTask], str]:
        size = 20 if page_size <= 0 else min(page_size, 100)
        before = None
        if page_token:
            ts, _, tid = page_token.partition(":")
            try:
                before = (float(ts), tid)
            except ValueError:
                raise InvalidArgument("Invalid page_token.", param="page_token") from None
        tasks = await self._tasks.list_video_tasks(principal.key_id, size + 1, before)
        token = ""
        if len(tasks) > size:
            tasks = tasks[:size]
            token = f"{tasks[-1].created_at!r}:{tasks[-1].id}"
        return tasks, token


#: How long generated images and videos stay downloadable (the expiry their responses advertise).
OUTPUT_TTL = 7 * 24 * 3600.0


class FileUseCase:
    """Stored outputs: downloadable by their owner until `ttl` after creation, then gone.

    Expiry is exact at read time (an expired file answers 404 even before a sweep removed it);
    `sweep` deletes expired blobs in batches (run periodically by jobs.files.OutputJanitor)."""

    def __init__(self, store: FileStore, *, ttl: float = OUTPUT_TTL, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.ttl = ttl
        self._clock = clock

    async def get(self, principal: Principal, file_id: str) -> StoredFile:
        f = await self._store.get_file(file_id)
        if f is None or f.key_id != principal.key_id or f.created_at + self.ttl <= self._clock():
            raise NotFound(f"No file with id '{file_id}'.", param="id", code="file_not_found")
        return f

    async def sweep(self, batch: int = 500) -> int:
        """Deletes every file past its expiry; returns how many."""
        cutoff = self._clock() - self.ttl
        total = 0
        while True:
            n = await self._store.delete_files_before(cutoff, batch)
            total += n
            if n < batch:
                return total


@dataclass(frozen=True, slots=True)
class VideoWork:
    """What the worker needs to run one task (request rebuilt from the stored task)."""

    task: VideoTask

    def request(self, upstream_model: str) -> VideoRequest:
        t = self.task
        return VideoRequest(model=upstream_model, prompt=t.prompt, seconds=t.seconds, width=t.width,
                            height=t.height, image=t.image, seed=t.seed)
