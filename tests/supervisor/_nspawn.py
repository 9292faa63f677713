"""Boot a real systemd as PID 1 of a throw-away container (systemd-nspawn).

The container shares the host's /usr read-only over a tmpfs root
(``--volatile=yes``), has no network (``--private-network``) and is powered
off with SIGTERM to systemd-nspawn. The host reaches its system bus through
``/proc/<container pid 1>/root``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass


@dataclass
class Container:
    nspawn: subprocess.Popen[bytes]
    pid1: int

    @property
    def root(self) -> str:
        return f"/proc/{self.pid1}/root"

    @property
    def bus(self) -> str:
        return f"unix:path={self.root}/run/dbus/system_bus_socket"

    @property
    def unit_dir(self) -> str:
        return f"{self.root}/etc/systemd/system"


def why_not() -> str | None:
    """Why nspawn cannot boot here, or None if it should."""
    if os.geteuid() != 0:
        return "systemd-nspawn needs root"
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn is not installed (Debian systemd-container)"
    if not os.path.exists("/lib/systemd/systemd"):
        return "no systemd binary to boot"
    return None


def boot(name: str, log: str, timeout: float = 30.0) -> Container:
    """Boot and wait until the container's bus socket answers; raise RuntimeError if not."""
    env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                "systemd-nspawn",
                "-D",
                "/",
                "--volatile=yes",
                "--private-network",
                "-b",
                "--register=no",
                "--keep-unit",
                "-M",
                name,
                "systemd.firstboot=off",
            ],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"systemd-nspawn exited {proc.returncode}; see {log}")
            try:
                with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
                    children = [int(p) for p in f.read().split()]
            except FileNotFoundError:
                children = []
            for pid in children:
                if os.path.exists(f"/proc/{pid}/root/run/dbus/system_bus_socket"):
                    return Container(proc, pid)
            time.sleep(0.05)
        raise RuntimeError(f"container did not boot in {timeout} s; see {log}")
    except BaseException:
        poweroff(proc)
        raise


def poweroff(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to systemd-nspawn powers the container off cleanly; SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
