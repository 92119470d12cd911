"""`raven serve --workers N`: a small process supervisor.

The parent prepares the shared state once (schema, first key), then runs N identical worker
processes (`raven serve ... --worker`) that bind the public ports with SO_REUSEPORT, so the kernel
spreads connections over them. SIGTERM/SIGINT are forwarded; each worker drains and exits; the
parent exits 0 when all did. A worker that dies on its own is restarted (with a short backoff).

Metrics: the workers run prometheus-client in multiprocess mode in a directory made for this run
(`PROMETHEUS_MULTIPROC_DIR`, unless the operator set one), so `/metrics` on any worker shows the
sum over all workers, the ones that were restarted included; the directory goes at exit.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time


def run_workers(argv: list[str], n: int) -> int:
    cmd = [sys.executable, "-m", "raven_service", *argv, "--workers", "1", "--worker"]
    own_dir = not os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    metrics_dir = tempfile.mkdtemp(prefix="raven-metrics-") if own_dir else os.environ["PROMETHEUS_MULTIPROC_DIR"]
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
    try:
        return _supervise(cmd, n, env)
    finally:
        if own_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _supervise(cmd: list[str], n: int, env: dict[str, str]) -> int:
    children: list[subprocess.Popen] = [subprocess.Popen(cmd, env=env) for _ in range(n)]
    stopping = False

    def _stop(signum, _frame) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    backoff = 0.5
    while not stopping:
        time.sleep(0.2)
        for i, child in enumerate(children):
            if child.poll() is not None and not stopping:
                print(f"raven: worker {child.pid} exited with {child.returncode}; restarting", file=sys.stderr,
                      flush=True)
                time.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                children[i] = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 35
    codes = []
    for child in children:
        try:
            codes.append(child.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return 0 if all(c == 0 for c in codes) else 1

