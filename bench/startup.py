"""Start-up to ready: `raven serve` until /healthz answers 200 and gRPC health says SERVING.

    .venv/bin/python bench/startup.py [--runs 3]     # SQLite in a temp dir, the bench config

The gRPC health check goes out on a new channel each attempt (a channel whose first connect was
refused would wait out its reconnect backoff, up to ~1 s, and that would be measured too).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
RAVEN = str(ROOT / ".venv" / "bin" / "raven")
CONFIG = str(ROOT / "bench" / "raven-bench.toml")


def http_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as r:  # loopback only
            return r.status == 200
    except OSError:
        return False


def grpc_ready(port: int) -> bool:
    """Health SERVING, asked on a new channel each time: a channel whose first connect was refused
    waits out its reconnect backoff (up to ~1 s) before trying again, which would be measured too."""
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            return stub.Check(health_pb2.HealthCheckRequest(), timeout=0.5).status == 1
    except grpc.RpcError:
        return False


def once(http_port: int, grpc_port: int) -> tuple[float, float]:
    data = tempfile.mkdtemp(prefix="raven-startup-")
    env = dict(os.environ, RAVEN_BENCH_UPSTREAM_KEY="dummy")
    subprocess.run([RAVEN, "keys", "create", "--name", "x", "--data-dir", data, "--config", CONFIG],
                   capture_output=True, env=env, check=True)
    start = time.perf_counter()
    proc = subprocess.Popen([RAVEN, "serve", "--config", CONFIG, "--data-dir", data, "--http-port", str(http_port),
                             "--grpc-port", str(grpc_port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env)
    http_at = grpc_at = None
    while time.perf_counter() - start < 20 and (http_at is None or grpc_at is None):
        if http_at is None and http_ready(f"http://127.0.0.1:{http_port}/healthz"):
            http_at = time.perf_counter() - start
        if grpc_at is None and grpc_ready(grpc_port):
            grpc_at = time.perf_counter() - start
        time.sleep(0.01)
    proc.terminate()
    proc.wait(10)
    if http_at is None or grpc_at is None:
        raise SystemExit("raven did not become ready within 20 s")
    return http_at, grpc_at


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--http-port", type=int, default=18100)
    ap.add_argument("--grpc-port", type=int, default=18101)
    args = ap.parse_args()
    for _ in range(args.runs):
        http_at, grpc_at = once(args.http_port, args.grpc_port)
        print(f"healthz 200 after {http_at:.3f} s, gRPC SERVING after {grpc_at:.3f} s", flush=True)


if __name__ == "__main__":
    main()
