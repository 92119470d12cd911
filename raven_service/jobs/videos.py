"""The video worker: claims queued tasks with a lease, drives the provider's job API
(submit -> poll -> fetch), stores the output, settles or refunds the reservation and writes the
usage record. A restart loses nothing: a queued task is claimed again, a running one is re-polled
once its lease expires (or at once, after a clean shutdown released it)."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from decimal import Decimal

from raven_service.accounting.usage import UsageWriter
from raven_service.app.media import VideoWork
from raven_service.core.errors import RavenError
from raven_service.core.ports import Store, VideoProvider
from raven_service.core.types import StoredFile, UsageRecord, VideoState, VideoTask
from raven_service.routing.catalogue import Catalogue

log = logging.getLogger("raven.videos")


class VideoWorker:
    def __init__(self, store: Store, catalogue: Catalogue, providers: dict[str, VideoProvider],
                 usage: UsageWriter, *, concurrency: int = 2, lease_seconds: float = 30.0,
                 poll_interval: float = 0.25, idle_interval: float = 1.0) -> None:
        self._store = store
        self._catalogue = catalogue
        self._providers = providers
        self._usage = usage
        self._concurrency = max(1, concurrency)
        self._lease = lease_seconds
        self._poll = poll_interval
        self._idle = idle_interval
        self.worker_id = "w-" + uuid.uuid4().hex[:12]
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._finalizing: set[asyncio.Future[None]] = set()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        for i in range(self._concurrency):
            self._tasks.append(asyncio.create_task(self._loop(), name=f"video-worker-{i}"))

    async def stop(self) -> None:
        """Stops the loops and returns claimed, unfinished tasks to the queue."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._finalizing:  # tasks that were concluding when we stopped finish their writes
            await asyncio.gather(*self._finalizing, return_exceptions=True)
        try:
            await self._store.release_video_tasks(self.worker_id)
        except Exception:
            log.exception("releasing video tasks failed")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                task = await self._store.claim_video_task(self.worker_id, time.time(), self._lease)
            except Exception:
                log.exception("claiming a video task failed")
                task = None
            if task is None:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), self._idle)
                except TimeoutError:
                    pass
                continue
            try:
                await self.run(task)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("video task %s crashed", task.id)

    async def _save(self, task: VideoTask) -> None:
        task.lease_owner = self.worker_id
        task.lease_until = time.time() + self._lease
        await self._store.update_video_task(task)

    async def run(self, task: VideoTask) -> None:
        try:
            model = self._catalogue.get(task.model)
            route = model.routes[0]
            provider = self._providers[route.provider]
            request = VideoWork(task).request(route.model)
            if task.state == VideoState.QUEUED or not task.upstream_task_id:
                task.upstream_task_id = await provider.submit_video(route.model, request, task.id)
                task.state, task.progress = VideoState.RUNNING, 0
                await self._save(task)
            while True:
                poll = await provider.poll_video(route.model, request, task.upstream_task_id)
                if poll.state == VideoState.FAILED:
                    raise RavenError(poll.error or "the upstream video job failed", code="upstream_error")
                if poll.state == VideoState.SUCCEEDED:
                    break
                if poll.progress != task.progress or task.lease_until - time.time() < self._lease / 2:
                    task.progress = poll.progress
                    await self._save(task)
                await asyncio.sleep(self._poll)
            result = await provider.fetch_video(task.upstream_task_id)
            file_id = "file-" + uuid.uuid4().hex
            await self._store.put_file(StoredFile(id=file_id, key_id=task.key_id, mime_type=result.mime_type,
                                                  data=result.data, created_at=time.time()))
            task.state, task.progress = VideoState.SUCCEEDED, 100
            task.file_ids, task.file_sizes = (file_id,), (len(result.data),)
            task.cost = model.price_per_video_second * task.seconds
            await self._conclude(task, route.provider, route.model)
            forget = getattr(provider, "forget", None)
            if forget is not None:
                forget(task.upstream_task_id)
        except asyncio.CancelledError:
            raise  # shutdown: the lease is released, another worker (or we, later) resumes it
        except Exception as exc:
            message = exc.message if isinstance(exc, RavenError) else "internal error while generating the video"
            if not isinstance(exc, RavenError):
                log.exception("video task %s failed", task.id)
            task.state, task.error, task.cost = VideoState.FAILED, message, Decimal(0)
            await self._conclude(task, task.provider, "")

    async def _conclude(self, task: VideoTask, provider: str, upstream_model: str) -> None:
        """The final writes of a task (state, settlement, usage record) run to completion even when
        shutdown cancels the worker: a task is never left final-but-unsettled by a SIGTERM."""
        final = asyncio.ensure_future(self._final_writes(task, provider, upstream_model))
        self._finalizing.add(final)
        final.add_done_callback(self._finalizing.discard)
        await asyncio.shield(final)

    async def _final_writes(self, task: VideoTask, provider: str, upstream_model: str) -> None:
        # State first, then settle: a crash in between leaves a reservation unsettled (never charged)
        # rather than a task that would run and be charged again.
        task.completed_at = time.time()
        task.lease_owner, task.lease_until = "", 0.0
        await self._store.update_video_task(task)
        if task.reserved or task.cost:
            key = await self._store.get_key(task.key_id)
            if key is not None and key.credits is not None:
                await self._store.settle_credits(task.key_id, task.reserved, task.cost)
            task.reserved = Decimal(0)
            await self._store.update_video_task(task)
        self._record(task, "completed" if task.state == VideoState.SUCCEEDED else "failed", provider, upstream_model)

    def _record(self, task: VideoTask, status: str, provider: str, upstream_model: str) -> None:
        self._usage.record(UsageRecord(
            id=task.id, key_id=task.key_id, kind="video", model=task.model, provider=provider,
            upstream_model=upstream_model, cost=task.cost, status=status, error=task.error,
            latency_ms=int(((task.completed_at or time.time()) - task.created_at) * 1000),
            created_at=task.created_at, attempts=(f"{provider}/{upstream_model}:{status}",),
        ))
