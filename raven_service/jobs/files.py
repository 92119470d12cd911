"""The output janitor: deletes generated images and videos once their advertised expiry passed.

An entry point like the video worker: it drives `app.media.FileUseCase.sweep` on a timer. Any
instance may run it (deletes are idempotent); a failed sweep is logged and retried next round.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from raven_service.app.media import FileUseCase

log = logging.getLogger("raven.jobs.files")


class OutputJanitor:
    def __init__(self, files: FileUseCase, *, interval: float = 3600.0) -> None:
        self._files = files
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="output-janitor")

    async def _run(self) -> None:
        while True:
            try:
                removed = await self._files.sweep()
                if removed:
                    log.info("deleted %d expired output files", removed)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("sweeping expired output files failed: %s", type(exc).__name__)
            await asyncio.sleep(self._interval)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
