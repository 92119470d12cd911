"""The settlement outbox: where every admitted request ends, exactly once.

`submit()` takes a `Settlement` (the request's usage record plus the credit hold it settles) and
never blocks, never fails and never drops: it is safe in a `finally` of a cancelled task. A
background task writes settlements in batches through `UsageStore.settle`, which inserts the
records, releases the holds and charges the costs in one transaction, idempotently by record id.

A store outage loses nothing:
- a failed batch is retried with capped exponential backoff, for as long as it takes;
- at most `max_memory` settlements wait in memory; beyond that they are appended to a spool file
  under `spool_dir` (JSON lines, one file per process, held under an exclusive flock while its
  process lives) and replayed from there when the store is back;
- spool files left by a process that died (SIGKILL, power loss) are replayed by the next process
  that starts on the same data dir. Replaying a settlement twice is harmless: it is keyed by the
  record id.

Records not yet written stay visible through `pending()`, so a lookup right after a completion
finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import msgspec

from raven_service.core.ports import UsageStore
from raven_service.core.types import Settlement, UsageRecord

log = logging.getLogger("raven.ledger")

SPOOL_PREFIX = "ledger-"
SPOOL_SUFFIX = ".jsonl"

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Settlement)


class Ledger:
    def __init__(
        self,
        store: UsageStore,
        *,
        spool_dir: Path | None = None,
        max_memory: int = 10000,
        flush_interval: float = 0.2,
        batch_size: int = 500,
        retry_base: float = 0.2,
        retry_max: float = 5.0,
        observer: Callable[[UsageRecord], None] | None = None,
    ) -> None:
        self._store = store
        self._spool_dir = spool_dir
        self._max_memory = max(1, max_memory)
        self._interval = flush_interval
        self._batch = max(1, batch_size)
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._observer = observer  # e.g. metrics: sees every record once, as it is submitted
        self._memory: deque[Settlement] = deque()
        self._pending: dict[str, UsageRecord] = {}
        self._spool: IO[bytes] | None = None
        self._spool_path: Path | None = None
        self._spooled = 0  # settlements in this process's spool not yet replayed
        self._file_count = 0  # of which in the current spool file
        self._submitted = 0
        self._settled = 0  # settlements of this process known durable (memory or spool, replayed)
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.healthy = True

    # ------------------------------------------------------------------------------------ intake
    def submit(self, settlement: Settlement) -> None:
        """Queues the settlement: memory first, the spool once memory is full. Never raises."""
        rec = settlement.record
        self._submitted += 1
        if self._observer is not None:
            try:
                self._observer(rec)
            except Exception:  # metrics must never cost a usage record
                log.exception("usage observer failed")
        if len(self._memory) < self._max_memory and not self._spooled:
            self._memory.append(settlement)
            self._pending[rec.id] = rec
        elif not self._append_spool(settlement):
            self._memory.append(settlement)  # no spool: memory it is (unbounded rather than lost)
            self._pending[rec.id] = rec
        self._wake.set()

    def pending(self, record_id: str) -> UsageRecord | None:
        return self._pending.get(record_id)

    @property
    def backlog(self) -> int:
        """Settlements submitted and not yet durable."""
        return len(self._memory) + self._spooled

    # ------------------------------------------------------------------------------- lifecycle
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="ledger-writer")

    async def flush(self, within: float | None = None) -> bool:
        """Waits until everything submitted before this call is durable; False on timeout (it is
        still queued and will be written: a flush never waits on traffic that arrives later)."""
        target = self._submitted
        self._wake.set()
        try:
            async with asyncio.timeout(within):
                while self._settled < target and self.backlog:
                    self._progress.clear()
                    await self._progress.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, within: float = 10.0) -> None:
        """Writes what it can `within` seconds; whatever the store would not take by then is in the
        spool (replayed by the next start), so nothing is lost either way."""
        self._closing = True
        self._wake.set()
        if self._task is not None:
            try:
                async with asyncio.timeout(within):
                    while self.backlog and self.healthy and not self._task.done():
                        self._progress.clear()
                        await self._progress.wait()
            except TimeoutError:
                log.warning("store did not take %d settlements before shutdown: spooling them", self.backlog)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while self._memory:
            if not self._append_spool(self._memory.popleft()):
                log.error("no spool directory: %d settlements lost at shutdown", len(self._memory) + 1)
                self._memory.clear()
        self._close_spool()

    # ----------------------------------------------------------------------------------- writer
    async def _run(self) -> None:
        await self._replay_orphans()
        while True:
            if not self._memory and not self._spooled:
                self._wake.clear()
                await self._wake.wait()
            if self._interval > 0 and not self._closing and len(self._memory) < self._batch:
                # Gather a batch, also under steady traffic: writing again as soon as the previous
                # write returned would make one small transaction per few requests.
                await asyncio.sleep(self._interval)
            if self._memory:
                batch = [self._memory[i] for i in range(min(self._batch, len(self._memory)))]
                await self._write(batch)
                for _ in batch:
                    rec = self._memory.popleft().record
                    self._pending.pop(rec.id, None)
                self._settled += len(batch)
                self._progress.set()
            elif self._spooled:
                await self._replay_own()

    async def _write(self, batch: list[Settlement]) -> None:
        """Writes the batch, retrying until the store takes it."""
        delay = self._retry_base
        while True:
            try:
                await self._store.settle(batch)
                if not self.healthy:
                    log.warning("store is back: settlements are being written again")
                self.healthy = True
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.healthy:
                    log.warning("settling %d usage records failed (%s): retrying until the store is back",
                                len(batch), type(exc).__name__)
                self.healthy = False
                self._progress.set()  # let close() see that we are stuck
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)

    # ------------------------------------------------------------------------------------ spool
    def _append_spool(self, settlement: Settlement) -> bool:
        if self._spool_dir is None:
            return False
        try:
            if self._spool is None:
                self._spool_dir.mkdir(parents=True, exist_ok=True)
                path = self._spool_dir / f"{SPOOL_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:8]}{SPOOL_SUFFIX}"
                f = open(path, "ab")  # noqa: SIM115 (held open for the process's life)
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._spool, self._spool_path = f, path
            self._spool.write(_encoder.encode(settlement) + b"\n")
            self._spool.flush()
        except OSError:
            log.exception("cannot write the ledger spool")
            return False
        self._spooled += 1
        self._file_count += 1
        return True

    def _close_spool(self) -> None:
        if self._spool is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._spool.fileno())
            self._spool.close()
            if self._spooled == 0 and self._spool_path is not None:
                with contextlib.suppress(OSError):
                    self._spool_path.unlink()
            self._spool = None
            self._spool_path = None

    async def _replay_own(self) -> None:
        """Closes the current spool file (overflow meanwhile starts a new one), moves it through
        the store, then deletes it."""
        path, count = self._spool_path, self._file_count
        if path is None or self._spool is None:
            self._spooled = 0
            return
        self._spool.close()
        self._spool, self._spool_path, self._file_count = None, None, 0
        await self._replay_file(path)
        with contextlib.suppress(OSError):
            path.unlink()
        self._settled += count
        self._spooled -= count
        self._progress.set()

    async def _replay_orphans(self) -> None:
        """Replays spool files of processes that are gone (their flock is free)."""
        if self._spool_dir is None or not self._spool_dir.is_dir():
            return
        for path in sorted(self._spool_dir.glob(f"{SPOOL_PREFIX}*{SPOOL_SUFFIX}")):
            try:
                f = open(path, "rb")  # noqa: SIM115, ASYNC230 (once, at start-up)
            except OSError:
                continue
            try:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # a live process owns it
                count = await self._replay_file(path)
                log.info("replayed %d settlements from %s", count, path.name)
                with contextlib.suppress(OSError):
                    path.unlink()
            finally:
                f.close()

    async def _replay_file(self, path: Path) -> int:
        count = 0
        batch: list[Settlement] = []
        for settlement in _read_spool(path):
            batch.append(settlement)
            if len(batch) >= self._batch:
                await self._write(batch)
                count += len(batch)
                batch = []
        if batch:
            await self._write(batch)
            count += len(batch)
        return count


def _read_spool(path: Path) -> Iterator[Settlement]:
    with open(path, "rb") as f:
        for line in f:
            if not line.endswith(b"\n"):
                break  # a torn last line (the process died mid-write): never acknowledged durable
            try:
                yield _decoder.decode(line)
            except msgspec.DecodeError:
                log.error("skipping an unreadable line in %s", path.name)
