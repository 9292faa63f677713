"""nginx under the s6 and systemd backends, through a real agent: reload and
crash -> ready latency as an operator sees them.

Usage (root; nginx, s6, systemd-container installed):

    PYTHONPATH=src python bench/services_nginx_backends.py [--samples 10]
        [--backend s6|systemd|both]

Each backend gets a fresh temp root, a policy of one nginx config (a
``[[file]]`` that notifies ``on_notify = "reload"``) and the ``[[service]]``
running it, and an ``undistro agent`` process. Then:

- reload: the policy's config body changes (the policy file is renamed into
  place); the time until nginx answers the new body over HTTP. That is the
  agent's whole path: inotify on the policy, reload and diff, the file
  repair, the notify, the backend's reload (s6: the ``h`` letter; systemd:
  ``ReloadUnit`` -> ``ExecReload``), nginx re-reading its config. The master
  pid must not change.
- crash -> ready: SIGKILL of the nginx master, then the time until a *new*
  master answers HTTP (polled every 2 ms; an old worker that still answers
  does not count). Kills are 1.5 s apart: s6-supervise never respawns sooner
  than 1 s after the last spawn. ``restart_delay = 0.1``, as in the tests,
  kept at 0.1 (``restart_delay_max``) and no crash-loop limit.

The systemd half boots systemd as PID 1 of a container (as the tests do:
the temp dir bound at the same path, the root's etc/systemd/system onto the
container's, ``UNDISTRO_SYSTEMD_BUS`` at its bus) and, to reach nginx on the
container's loopback, this process joins the container's network namespace
(the agent talks to the bus by path, which works from any).
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.* helpers

from tests.agent._nginx import free_port, http_get, nginx_conf, nginx_policy
from tests.supervisor._nspawn import Container, boot, poweroff

from bench._agent import Agent
from undistro.supervisor._s6_status import read_status

CONF = "/etc/web/nginx.conf"
CLONE_NEWNET = 0x40000000


class Setup:
    def __init__(self, tmp: Path, backend: str) -> None:
        self.tmp, self.backend = tmp, backend
        self.root = tmp / "root"
        self.run = tmp / "nginx"
        self.policy = tmp / "policy"
        for d in (self.run, self.policy / "policy", self.root / "etc/systemd/system"):
            d.mkdir(parents=True, exist_ok=True)
        (self.policy / "undistro.toml").write_text('name = "bench-nginx"\n')
        self.port = free_port()
        self.master: Callable[[], int] = lambda: 0

    def write(self, body: str) -> None:
        conf = nginx_conf(self.run, self.port, body)
        real = self.root / CONF.lstrip("/")
        # a fixed 0.1 s backoff and no crash-loop limit: the mechanism, not the policy
        fixed = "restart_delay_max = 0.1\ncrash_loop_limit = 1000\n"
        text = nginx_policy(CONF, real, self.run, conf, self.backend, service_extra=fixed)
        target = self.policy / "policy" / "main.toml"
        target.with_suffix(".tmp").write_text(text)
        os.rename(target.with_suffix(".tmp"), target)


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20) -> float:
    """Poll ``check`` every 2 ms; the perf_counter time it first held."""
    deadline = time.perf_counter() + timeout
    while not check():
        if time.perf_counter() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.002)
    return time.perf_counter()


def measure(s: Setup, samples: int) -> dict[str, list[float]]:
    s.write("v0")
    agent = Agent(s.policy, s.root)
    try:
        wait_for(lambda: http_get(s.port, 0.5) == "v0", "nginx up", 60)
        master = s.master()
        reloads = []
        for i in range(1, samples + 1):
            time.sleep(0.3)
            t0 = time.perf_counter()
            s.write(f"v{i}")
            reloads.append(wait_for(lambda i=i: http_get(s.port, 0.5) == f"v{i}", "reloaded") - t0)  # type: ignore[misc]
        if s.master() != master:
            raise SystemExit("the master changed: restarted instead of reloaded")
        crashes = []
        body = f"v{samples}"
        for _ in range(samples):
            time.sleep(1.5)
            old = s.master()
            t0 = time.perf_counter()
            os.kill(old, signal.SIGKILL)
            done = wait_for(
                lambda old=old: s.master() not in (0, old) and http_get(s.port, 0.5) == body,
                "new master",
            )  # type: ignore[misc]
            crashes.append(done - t0)
        return {"reload": reloads, "crash": crashes}
    except SystemExit:
        print((s.tmp / "agent.log").read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        agent.stop()


def s6_master(s: Setup) -> Callable[[], int]:
    svc = f"{s.root}/var/lib/undistro/services/s6/s6/web"

    def master() -> int:
        raw = read_status(svc)
        return raw.pid if raw is not None and raw.up else 0

    return master


def systemd_master(box: Container) -> Callable[[], int]:
    procs = f"{box.root}/sys/fs/cgroup/system.slice/undistro-web.service/cgroup.procs"

    def master() -> int:
        try:
            with open(procs) as f:
                pids = f.read().split()
        except OSError:  # gone, or going (ENODEV) between two runs of the unit
            return 0
        for pid in pids:
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"nginx: master"):
                        return int(pid)
            except OSError:
                pass
        return 0

    return master


def stop_s6(s: Setup) -> None:
    from undistro.supervisor import S6Backend

    top = s.root / "var/lib/undistro/services/s6"
    asyncio.run(S6Backend(str(top / "scan"), str(top)).shutdown())


def bench_s6(samples: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bn6-", dir="/tmp"))
    s = Setup(tmp, "s6")
    s.master = s6_master(s)
    try:
        return measure(s, samples)
    finally:
        stop_s6(s)
        shutil.rmtree(tmp, ignore_errors=True)


def join_netns(pid: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
    finally:
        os.close(fd)


def bench_systemd(samples: int) -> dict[str, list[float]]:
    tmp = Path(tempfile.mkdtemp(prefix="bnd-", dir="/tmp"))
    s = Setup(tmp, "systemd")
    units = str(s.root / "etc/systemd/system")
    box = boot(
        f"undistro-bench-nginx-{os.getpid()}",
        str(tmp / "console.log"),
        binds=((str(tmp), str(tmp)), (units, "/etc/systemd/system")),
    )
    host_net = os.open("/proc/self/ns/net", os.O_RDONLY)
    try:
        os.environ["UNDISTRO_SYSTEMD_BUS"] = box.bus
        join_netns(box.pid1)
        s.master = systemd_master(box)
        return measure(s, samples)
    finally:
        ctypes.CDLL(None).setns(host_net, CLONE_NEWNET)
        os.close(host_net)
        poweroff(box.nspawn)
        shutil.rmtree(tmp, ignore_errors=True)


def report(name: str, r: dict[str, list[float]]) -> None:
    for what, xs in r.items():
        ms = sorted(1000 * x for x in xs)
        print(
            f"{name:8} {what:7} median {statistics.median(ms):7.1f} ms  "
            f"min {ms[0]:7.1f}  max {ms[-1]:7.1f}  (n={len(ms)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--backend", choices=("s6", "systemd", "both"), default="both")
    args = parser.parse_args()
    if args.backend in ("s6", "both"):
        report("s6", bench_s6(args.samples))
    if args.backend in ("systemd", "both"):
        report("systemd", bench_systemd(args.samples))


if __name__ == "__main__":
    main()
