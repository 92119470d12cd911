"""Unary gRPC load by a C client: h2load (nghttp2) posting a framed CreateChatCompletion.

    python bench/grpc_h2load.py --target 127.0.0.1:18051 --key rk-... -c 1,16,64 -d 10 \\
        [--upstream-stats http://127.0.0.1:18080/stats]

h2load speaks HTTP/2 but not gRPC: it cannot see a grpc-status trailer. So the request body is a
real length-prefixed protobuf message, and every run is checked from the outside: with
`--upstream-stats`, the fake upstream's request counter must have grown by exactly the number of
requests h2load completed, give or take the calls in flight at the end (a call Raven refused
never reaches the upstream, so refusals show as a shortfall), else the level is
reported with `"verified": false`. Concurrency c is `clients x streams` (one HTTP/2 connection per
16 concurrent calls, as a gRPC client pool would hold). Prints one JSON line per level: rps,
p50/p90/p99 (ms) from h2load's per-request log.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import struct
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from raven.v1 import chat_pb2, chat_service_pb2

PATH = "/raven.v1.ChatService/CreateChatCompletion"


def frame(msg: Any) -> bytes:
    """One length-prefixed gRPC message (uncompressed), as it goes in a request body."""
    raw = msg.SerializeToString()
    return struct.pack(">BI", 0, len(raw)) + raw


def body(model: str) -> bytes:
    return frame(chat_service_pb2.CreateChatCompletionRequest(
        model=model, messages=[chat_pb2.ChatMessage(role="user", content="Say hello.")]))


def upstream_requests(url: str | None) -> int | None:
    if not url:
        return None
    with urllib.request.urlopen(url, timeout=5) as r:  # loopback fake upstream only
        return int(json.load(r)["requests"])


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def level(args, concurrency: int, payload: Path, work: Path) -> dict:
    streams = min(concurrency, 16)
    clients = math.ceil(concurrency / streams)
    log = work / f"h2load-{concurrency}.log"

    def run(seconds: int, log_file: Path | None) -> subprocess.CompletedProcess[str]:
        cmd = [args.h2load, f"http://{args.target}{PATH}", "-d", str(payload), "-c", str(clients), "-m",
               str(streams), "-D", str(seconds), "-t", "1", "-H", "content-type: application/grpc",
               "-H", "te: trailers", "-H", f"authorization: Bearer {args.key}"]
        if log_file is not None:
            cmd += ["--log-file", str(log_file)]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)

    if args.warmup:
        run(args.warmup, None)  # its own run, so the measured one can be checked exactly
    before = upstream_requests(args.upstream_stats)
    out = run(args.duration, log)
    after = upstream_requests(args.upstream_stats)
    lat_ms: list[float] = []
    statuses: dict[str, int] = {}
    for line in log.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3:
            statuses[parts[1]] = statuses.get(parts[1], 0) + 1
            lat_ms.append(int(parts[2]) / 1000.0)  # microseconds
    done = sum(statuses.values())
    # h2load's own summary line "finished in Xs, Y req/s, Z MB/s"
    rps = None
    for line in out.stdout.splitlines():
        if line.startswith("finished in"):
            rps = float(line.split(",")[1].split()[0])
    result = {"client": "h2load", "concurrency": concurrency, "connections": clients, "streams": streams,
              "requests": done, "http_status": statuses, "rps": rps,
              "p50_ms": round(pct(lat_ms, 50), 3), "p90_ms": round(pct(lat_ms, 90), 3),
              "p99_ms": round(pct(lat_ms, 99), 3)}
    if before is not None and after is not None:
        # every completed call must have been served by the upstream: a refused call (grpc-status != 0
        # in an HTTP 200) never reaches it, so any refusal shows as a shortfall here.
        result["upstream_requests"] = after - before
        # (calls still in flight when h2load's clock ran out, of this run or of the warm-up, reached
        # the upstream but are not counted as done: at most `concurrency` of each)
        result["verified"] = 0 <= after - before - done <= 2 * concurrency and statuses.get("200", 0) == done
    if out.returncode != 0:
        result["error"] = out.stderr[-500:]
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", default="127.0.0.1:18051")
    ap.add_argument("--key", required=True)
    ap.add_argument("--model", default="gpt-4o-mini")
    ap.add_argument("-c", "--concurrency", default="1,16,64")
    ap.add_argument("-d", "--duration", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--upstream-stats")
    ap.add_argument("--h2load", default=shutil.which("h2load") or "h2load")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        payload = work / "request.bin"
        payload.write_bytes(body(args.model))
        for c in (int(x) for x in args.concurrency.split(",")):
            print(json.dumps(level(args, c, payload, work)), flush=True)


if __name__ == "__main__":
    main()
