"""Compare inotify bindings for the agent: start-up cost, memory with 10,000
watches, threads, forks, and the time to drain a 10,000-event burst.

    PYTHONPATH=src /work/main/.venv/bin/python bench/agent_binding.py

Each candidate runs in a fresh interpreter that has already imported asyncio
(the agent's baseline), so the figures are what the binding adds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile

N = 10_000

PROBE = r"""
import asyncio, json, os, sys, time, threading
def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0
top, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
MASK = ("MODIFY", "ATTRIB", "CLOSE_WRITE", "CREATE", "DELETE", "MOVED_FROM", "MOVED_TO")
out = {"binding": kind, "rss_asyncio_mb": round(rss(), 1)}
t0 = time.perf_counter()
if kind == "ctypes (undistro.events)":
    from undistro.events import Inotify
    ino = Inotify()
    add = lambda p: ino.add_watch(p, 0x2 | 0x4 | 0x8 | 0x100 | 0x200 | 0x40 | 0x80)
    def drain():
        return len(ino.read())
elif kind == "inotify_simple":
    from inotify_simple import INotify, flags
    ino = INotify(nonblocking=True)
    m = sum(flags.__members__[f] for f in MASK)
    add = lambda p: ino.add_watch(p, m)
    def drain():
        return len(ino.read(timeout=0))
else:
    from asyncinotify import Inotify, Mask
    ino = Inotify()
    m = Mask(sum(Mask.__members__[f] for f in MASK))
    add = lambda p: ino.add_watch(p, m)
    def drain():
        async def go():
            got = 0
            async for _ in ino:
                got += 1
                if got == n:
                    return got
        return asyncio.run(go())
out["start_ms"] = round((time.perf_counter() - t0) * 1000, 1)
out["rss_after_import_mb"] = round(rss(), 1)
dirs = [os.path.join(top, str(i)) for i in range(n)]
t0 = time.perf_counter()
for d in dirs:
    add(d)
out["add_10k_watches_ms"] = round((time.perf_counter() - t0) * 1000, 1)
out["rss_10k_watches_mb"] = round(rss(), 1)
out["threads"] = threading.active_count()
for d in dirs:
    os.utime(d)
t0 = time.perf_counter()
got = 0
while got < n:
    got += drain()
out["drain_10k_events_ms"] = round((time.perf_counter() - t0) * 1000, 1)
print(json.dumps(out))
"""


def main() -> None:
    with tempfile.TemporaryDirectory() as top:
        import os

        for i in range(N):
            os.mkdir(os.path.join(top, str(i)))
        rows = []
        for kind in ("ctypes (undistro.events)", "inotify_simple", "asyncinotify"):
            # strace counts the programs the binding executes behind our back
            # (ctypes.util.find_library runs ldconfig/gcc).
            # (timings come from a run without strace, which slows syscalls).
            argv = [sys.executable, "-c", PROBE, top, kind, str(N)]
            row = json.loads(_run(argv).stdout)
            traced = _run(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", *argv])
            row["programs_spawned"] = traced.stderr.count("execve(") - 1
            rows.append(row)
    cols = list(rows[0])
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in cols) + " |")


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True)


if __name__ == "__main__":
    main()
