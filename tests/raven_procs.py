"""Real `raven serve` processes on loopback ports (used by the e2e and scale-out tiers)."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Proc:
    proc: subprocess.Popen
    http: int
    grpc: int
    data_dir: Path
    key: str
    output: list[str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)


def start_raven(data_dir: Path, *, key: str = "", env: dict[str, str] | None = None, tps: str = "0") -> Proc:
    http, grpc_port = free_port(), free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("RAVEN_")}
    environ.update({"RAVEN_LOCAL_TOKENS_PER_SECOND": tps, "RAVEN_USAGE_FLUSH_INTERVAL": "0.02", **(env or {})})
    proc = subprocess.Popen(
        [str(BIN / "raven"), "serve", "--data-dir", str(data_dir), "--http-port", str(http),
         "--grpc-port", str(grpc_port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environ, cwd=ROOT,
    )
    lines: list[str] = []
    deadline = time.monotonic() + 30
    found = key
    assert proc.stdout is not None
    os.set_blocking(proc.stdout.fileno(), False)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("raven serve exited early:\n" + "".join(lines) + (proc.stdout.read() or ""))
        chunk = proc.stdout.readline()
        if chunk:
            lines.append(chunk)
            m = re.search(r"(rk-[A-Za-z0-9_-]{32,})", chunk)
            if m:
                found = m.group(1)
            continue
        try:
            if httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=1).status_code == 200 and found:
                break
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError("raven serve did not become ready:\n" + "".join(lines))
    return Proc(proc=proc, http=http, grpc=grpc_port, data_dir=data_dir, key=found, output=lines)


