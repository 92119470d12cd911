"""The usage ledger writer: records are queued off the request path and written in batches.

`record()` never blocks a request: it appends to a bounded queue; a background task flushes
batches. When the queue is full, callers of `record_wait()` wait (back-pressure) and `record()`
hands the record to a waiter task, so nothing is dropped. `close()` flushes everything.
Records not yet written stay visible through `pending()` so a lookup right after a completion
finds them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from raven_service.core.ports import Store
from raven_service.core.types import UsageRecord

log = logging.getLogger("raven.usage")


class UsageWriter:
    def __init__(self, store: Store, *, max_queue: int = 10000, flush_interval: float = 0.2,
                 batch_size: int = 500, observer: Callable[[UsageRecord], None] | None = None) -> None:
        self._store = store
        self._observer = observer  # e.g. metrics: sees every record once, as it is queued
        self._queue: asyncio.Queue[UsageRecord | None] = asyncio.Queue(max_queue)
        self._pending: dict[str, UsageRecord] = {}
        self._interval = flush_interval
        self._batch = batch_size
        self._task: asyncio.Task[None] | None = None
        self._waiters: set[asyncio.Task[None]] = set()
        self._closing = False

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="usage-writer")

    def record(self, rec: UsageRecord) -> None:
        """Queues a record without waiting (safe in `finally` blocks of cancelled requests)."""
        self._observe(rec)
        self._pending[rec.id] = rec
        try:
            self._queue.put_nowait(rec)
        except asyncio.QueueFull:
            task = asyncio.get_running_loop().create_task(self._queue.put(rec))
            self._waiters.add(task)
            task.add_done_callback(self._waiters.discard)

    async def record_wait(self, rec: UsageRecord) -> None:
        self._observe(rec)
        self._pending[rec.id] = rec
        await self._queue.put(rec)

    def _observe(self, rec: UsageRecord) -> None:
        if self._observer is not None:
            try:
                self._observer(rec)
            except Exception:  # metrics must never cost a usage record
                log.exception("usage observer failed")

    def pending(self, record_id: str) -> UsageRecord | None:
        return self._pending.get(record_id)

    async def _run(self) -> None:
        while True:
            first = await self._queue.get()
            batch: list[UsageRecord] = []
            stop = first is None
            if first is not None:
                batch.append(first)
                if not self._closing and self._interval > 0:
                    await asyncio.sleep(self._interval)
            while len(batch) < self._batch and not self._queue.empty():
                item = self._queue.get_nowait()
                if item is None:
                    stop = True
                    continue
                batch.append(item)
            if batch:
                await self._write(batch)
            for _ in range(len(batch) + (1 if stop else 0)):
                self._queue.task_done()
            if stop and self._queue.empty():
                return

    async def _write(self, batch: list[UsageRecord]) -> None:
        for attempt in range(5):
            try:
                await self._store.insert_usage(batch)
                break
            except Exception:  # the store may be briefly unavailable: retry, then log
                log.exception("usage batch write failed (attempt %d)", attempt + 1)
                await asyncio.sleep(0.2 * (attempt + 1))
        for rec in batch:
            self._pending.pop(rec.id, None)

    async def flush(self) -> None:
        """Writes everything queued so far (waits for the writer to catch up)."""
        if self._waiters:
            await asyncio.gather(*self._waiters, return_exceptions=True)
        if self._task is not None and not self._task.done():
            await self._queue.join()

    async def close(self) -> None:
        """Flushes every queued record, then stops the writer."""
        self._closing = True
        if self._waiters:
            await asyncio.gather(*self._waiters, return_exceptions=True)
        if self._task is not None:
            await self._queue.put(None)
            await self._task
            self._task = None
        leftovers = [r for r in self._pending.values()]
        if leftovers:
            await self._write(leftovers)
