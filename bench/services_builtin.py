"""Benchmark the builtin supervisor: crash-to-ready time and memory per service.

    PYTHONPATH=src python bench/services_builtin.py [--crashes 50]

1. Crash → restarted and ready: a notify service is SIGKILLed; we time from
   the kill to the new instance's READY=1 reaching the supervisor, for a
   ``sh`` + Debian ``systemd-notify`` service and for a Python one. Split
   into detection (kill → exit event) and respawn (exit → ready).
2. Memory: the RSS of a fresh process hosting the supervisor with 0 and
   with 50 running services; the difference / 50 is the per-service cost.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from undistro.supervisor import BuiltinBackend, Phase, ServiceEvent, ServiceSpec

SH_SERVICE = "#!/bin/sh\nsystemd-notify --ready\nexec sleep 100000\n"
PY_SERVICE = f"""#!{sys.executable}
import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"READY=1", os.environ["NOTIFY_SOCKET"])
time.sleep(100000)
"""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def crash_to_ready(workdir: Path, script: str, crashes: int) -> dict[str, float]:
    path = workdir / "svc"
    path.write_text(script)
    path.chmod(0o755)
    backend = BuiltinBackend(workdir / "state")
    marks: dict[str, float] = {}
    changed = asyncio.Event()

    def on_event(event: ServiceEvent) -> None:
        marks[event.cause.split(";")[0].split()[0]] = time.perf_counter()
        changed.set()

    backend.subscribe(on_event)
    spec = ServiceSpec(
        "bench",
        (str(path),),
        readiness="notify",
        restart="always",
        restart_delay=0,
        crash_loop_limit=crashes + 10,
    )
    status = await backend.start(spec)
    detect, spawn, respawn, total = [], [], [], []
    for _ in range(crashes):
        assert status.pid is not None
        marks.clear()
        began = time.perf_counter()
        os.kill(status.pid, signal.SIGKILL)
        while "ready" not in marks:
            changed.clear()
            await changed.wait()
        detect.append(marks["signal"] - began)
        spawn.append(marks["spawned"] - marks["signal"])
        respawn.append(marks["ready"] - marks["signal"])
        total.append(marks["ready"] - began)
        current = backend.status("bench")
        assert current is not None and current.phase is Phase.RUNNING
        status = current
    await backend.stop("bench")
    await backend.close()
    ms = 1000.0
    return {
        "detect_ms": statistics.median(detect) * ms,
        "spawn_ms": statistics.median(spawn) * ms,
        "respawn_ms": statistics.median(respawn) * ms,
        "total_ms": statistics.median(total) * ms,
        "total_p90_ms": statistics.quantiles(total, n=10)[-1] * ms,
    }


async def host(state_dir: str, count: int) -> None:
    """The measured process: supervise ``count`` sleeps, report, then idle."""
    backend = BuiltinBackend(state_dir)
    specs = [ServiceSpec(f"s{i}", ("sleep", "100000")) for i in range(count)]
    pids = [(await backend.start(spec)).pid for spec in specs]
    print(json.dumps({"pids": pids}), flush=True)
    await asyncio.Event().wait()


def memory(count: int) -> tuple[int, list[int]]:
    with tempfile.TemporaryDirectory() as tmp:
        proc = subprocess.Popen(
            [sys.executable, __file__, "--host", tmp, str(count)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": os.environ.get("PYTHONPATH", "src")},
        )
        assert proc.stdout is not None
        pids = json.loads(proc.stdout.readline())["pids"]
        time.sleep(0.3)
        kib = rss_kib(proc.pid)
        proc.kill()
        proc.wait()
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        return kib, pids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crashes", type=int, default=50)
    parser.add_argument("--host", nargs=2, metavar=("STATE_DIR", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        asyncio.run(host(args.host[0], int(args.host[1])))
        return
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cpus, {args.crashes} crashes each")
    services = {"python notify service": PY_SERVICE}
    if shutil.which("systemd-notify"):
        services["sh + systemd-notify --ready"] = SH_SERVICE
    for label, script in services.items():
        with tempfile.TemporaryDirectory() as tmp:
            r = asyncio.run(crash_to_ready(Path(tmp), script, args.crashes))
        print(
            f"crash→ready, {label}: median {r['total_ms']:.1f} ms (p90 {r['total_p90_ms']:.1f}),"
            f" detect {r['detect_ms']:.2f} ms, exit→spawned {r['spawn_ms']:.2f} ms,"
            f" exit→READY {r['respawn_ms']:.1f} ms"
        )
    base, _ = memory(0)
    fifty, _ = memory(50)
    many, _ = memory(300)
    print(f"RSS supervising 0 services: {base / 1024:.1f} MiB")
    print(f"RSS supervising 50 services: {fifty / 1024:.1f} MiB (target ≤ 40 MiB)")
    print(f"RSS supervising 300 services: {many / 1024:.1f} MiB")
    print(f"per-service overhead (300 vs 0): {(many - base) / 300:.1f} KiB")


if __name__ == "__main__":
    main()
