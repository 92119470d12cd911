"""Two or more `raven serve` processes sharing one PostgreSQL database and one Redis.

Each test gets a fresh PostgreSQL database and a fresh Redis key prefix. When PostgreSQL or Redis
is unreachable, every test here FAILS when RAVEN_TEST_DATABASE_URL / RAVEN_TEST_REDIS_URL are set
(as .ci/run sets them) and is skipped with the reason otherwise (never silently passed).
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from tests_support import backend_missing

PG_URL = os.environ.get("RAVEN_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("RAVEN_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RAVEN = str(Path(sys.executable).parent / "raven")


def _reachable(url: str, default_port: int) -> bool:
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or default_port), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def backends_available():
    if not _reachable(PG_URL, 5432):
        backend_missing(f"PostgreSQL not reachable at {urlsplit(PG_URL).hostname}:{urlsplit(PG_URL).port}",
                        "RAVEN_TEST_DATABASE_URL")
    if not _reachable(REDIS_URL, 6379):
        backend_missing(f"Redis not reachable at {urlsplit(REDIS_URL).hostname}:{urlsplit(REDIS_URL).port}",
                        "RAVEN_TEST_REDIS_URL")


@pytest.fixture
def shared_env(backends_available, tmp_path):
    """RAVEN_* environment for instances sharing a fresh database and Redis prefix; migrated."""
    import asyncpg

    name = "raven_it_" + uuid.uuid4().hex[:10]

    async def create() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    async def drop() -> None:
        conn = await asyncpg.connect(PG_URL)
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()

    asyncio.run(create())
    parts = urlsplit(PG_URL)
    db_url = parts._replace(path="/" + name).geturl()
    env = {
        "RAVEN_DATABASE_URL": db_url,
        "RAVEN_REDIS_URL": REDIS_URL,
        "RAVEN_REDIS_PREFIX": f"raven-it-{uuid.uuid4().hex[:8]}:",
        "RAVEN_LEASE_TTL_SECONDS": "2",
    }
    up = subprocess.run([RAVEN, "db", "upgrade"], env={**os.environ, **env}, capture_output=True, text=True,
                        timeout=60)
    assert up.returncode == 0, up.stderr
    yield env
    asyncio.run(drop())
