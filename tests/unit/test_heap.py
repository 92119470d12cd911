"""`server.settle_heap`: what `raven serve` does to the collector once both ports serve."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(60)

_PROBE = """
import gc, json
from raven_service.server import GC_THRESHOLDS, settle_heap
before = gc.get_freeze_count()
settle_heap()
gc.callbacks.append(lambda phase, info: runs.append(info["generation"]) if phase == "start" else None)
runs = []
keep = []
for i in range(40_000):  # acyclic churn, ~5,000 containers alive (requests in flight): no collection
    keep.append({"i": i, "items": [i]})
    if len(keep) > 2_500:
        keep.pop(0)
churn = list(runs)
for _ in range(30_000):  # cyclic garbage: collected once it reaches the young threshold
    a = []; a.append(a)
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(), "thresholds": gc.get_threshold(),
                  "expected": GC_THRESHOLDS, "churn": churn, "cycles": runs}))
"""


def test_settle_heap_freezes_start_up_and_collects_only_real_garbage() -> None:
    out = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=50, check=True)
    got = json.loads(out.stdout)
    assert got["before"] == 0
    assert got["frozen"] > 10_000  # the imported service: modules, classes, config tables
    assert tuple(got["thresholds"]) == tuple(got["expected"])
    assert got["churn"] == []  # live-then-dead objects never trigger the collector
    assert got["cycles"] and set(got["cycles"]) <= {0, 1, 2}  # but leaked cycles do: the heap stays bounded
