"""A real agent process on a temp root, always killed (by PID) at the end."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._drift import replace
from undistro.agent.client import try_agent

SRC = str(Path(__file__).resolve().parents[2] / "src")


def write_policy(policy: Path, files: dict[str, str], *, purge_dir: str | None = None) -> None:
    """A policy of plain files (path -> content), optionally a purged directory."""
    (policy / "policy").mkdir(parents=True, exist_ok=True)
    (policy / "undistro.toml").write_text('name = "agent-test"\n')
    tables = []
    if purge_dir:
        tables.append(f'[[directory]]\npath = "{purge_dir}"\nmode = "0755"\npurge = true\n')
    for path, content in files.items():
        tables.append(f'[[file]]\npath = "{path}"\ncontent = """{content}"""\nmode = "0644"\n')
    replace(policy / "policy" / "main.toml", "\n".join(tables))


def wait_until(check: Callable[[], Any], timeout: float = 10.0, what: str = "") -> Any:
    """Poll ``check`` (tests may poll; the agent may not) until it is truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.01)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.run(
        [sys.executable, "-m", "undistro.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


class AgentProc:
    """One ``undistro agent`` process and the paths it works on."""

    def __init__(self, policy: Path, root: Path, log: Path) -> None:
        self.policy, self.root, self.log_path = policy, root, log
        self.state_dir = str(root / "var" / "lib" / "undistro")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, *extra: str, ready: bool = True) -> AgentProc:
        env = {**os.environ, "PYTHONPATH": SRC}
        argv = [sys.executable, "-m", "undistro.cli", "agent", str(self.policy)]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [*argv, "--root", str(self.root), *extra],
                stdout=log,
                stderr=log,
                env=env,
            )
        if ready:
            wait_until(lambda: "ready:" in self.log() or self.proc.poll() is not None, 30, "ready")
            assert self.proc.poll() is None, self.log()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def status(self) -> dict[str, Any]:
        reply = try_agent(self.state_dir, {"op": "status", "all": True}, timeout=30)
        assert reply is not None and reply["ok"], reply
        return reply

    def path(self, policy_path: str) -> Path:
        return self.root / policy_path.lstrip("/")

    def terminate(self, timeout: float = 20) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[AgentProc]:
    """An agent (not started) on ``tmp_path/root`` with policy ``tmp_path/p``."""
    root = tmp_path / "root"
    root.mkdir()
    handle = AgentProc(tmp_path / "p", root, tmp_path / "agent.log")
    try:
        yield handle
    finally:
        handle.kill()
