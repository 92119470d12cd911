"""Real `raven serve` processes on loopback ports."""

from __future__ import annotations

import pytest
from raven_procs import Proc, start_raven


@pytest.fixture
def raven(tmp_path):
    procs: list[Proc] = []

    def _start(**kw) -> Proc:
        p = start_raven(kw.pop("data_dir", tmp_path / "data"), **kw)
        procs.append(p)
        return p

    yield _start
    for p in procs:
        if p.proc.poll() is None:
            p.proc.kill()
            p.proc.wait(10)
