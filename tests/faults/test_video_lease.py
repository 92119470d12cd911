"""SPEC §9: a video task whose upstream poll outlasts the lease, on two instances, settles once.

Two real service instances share one PostgreSQL database; instance A reaches it through a TCP proxy
that the test cuts. A claims the task and its upstream poll (a fake OpenAI video API over a real
socket) hangs; while A is cut off its lease lapses, B claims the task, resumes the same upstream
job, finishes and settles it. Then A comes back and its poll returns "completed" too: its fenced
writes are refused, it abandons the task. Exactly one usage record, credits charged once, no hold
left, the task succeeded with B's output.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from fakes.openai_upstream import FakeOpenAI
from test_store_outage import CuttableProxy, _drop, _fresh_database

from raven_service.config import load_settings
from raven_service.core.types import VideoState
from raven_service.policy.auth import create_key
from raven_service.server import build_services

pytestmark = [pytest.mark.backends, pytest.mark.timeout(60)]

LEASE = 0.6  # seconds; renewed every LEASE / 3 while a worker holds the task


class GatedVideos(FakeOpenAI):
    """The fake OpenAI upstream whose first poll of a job hangs until `release` is set."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first_poll = asyncio.Event()
        self.release = asyncio.Event()
        self._gated = False

    async def _serve(self, request, rec, scenario):  # type: ignore[override]
        if rec.method == "GET" and "/videos/" in rec.path and not rec.path.endswith("/content") and not self._gated:
            self._gated = True
            self.first_poll.set()
            await self.release.wait()  # the answer was picked on arrival: "completed" (video_polls=1)
        return await super()._serve(request, rec, scenario)


def _settings(tmp_path, name: str, url: str, upstream: str) -> Any:
    return load_settings(None, {
        "data_dir": str(tmp_path / name), "database_url": url, "database_auto_upgrade": True,
        "lease_ttl_seconds": LEASE, "local_tokens_per_second": 0.0, "usage_flush_interval": 0.01,
        "providers": {"fake": {"kind": "openai", "base_url": upstream, "api_key_env": "RAVEN_LEASE_TEST_KEY",
                               "max_retries": 0}},
        "models": {"vid": {"routes": [{"provider": "fake", "model": "sora-2"}], "capabilities": ["video"],
                           "price_per_video_second": "0.5"}},
    }, environ={"RAVEN_LEASE_TEST_KEY": "sk-lease-test"})


async def test_a_poll_that_outlasts_the_lease_settles_once_on_two_instances(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("RAVEN_LEASE_TEST_KEY", "sk-lease-test")
    name, url = await _fresh_database()
    parts = urlsplit(url)
    direct = urlunsplit((parts.scheme, parts.netloc, f"/{name}", "", ""))
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit((parts.scheme, netloc, f"/{name}", "", ""))
    fake = GatedVideos(video_polls=1)
    await fake.start()
    a = b = None
    try:
        b = await build_services(_settings(tmp_path, "b", direct, fake.base_url), start_workers=False)
        a = await build_services(_settings(tmp_path, "a", proxied, fake.base_url), start_workers=False)
        key, secret = await create_key(b.store, name="video", rpm=1000, concurrency=10, credits=Decimal("10"))
        principal = await a.auth.authenticate(f"Bearer {secret}", "test")
        task = await a.videos.create(principal, "vid", "a lighthouse", seconds=4, size=None, image=None,
                                     request_id="", seed=None)
        assert (await b.store.get_key(key.id)).credits_reserved == Decimal("2.0")  # 4 s x 0.5 held

        claimed_a = await a.store.claim_video_task(a.worker.worker_id, time.time(), LEASE)
        assert claimed_a is not None and claimed_a.id == task.id
        run_a = asyncio.ensure_future(a.worker.run(claimed_a))
        await asyncio.wait_for(fake.first_poll.wait(), 10)  # A submitted upstream and is polling: it hangs

        proxy.cut()  # A can no longer renew its lease
        assert await b.store.claim_video_task(b.worker.worker_id, time.time(), LEASE) is None  # still A's
        claimed_b = None
        deadline = time.monotonic() + 10
        while claimed_b is None and time.monotonic() < deadline:
            await asyncio.sleep(LEASE / 4)
            claimed_b = await b.store.claim_video_task(b.worker.worker_id, time.time(), LEASE)
        assert claimed_b is not None and claimed_b.id == task.id
        assert claimed_b.upstream_task_id == claimed_a.upstream_task_id  # B resumes the same upstream job
        await asyncio.wait_for(b.worker.run(claimed_b), 20)

        done = await b.store.get_video_task(task.id)
        assert done is not None and done.state == VideoState.SUCCEEDED and len(done.file_ids) == 1

        proxy.restore()
        fake.release.set()  # A's hung poll now answers "completed" as well
        await asyncio.wait_for(run_a, 30)

        after = await b.store.get_video_task(task.id)
        assert after is not None and after.state == VideoState.SUCCEEDED
        assert after.file_ids == done.file_ids and after.completed_at == done.completed_at  # A wrote nothing
        records = [r async for r in b.store.export_usage() if r.key_id == key.id]
        assert [(r.id, r.status, r.cost) for r in records] == [(task.id, "completed", Decimal("2.0"))]
        stored = await b.store.get_key(key.id)
        assert stored.credits_used == Decimal("2.0") and stored.credits_reserved == 0
        assert await b.store.list_holds(key.id) == []
        polls = [r for r in fake.requests if r.method == "GET" and r.path.endswith(claimed_a.upstream_task_id)]
        assert len(polls) >= 2  # both instances really polled the one upstream job
        submits = [r for r in fake.requests if r.method == "POST" and r.path.endswith("/videos")]
        assert len(submits) == 1  # and it was submitted once
    finally:
        fake.release.set()
        for services in (a, b):
            if services is not None:
                with contextlib.suppress(Exception):
                    await services.close()
        await fake.stop()
        await proxy.close()
        await _drop(name)
