"""Benchmark the s6 and systemd backends: crash-to-ready time and memory per service.

Usage (root; s6, systemd-container and dbus installed):

    PYTHONPATH=src python bench/services_backends.py [--samples 15] [--services 50]

What it measures, for each backend:

- crash -> ready: SIGKILL the main process of a running readiness=notify
  service, time until the backend reports it RUNNING again with a new pid
  (restart_delay = 0, so this is the mechanism, not the policy). Crashes are
  1.2 s apart: s6-supervise never respawns sooner than 1 s after the last
  readiness, by design.
- supervision memory per service: s6 — the PSS and RSS of the s6-supervise
  pair and the s6-log each service adds; systemd — the growth of PID 1's
  PSS/RSS over N units. The services themselves are not counted.
- the agent side: RSS of a process hosting the backend with N services.
- the import cost of the D-Bus bindings that are installed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.supervisor._nspawn

from tests.supervisor._nspawn import Container, boot, poweroff

from undistro.supervisor import Phase, S6Backend, ServiceEvent, ServiceSpec, SystemdBackend

Backend = S6Backend | SystemdBackend


def memory_kb(pid: int) -> tuple[int, int]:
    """(PSS, RSS) in kB of one process."""
    values = {}
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Pss", "Rss"):
                values[key] = int(rest.split()[0])
    return values["Pss"], values["Rss"]


def pids_named(*names: str) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as f:
                    if f.read().strip() in names:
                        found.append(int(entry))
            except OSError:
                pass
    return found


async def crash_to_ready(
    backend: Backend, spec: ServiceSpec, samples: int, kill: object
) -> list[float]:
    """Seconds from SIGKILL of the main process to the RUNNING event of its successor."""
    ready = asyncio.Event()
    pid_before: list[int | None] = [None]

    def sink(event: ServiceEvent) -> None:
        st = event.status
        if (
            st.name == spec.name
            and st.phase is Phase.RUNNING
            and st.pid not in (None, pid_before[0])
        ):
            ready.set()

    backend.subscribe(sink)
    status = await backend.start(spec)
    times = []
    for _ in range(samples):
        await asyncio.sleep(1.2)
        pid_before[0] = status.pid
        ready.clear()
        t0 = time.perf_counter()
        kill(status)  # type: ignore[operator]
        await asyncio.wait_for(ready.wait(), 10)
        times.append(time.perf_counter() - t0)
        status = backend.status(spec.name)  # type: ignore[assignment]
    return times


def idle_spec(i: int) -> ServiceSpec:
    return ServiceSpec(f"idle{i}", ("sleep", "100000"))


async def agent_rss_with(kind: str, a: str, b: str, n: int) -> float:
    """RSS (MB) of a fresh process hosting the backend with n services."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--host", kind, a, b, str(n), stdout=subprocess.PIPE
    )
    assert proc.stdout is not None
    await proc.stdout.readline()
    with open(f"/proc/{proc.pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    proc.send_signal(signal.SIGTERM)
    await proc.wait()
    return rss / 1024


async def host(kind: str, a: str, b: str, n: int) -> None:
    backend: Backend = S6Backend(a, b) if kind == "s6" else await SystemdBackend.connect(a, b)
    for i in range(n):
        await backend.start(idle_spec(i))
    print("ready", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await backend.close()


FAST = {"restart_delay": 0.0, "crash_loop_limit": 1000, "readiness": "notify"}


async def bench_s6(samples: int, n: int) -> dict[str, float]:
    tmp = tempfile.mkdtemp(prefix="bench-s6-")
    backend = S6Backend(f"{tmp}/scan", f"{tmp}/state")
    try:
        spec = ServiceSpec("crashy", ("sh", "-c", "echo >&3; exec sleep 100000"), **FAST)  # type: ignore[arg-type]
        times = await crash_to_ready(
            backend, spec, samples, lambda st: os.kill(st.pid, signal.SIGKILL)
        )
        await backend.stop("crashy")
        before = {p: memory_kb(p) for p in pids_named("s6-supervise", "s6-log")}
        for i in range(n):
            await backend.start(idle_spec(i))
        after = {p: memory_kb(p) for p in pids_named("s6-supervise", "s6-log")}
        added = [after[p] for p in after if p not in before]
        agent = await agent_rss_with("s6", f"{tmp}/scan", f"{tmp}/state", n)
        return {
            "crash_ready_ms": 1000 * statistics.median(times),
            "crash_ready_min_ms": 1000 * min(times),
            "pss_kb_per_service": sum(m[0] for m in added) / n,
            "rss_kb_per_service": sum(m[1] for m in added) / n,
            "agent_rss_mb": agent,
        }
    finally:
        await backend.shutdown()


def cgroup_pids(box: Container, name: str) -> list[int]:
    with open(f"{box.root}/sys/fs/cgroup/system.slice/undistro-{name}.service/cgroup.procs") as f:
        return [int(p) for p in f.read().split()]


async def bench_systemd(box: Container, samples: int, n: int) -> dict[str, float]:
    backend = await SystemdBackend.connect(box.bus, box.unit_dir)
    try:
        script = "systemd-notify --ready; exec sleep 100000"
        spec = ServiceSpec("crashy", ("sh", "-c", script), **FAST)  # type: ignore[arg-type]

        def kill(_status: object) -> None:
            for pid in cgroup_pids(box, "crashy"):
                os.kill(pid, signal.SIGKILL)

        times = await crash_to_ready(backend, spec, samples, kill)
        await backend.stop("crashy")
        pss0, rss0 = memory_kb(box.pid1)
        for i in range(n):
            await backend.start(idle_spec(i))
        pss1, rss1 = memory_kb(box.pid1)
        agent = await agent_rss_with("systemd", box.bus, box.unit_dir, n)
        for i in range(n):
            await backend.stop(f"idle{i}")
        return {
            "crash_ready_ms": 1000 * statistics.median(times),
            "crash_ready_min_ms": 1000 * min(times),
            "pss_kb_per_service": (pss1 - pss0) / n,
            "rss_kb_per_service": (rss1 - rss0) / n,
            "agent_rss_mb": agent,
        }
    finally:
        await backend.close()


def import_costs() -> dict[str, str]:
    probe = (
        "import asyncio, importlib, sys, time\n"
        "def rss():\n"
        "    lines = open('/proc/self/status').read().splitlines()\n"
        "    return next(int(x.split()[1]) for x in lines if x.startswith('VmRSS'))\n"
        "r, t = rss(), time.perf_counter()\n"
        "for m in sys.argv[1:]: importlib.import_module(m)\n"
        "print(f'+{(rss() - r) / 1024:.1f} MB, {1000 * (time.perf_counter() - t):.0f} ms')\n"
    )
    out = {}
    for label, modules in {
        "jeepney": ["jeepney", "jeepney.io.asyncio"],
        "sdbus": ["sdbus"],
        "dbus-fast": ["dbus_fast", "dbus_fast.aio"],
    }.items():
        res = subprocess.run(
            [sys.executable, "-c", probe, *modules], capture_output=True, text=True
        )
        out[label] = res.stdout.strip() if res.returncode == 0 else "not installed"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=15)
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--host", nargs=4, metavar=("KIND", "A", "B", "N"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.host:
        kind, a, b, n = args.host
        asyncio.run(host(kind, a, b, int(n)))
        return
    print("D-Bus binding import cost (asyncio already imported):")
    for label, cost in import_costs().items():
        print(f"  {label:10} {cost}")
    results = {"s6": asyncio.run(bench_s6(args.samples, args.services))}
    box = boot(
        f"undistro-bench-{os.getpid()}", f"{tempfile.gettempdir()}/undistro-bench-nspawn.log"
    )
    try:
        results["systemd"] = asyncio.run(bench_systemd(box, args.samples, args.services))
    finally:
        poweroff(box.nspawn)
    print(
        f"\n{'':8} {'crash->ready median':>20} {'min':>8} {'PSS/service':>12} {'RSS/service':>12} "
        f"{'agent RSS, ' + str(args.services) + ' svc':>20}"
    )
    for name, r in results.items():
        print(
            f"{name:8} {r['crash_ready_ms']:>17.1f} ms {r['crash_ready_min_ms']:>5.1f} ms "
            f"{r['pss_kb_per_service']:>9.0f} kB {r['rss_kb_per_service']:>9.0f} kB "
            f"{r['agent_rss_mb']:>17.1f} MB"
        )


if __name__ == "__main__":
    main()
