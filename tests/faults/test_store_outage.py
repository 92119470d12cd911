"""SPEC §9: PostgreSQL unreachable for 20 s under steady traffic (Raven's connections cut, new ones
refused, by a TCP proxy between Raven and the real server). Meanwhile clients get 503 with
Retry-After, never 500/502; afterwards nothing is lost: records == admitted, no hold left."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from decimal import Decimal
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest
from tests_support import backend_missing, make_rest

from raven_service.policy.auth import create_key

PG_URL = os.environ.get("RAVEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
OUTAGE_SECONDS = 20.0

pytestmark = [pytest.mark.backends, pytest.mark.timeout(120)]


class CuttableProxy:
    """A loopback TCP proxy that can cut every connection and refuse new ones."""

    def __init__(self, host: str, port: int) -> None:
        self._target = (host, port)
        self._conns: set[asyncio.StreamWriter] = set()
        self.down = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.down:
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._conns.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True)
        self._conns.difference_update((writer, up_writer))

    def cut(self) -> None:
        self.down = True
        for w in list(self._conns):
            w.transport.abort()
        self._conns.clear()

    def restore(self) -> None:
        self.down = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def _fresh_database() -> tuple[str, str]:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        backend_missing(f"PostgreSQL not reachable ({type(exc).__name__})", "RAVEN_TEST_DATABASE_URL")
    name = "raven_outage_" + uuid.uuid4().hex[:10]
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return name, PG_URL


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(PG_URL, timeout=5)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


async def test_postgres_outage_under_traffic_loses_nothing_and_answers_503(tmp_path) -> None:
    name, url = await _fresh_database()
    parts = urlsplit(url)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = (f"{parts.username}@" if parts.username else "") + f"127.0.0.1:{proxy.port}"
    proxied = urlunsplit((parts.scheme, netloc, f"/{name}", "", ""))
    try:
        async with make_rest(tmp_path, link="inprocess", database_url=proxied, database_auto_upgrade=True,
                             local_tokens_per_second=0.0) as rest:
            services = rest.svc.services
            key, secret = await create_key(services.store, name="steady", rpm=100000, concurrency=100,
                                           credits=Decimal("100"))
            statuses: dict[int, int] = {}
            retry_after_seen: list[str] = []
            body = {"model": "raven/local-chat", "messages": [{"role": "user", "content": "hello"}],
                    "max_tokens": 16}
            stop = asyncio.Event()

            async def client(i: int) -> None:
                while not stop.is_set():
                    resp = await rest.http.post("/v1/chat/completions", json=body | {"stream": bool(i % 2)},
                                                headers=rest.auth(secret))
                    await resp.aread()
                    statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
                    if resp.status_code == 503:
                        retry_after_seen.append(resp.headers.get("retry-after", ""))
                        assert resp.json()["error"]["code"] == "raven_unavailable"
                        assert "127.0.0.1" not in resp.text and str(proxy.port) not in resp.text
                    await asyncio.sleep(0.05)

            clients = [asyncio.ensure_future(client(i)) for i in range(4)]
            await asyncio.sleep(1.5)
            ok_before = statuses.get(200, 0)
            proxy.cut()
            started = time.monotonic()
            await asyncio.sleep(OUTAGE_SECONDS)
            proxy.restore()
            outage = time.monotonic() - started
            await asyncio.sleep(3.0)
            stop.set()
            await asyncio.gather(*clients)

            assert ok_before > 0
            assert set(statuses) <= {200, 503}, statuses  # never a 500 or a 502
            assert statuses.get(503, 0) > 0 and all(v and int(v) >= 1 for v in retry_after_seen)
            assert outage >= OUTAGE_SECONDS
            await services.admitter.drain()
            assert await services.usage.flush(30.0)
            records = [r async for r in services.store.export_usage() if r.key_id == key.id]
            assert services.admitter.settled_count == services.admitter.admitted_count
            assert len(records) == services.admitter.admitted_count >= statuses[200]
            stored = await services.store.get_key(key.id)
            assert stored is not None and stored.credits_reserved == 0
            assert await services.store.list_holds(key.id) == []
            assert stored.credits_used == sum((r.cost for r in records), Decimal(0))
    finally:
        await proxy.close()
        await _drop(name)
