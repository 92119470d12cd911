"""`raven serve --workers N`: a small process supervisor.

The parent prepares the shared state once (schema, first key), then runs N identical worker
processes (`raven serve ... --worker`) that bind the public ports with SO_REUSEPORT, so the kernel
spreads connections over them. SIGTERM/SIGINT are forwarded; each worker drains and exits; the
parent exits 0 when all did. A worker that dies on its own is restarted (with a short backoff).
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time


def run_workers(argv: list[str], n: int) -> int:
    cmd = [sys.executable, "-m", "raven_service", *argv, "--workers", "1", "--worker"]
    children: list[subprocess.Popen] = [subprocess.Popen(cmd) for _ in range(n)]
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
                children[i] = subprocess.Popen(cmd)
    deadline = time.monotonic() + 35
    codes = []
    for child in children:
        try:
            codes.append(child.wait(max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            child.kill()
            codes.append(child.wait())
    return 0 if all(c == 0 for c in codes) else 1

