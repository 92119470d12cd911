"""Where a machine's CPU went during a benchmark: CPU time by process group between two snapshots.

    python bench/cpu_share.py snap /tmp/a.json          # before the load
    python bench/cpu_share.py diff /tmp/a.json 10       # after it: cores used per group over 10 s
    python bench/cpu_share.py run 10 wrk -d10s ...      # both around one command, its own CPU included

Groups (by command line): raven (every worker), postgres, redis, fake upstream, wrk, other. Used by
bench/workers.sh to show what a second worker could get on a 2-core machine that also runs the load
generator, the upstream and both scale-out backends.
"""

from __future__ import annotations

import json
import os
import sys

TICK = os.sysconf("SC_CLK_TCK")
GROUPS = (("raven", "raven"), ("postgres", "postgres"), ("redis", "redis-server"),
          ("upstream", "fake_upstream"), ("wrk", "wrk"))
#: The order names are tried in: a PostgreSQL backend's title names its database (raven_bench).
_MATCH_ORDER = (GROUPS[1], GROUPS[2], GROUPS[3], GROUPS[4], GROUPS[0])


def _group(cmdline: str) -> str:
    for name, needle in _MATCH_ORDER:
        if needle in cmdline:
            return name
    return "other"


def snapshot() -> dict[str, int]:
    """Ticks of user + system CPU per process id (with its group), for every live process."""
    out: dict[str, int] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        out[f"{pid}:{_group(cmd)}"] = int(fields[11]) + int(fields[12])  # utime + stime
    return out


def run(seconds: float, cmd: list[str]) -> None:
    """Runs `cmd` (the load generator) between two snapshots; its own CPU comes from rusage, since
    it has exited by the second snapshot. Its output goes to stdout, the shares to stderr."""
    import resource
    import subprocess

    before = snapshot()
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    child = resource.getrusage(resource.RUSAGE_CHILDREN)
    sys.stdout.write(done.stdout)
    used = _used(before, seconds)
    used[_group(" ".join(cmd))] = used.get(_group(" ".join(cmd)), 0.0) + (child.ru_utime + child.ru_stime) / seconds
    print(_line(used), file=sys.stderr)


def _used(before: dict[str, int], seconds: float) -> dict[str, float]:
    used: dict[str, float] = {}
    for key, ticks in snapshot().items():
        group = key.split(":", 1)[1]
        used[group] = used.get(group, 0.0) + (ticks - before.get(key, 0)) / TICK / seconds
    return used


def _line(used: dict[str, float]) -> str:
    total = sum(used.values())
    return " ".join(f"{g}={used.get(g, 0.0):.2f}" for g, _ in (*GROUPS, ("other", ""))) + f" total={total:.2f} cores"


def main() -> None:
    mode, path = sys.argv[1], sys.argv[2]
    if mode == "run":
        run(float(path), sys.argv[3:])
        return
    if mode == "snap":
        with open(path, "w") as f:
            json.dump(snapshot(), f)
        return
    with open(path) as f:
        before = json.load(f)
    print(_line(_used(before, float(sys.argv[3]))))


if __name__ == "__main__":
    main()
