"""Streaming gRPC latency by a C client: bench/grpc_stream_probe.c (nghttp2) on StreamChatCompletion.

    python bench/grpc_stream.py --target 127.0.0.1:18051 --key rk-... -c 1,16 -n 50,160

The Python grpc.aio client (bench/grpc_load.py --stream) adds about 0.5-1 ms of its own per stream,
the size of the budget being measured (added TTFT <= 1 ms), so the streams are timed by a small C
program instead. It is built here with gcc (needs libnghttp2-dev) and cached by its source's hash.
Per level it holds c streams in flight on ONE HTTP/2 connection (as one gRPC channel would),
warms up with c streams, then times n: ttfb (response headers), ttft (first DATA payload, i.e. the
first content message), total (trailers), and reads grpc-status from the trailers, so refusals are
counted as errors by status. `-n` is one count for every level, or one per level. Prints the
probe's JSON line per level (percentiles in ms), plus the target and path.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from grpc_h2load import frame  # bench/ is the script directory, first on sys.path

from raven.v1 import chat_pb2, chat_service_pb2

PATH = "/raven.v1.ChatService/StreamChatCompletion"
SOURCE = Path(__file__).with_name("grpc_stream_probe.c")
INSTALL_HINT = "apt-get install -y libnghttp2-dev"


def body(model: str) -> bytes:
    return frame(chat_service_pb2.StreamChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content="Say hello.")]))


def build(cc: str) -> Path:
    """Compile the probe once per source version into a cache directory; returns the binary."""
    src = SOURCE.read_bytes()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "raven-bench"
    exe = cache / f"grpc_stream_probe-{hashlib.sha256(src).hexdigest()[:12]}"
    if exe.exists():
        return exe
    if shutil.which(cc) is None:
        raise SystemExit(f"grpc_stream.py: no C compiler ({cc}); install gcc and libnghttp2-dev ({INSTALL_HINT} gcc)")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = exe.with_suffix(f".tmp{os.getpid()}")
    out = subprocess.run([cc, "-O2", "-Wall", "-Wextra", "-o", str(tmp), str(SOURCE), "-lnghttp2"],
                         capture_output=True, text=True)
    if out.returncode != 0:
        if "nghttp2" in out.stderr:
            raise SystemExit(f"grpc_stream.py: cannot build the probe against libnghttp2 (install it: {INSTALL_HINT})"
                             f"\n{out.stderr.strip()}")
        raise SystemExit(f"grpc_stream.py: building {SOURCE.name} failed:\n{out.stderr.strip()}")
    tmp.replace(exe)  # atomic, so a concurrent run never sees a half-written binary
    for old in cache.glob("grpc_stream_probe-*"):  # builds of earlier versions of the source
        if old != exe and ".tmp" not in old.name:
            old.unlink(missing_ok=True)
    return exe


def level(args, exe: Path, payload: Path, concurrency: int, requests: int) -> dict:
    host, _, port = args.target.rpartition(":")
    host = host.strip("[]")  # [::1]:port
    cmd = [str(exe), "-H", host, "-p", port, "-P", PATH, "-k", args.key, "-b", str(payload),
           "-c", str(concurrency), "-n", str(requests), "-t", str(args.timeout)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout + 30)
    if out.returncode == 0 and out.stderr:
        sys.stderr.write(out.stderr)  # the probe's warnings
    if out.returncode != 0 or not out.stdout.strip():
        return {"path": "grpc-stream", "target": args.target, "client": "c-nghttp2", "concurrency": concurrency,
                "requests": requests, "error": (out.stderr.strip() or f"exit {out.returncode}")[-500:]}
    return {"path": "grpc-stream", "target": args.target, **json.loads(out.stdout)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:18051")
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-c", "--concurrency", default="1,16")
    ap.add_argument("-n", "--requests", default="50,160", help="streams per level: one count, or one per level")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds per level before the probe gives up")
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    args = ap.parse_args()
    levels = [int(x) for x in args.concurrency.split(",")]
    counts = [int(x) for x in args.requests.split(",")]
    if len(counts) == 1:
        counts *= len(levels)
    if len(counts) != len(levels):
        ap.error("-n takes one count, or one per level of -c")
    exe = build(args.cc)
    with tempfile.TemporaryDirectory() as tmp:
        payload = Path(tmp) / "request.bin"
        payload.write_bytes(body(args.model))
        failed = False
        for c, n in zip(levels, counts, strict=True):
            result = level(args, exe, payload, c, n)
            failed |= "error" in result
            print(json.dumps(result), flush=True)
    if failed:  # a connection failure (gRPC errors are counted in the line, not failures)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
