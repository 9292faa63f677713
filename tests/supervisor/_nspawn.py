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
    if shutil.which("systemd-nspawn") is None:
        return "systemd-nspawn not installed (Debian systemd-container)"
    if not os.path.exists("/lib/systemd/systemd"):
        return "systemd not installed (no /lib/systemd/systemd to boot)"
    if os.geteuid() != 0:
        return "machine limit: systemd-nspawn needs root"
    return None


def boot(
    name: str, log: str, timeout: float = 30.0, binds: tuple[tuple[str, str], ...] = ()
) -> Container:
    """Boot and wait until the container's bus socket answers; raise RuntimeError if not.

    ``binds``: (host path, container path) pairs mounted read-write, e.g. a
    test's ``--root`` at the same path, so paths mean the same on both sides.
    """
    env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
    # The container's /etc starts empty, so systemd's first boot presets every
    # unit the host has installed: serf, apt and man-db timers, ... would run
    # (and crash-loop) in it, costing CPU and sending job signals to the tests.
    preset = os.path.join(os.path.dirname(log), "00-undistro-test.preset")
    with open(preset, "w") as f:
        f.write("disable *\n")
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
                f"--bind-ro={preset}:/etc/systemd/system-preset/00-undistro-test.preset",
                *(f"--bind={host}:{inside}" for host, inside in binds),
                "systemd.firstboot=off",
                # static, so no preset stops it; in these containers it re-arms
                # some 20 times a second
                "systemd.mask=systemd-tmpfiles-clean.timer",
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
