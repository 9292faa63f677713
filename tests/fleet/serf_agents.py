"""Real Serf agents on 127.0.0.1 for the fleet tests, ended by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class SerfAgent:
    def __init__(self, name: str, workdir: Path, tags: dict[str, str]) -> None:
        self.name = name
        self.bind = f"127.0.0.1:{free_port()}"
        self.rpc = f"127.0.0.1:{free_port()}"
        self.config = workdir / f"{name}.json"
        self.log = workdir / f"{name}.log"
        # Fast failure detection and no mDNS or default ports: tests stay on
        # loopback and end quickly.
        self.config.write_text(
            json.dumps(
                {
                    "node_name": name,
                    "bind": self.bind,
                    "rpc_addr": self.rpc,
                    "tags": tags,
                    "profile": "local",
                    "reconnect_interval": "2s",
                    "log_level": "debug",
                }
            )
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, join: list[str] = ()) -> None:  # type: ignore[assignment]
        argv = ["serf", "agent", f"-config-file={self.config}"]
        argv += [f"-retry-join={addr}" for addr in join]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        host, port = self.rpc.rsplit(":", 1)
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serf {self.name} exited: {self.log.read_text()[-800:]}")
            try:
                socket.create_connection((host, int(port)), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"serf {self.name} RPC never came up: {self.log.read_text()[-800:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


@contextmanager
def serf_fleet(workdir: Path, tags: list[dict[str, str]]) -> Iterator[list[SerfAgent]]:
    """Agents named n0, n1, ... joined to n0; all stopped on exit."""
    if shutil.which("serf") is None:
        pytest.skip("serf is not installed (Debian serf; .ci/apt/fleet.txt)")
    agents = [SerfAgent(f"n{i}", workdir, t) for i, t in enumerate(tags)]
    try:
        for i, agent in enumerate(agents):
            agent.start(join=[agents[0].bind] if i else [])
        yield agents
    finally:
        for agent in agents:
            agent.stop()
