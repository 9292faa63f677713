"""Test hosts in network namespaces this test run makes and removes.

One namespace holds a bridge (the "switch"); each host is a namespace with
a veth whose peer is on the bridge, and an address in 10.213.<net>.0/24.
Nothing leaves these namespaces; every namespace carries this process's
pid in its name, so a crashed run's leftovers are recognisable and removed
by name (`cleanup_stale`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import pytest

PREFIX = "udt"


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=20)


@dataclass
class Host:
    name: str  # the namespace
    index: int
    address: str
    switch: str
    port_name: str  # the veth end on the bridge: down = the host is cut off

    def argv(self, *argv: str) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def cut(self) -> None:
        _ip("-n", self.switch, "link", "set", self.port_name, "down")

    def mend(self) -> None:
        _ip("-n", self.switch, "link", "set", self.port_name, "up")


def cleanup_stale() -> None:
    """Remove namespaces of earlier runs whose process is gone."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        parts = name.split("-")
        stale = len(parts) >= 2 and parts[0] == PREFIX and parts[1].isdigit()
        if stale and not os.path.exists(f"/proc/{parts[1]}"):
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@contextmanager
def namespace_hosts(count: int, net: int = 1) -> Iterator[list[Host]]:
    if shutil.which("ip") is None:
        pytest.skip("iproute2 is not installed (.ci/apt/fleet.txt)")
    cleanup_stale()
    tag = f"{PREFIX}-{os.getpid()}-{net}"
    switch = f"{tag}-sw"
    made: list[str] = []
    try:
        try:
            _ip("netns", "add", switch)
            made.append(switch)
            _ip("-n", switch, "link", "add", "br0", "type", "bridge")
            _ip("-n", switch, "link", "set", "br0", "up")
        except subprocess.CalledProcessError as exc:
            # A container without CAP_NET_ADMIN (or without bridge support)
            # cannot host test hosts: a limit of the machine, not a missing
            # component.
            why = exc.stderr.decode(errors="replace").strip()[:200]
            pytest.skip(f"machine limit: cannot create network namespaces and a bridge: {why}")
        hosts = []
        for i in range(count):
            name = f"{tag}-h{i}"
            _ip("netns", "add", name)
            made.append(name)
            port = f"p{i}"
            _ip("-n", name, "link", "add", "eth0", "type", "veth", "peer", "name", port,
                "netns", switch)  # fmt: skip
            _ip("-n", switch, "link", "set", port, "master", "br0", "up")
            address = f"10.213.{net}.{i + 1}"
            _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")
            # Multicast (Serf's mDNS discovery) stays on the test bridge.
            _ip("-n", name, "route", "add", "224.0.0.0/4", "dev", "eth0")
            hosts.append(Host(name, i, address, switch, port))
        yield hosts
    finally:
        for name in reversed(made):
            pids = subprocess.run(
                ["ip", "netns", "pids", name], capture_output=True, text=True
            ).stdout.split()
            for pid in pids:
                with suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
