"""The video worker: claims queued tasks with a lease, drives the provider's job API
(submit -> poll -> fetch), stores the output, and concludes the task.

Invariants (SPEC §9):
- every write to a task is fenced by the lease (`WHERE id = ? AND lease_owner = ?`): a worker
  that lost its lease writes nothing and abandons the task;
- the lease is renewed every `lease / 3` for as long as the worker holds the task (a slow poll or
  a long fetch never lets it lapse while this worker is alive);
- the conclusion (final state, usage record, settlement of the task's credit hold) is one fenced
  transaction keyed by the task id, so a task settles exactly once whoever finishes it;
- polling backs off (1 s, growing to `max_poll_interval`) under a deadline of `task_timeout`
  from submission, after which the task fails and its hold is released (a refund).

A restart loses nothing: a queued task is claimed again, a running one is re-polled once its
lease expires (or at once, after a clean shutdown released it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from decimal import Decimal

from raven_service.app.media import VideoWork
from raven_service.core.errors import RavenError
from raven_service.core.ports import FileStore, VideoProvider, VideoTaskStore
from raven_service.core.types import Settlement, StoredFile, UsageRecord, VideoState, VideoTask
from raven_service.routing.catalogue import Catalogue

log = logging.getLogger("raven.videos")


class LeaseLost(Exception):
    """Another worker owns the task now: stop without writing anything."""


class VideoWorker:
    def __init__(self, tasks: VideoTaskStore, files: FileStore, catalogue: Catalogue,
                 providers: dict[str, VideoProvider], *, concurrency: int = 2, lease_seconds: float = 30.0,
                 poll_interval: float = 1.0, max_poll_interval: float = 10.0, task_timeout: float = 1800.0,
                 idle_interval: float = 1.0, clock: Callable[[], float] = time.time) -> None:
        self._tasks = tasks
        self._files = files
        self._catalogue = catalogue
        self._providers = providers
        self._concurrency = max(1, concurrency)
        self._lease = lease_seconds
        self._poll = poll_interval
        self._max_poll = max(poll_interval, max_poll_interval)
        self._timeout = task_timeout
        self._idle = idle_interval
        self._clock = clock
        self.worker_id = "w-" + uuid.uuid4().hex[:12]
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._finalizing: set[asyncio.Future[bool]] = set()
        self._stopping = False

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        for i in range(self._concurrency):
            self._loops.append(asyncio.create_task(self._loop(), name=f"video-worker-{i}"))

    async def stop(self) -> None:
        """Stops the loops and returns claimed, unfinished tasks to the queue."""
        self._stopping = True
        for t in self._loops:
            t.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops.clear()
        if self._finalizing:  # tasks that were concluding when we stopped finish their writes
            await asyncio.gather(*self._finalizing, return_exceptions=True)
        try:
            await self._tasks.release_video_tasks(self.worker_id)
        except Exception:
            log.exception("releasing video tasks failed")

    async def _loop(self) -> None:
        while not self._stopping:
            try:
                task = await self._tasks.claim_video_task(self.worker_id, self._clock(), self._lease)
            except Exception as exc:
                log.warning("claiming a video task failed: %s", type(exc).__name__)
                task = None
            if task is None:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._idle)
                continue
            try:
                await self.run(task)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("video task %s crashed", task.id)

    # ------------------------------------------------------------------------------------ one task
    async def run(self, task: VideoTask) -> None:
        """Works on a claimed task while renewing its lease; abandons it if the lease is lost."""
        work = asyncio.ensure_future(self._work(task))
        renew = asyncio.ensure_future(self._renew(task, work))
        try:
            await work
        except LeaseLost:
            log.warning("video task %s: lease lost to another worker, abandoning it", task.id)
        except asyncio.CancelledError:
            work.cancel()
            with contextlib.suppress(BaseException):
                await work
            if renew.done() and not renew.cancelled() and isinstance(renew.exception(), LeaseLost):
                log.warning("video task %s: lease lost to another worker, abandoning it", task.id)
                return
            raise
        finally:
            renew.cancel()
            with contextlib.suppress(BaseException):
                await renew

    async def _renew(self, task: VideoTask, work: asyncio.Future[None]) -> None:
        while True:
            await asyncio.sleep(self._lease / 3)
            until = self._clock() + self._lease
            try:
                ok = await self._tasks.renew_video_lease(task.id, self.worker_id, until)
            except Exception as exc:  # store trouble: keep trying while the lease may still run
                log.warning("renewing the lease of %s failed: %s", task.id, type(exc).__name__)
                continue
            if not ok:
                work.cancel()
                raise LeaseLost(task.id)
            task.lease_until = until

    async def _work(self, task: VideoTask) -> None:
        try:
            model = self._catalogue.get(task.model)
            route = model.routes[0]
            provider = self._providers[route.provider]
            request = VideoWork(task).request(route.model)
            deadline = task.created_at + self._timeout
            self._check_deadline(deadline)
            if task.state == VideoState.QUEUED or not task.upstream_task_id:
                task.upstream_task_id = await provider.submit_video(route.model, request, task.id)
                task.state, task.progress = VideoState.RUNNING, 0
                await self._save(task)
            delay = self._poll
            while True:
                poll = await provider.poll_video(route.model, request, task.upstream_task_id)
                if poll.state == VideoState.FAILED:
                    raise RavenError(poll.error or "the upstream video job failed", code="upstream_error")
                if poll.state == VideoState.SUCCEEDED:
                    break
                if poll.progress != task.progress:
                    task.progress = poll.progress
                    await self._save(task)
                self._check_deadline(deadline, sleep=delay)
                await asyncio.sleep(delay)
                delay = min(delay * 1.5, self._max_poll)
            result = await provider.fetch_video(task.upstream_task_id)
            file_id = "file-" + uuid.uuid4().hex
            await self._files.put_file(StoredFile(id=file_id, key_id=task.key_id, mime_type=result.mime_type,
                                                  data=result.data, created_at=self._clock()))
            task.state, task.progress = VideoState.SUCCEEDED, 100
            task.file_ids, task.file_sizes = (file_id,), (len(result.data),)
            task.cost = model.price_per_video_second * task.seconds
            await self._conclude(task, route.provider, route.model)
            forget = getattr(provider, "forget", None)
            if forget is not None:
                forget(task.upstream_task_id)
        except (asyncio.CancelledError, LeaseLost):
            raise  # shutdown or lost lease: whoever holds the task next resumes it
        except Exception as exc:
            message = exc.message if isinstance(exc, RavenError) else "internal error while generating the video"
            if not isinstance(exc, RavenError):
                log.exception("video task %s failed", task.id)
            task.state, task.error, task.cost = VideoState.FAILED, message, Decimal(0)
            await self._conclude(task, task.provider, "")

    def _check_deadline(self, deadline: float, sleep: float = 0.0) -> None:
        if self._clock() + sleep > deadline:
            raise RavenError(f"The video task did not finish within {self._timeout:g}s.", code="task_timeout")

    async def _save(self, task: VideoTask) -> None:
        if not await self._tasks.update_video_task(task, self.worker_id):
            raise LeaseLost(task.id)

    async def _conclude(self, task: VideoTask, provider: str, upstream_model: str) -> None:
        """The final write (state, usage record, settlement: one fenced transaction) runs to
        completion even when shutdown cancels the worker."""
        task.completed_at = self._clock()
        task.lease_owner, task.lease_until = "", 0.0
        task.reserved = Decimal(0)
        status = "completed" if task.state == VideoState.SUCCEEDED else "failed"
        record = UsageRecord(
            id=task.id, key_id=task.key_id, kind="video", model=task.model, provider=provider,
            upstream_model=upstream_model, cost=task.cost, status=status, error=task.error,
            latency_ms=int((task.completed_at - task.created_at) * 1000),
            created_at=task.created_at, attempts=(f"{provider}/{upstream_model}:{status}",), tags=task.tags,
        )
        final = asyncio.ensure_future(self._finish(task, Settlement(record=record, hold_id=task.hold_id)))
        self._finalizing.add(final)
        final.add_done_callback(self._finalizing.discard)
        if not await asyncio.shield(final):
            raise LeaseLost(task.id)

    async def _finish(self, task: VideoTask, settlement: Settlement) -> bool:
        """Retries the final transaction through short store outages (the lease is still renewed)."""
        delay = 0.2
        for _ in range(8):
            try:
                return await self._tasks.finish_video_task(task, self.worker_id, settlement)
            except RavenError as exc:
                log.warning("concluding video task %s failed: %s; retrying", task.id, exc.code)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            return await self._tasks.finish_video_task(task, self.worker_id, settlement)
        except RavenError:
            # Still unreachable: abandon (never flip a finished task to failed). The lease lapses and
            # whoever claims the task next concludes it; the fenced, id-keyed write settles it once.
            log.warning("video task %s: store unreachable while concluding, leaving it to the next claim", task.id)
            return False
