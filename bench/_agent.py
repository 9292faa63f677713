"""What the agent benchmarks share: a generated policy, a started agent,
its status, and counting a process's system calls with strace."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

SRC = str(Path(__file__).resolve().parents[1] / "src")
sys.path.insert(0, SRC)

from undistro.agent.client import try_agent  # noqa: E402


def make_policy(policy: Path, n: int, per_dir: int = 100) -> list[str]:
    """``n`` files of ``per_dir`` per directory; returns their policy paths."""
    (policy / "policy").mkdir(parents=True, exist_ok=True)
    (policy / "undistro.toml").write_text('name = "bench"\n')
    paths = [f"/srv/bench/d{i // per_dir}/f{i}" for i in range(n)]
    tables = [f'[[file]]\npath = "{p}"\ncontent = "{p}\\n"\nmode = "0644"\n' for p in paths]
    (policy / "policy" / "main.toml").write_text("\n".join(tables))
    return paths


class Agent:
    """``undistro agent`` as a child process; stop() always kills it."""

    def __init__(self, policy: Path, root: Path) -> None:
        self.root = root
        self.state_dir = str(root / "var/lib/undistro")
        self.log = open(root.parent / "agent.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "undistro.cli", "agent", str(policy), "--root", str(root)],
            stdout=self.log,
            stderr=self.log,
            env={**os.environ, "PYTHONPATH": SRC},
        )
        deadline = time.monotonic() + 600
        while try_agent(self.state_dir, {"op": "ping"}, timeout=5) is None:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"agent did not start; see {self.log.name}")
            time.sleep(0.05)

    def status(self) -> dict[str, Any]:
        reply = try_agent(self.state_dir, {"op": "status"}, timeout=60)
        assert reply is not None
        return reply

    def settle(self, limit: float = 600) -> dict[str, Any]:
        """Wait until the agent's checks stop (the paired checks of its own
        repairs included); give up after ``limit`` seconds."""
        last = None
        deadline = time.monotonic() + limit
        while True:
            status = self.status()
            if status["events"]["checks"] == last or time.monotonic() > deadline:
                return status
            last = status["events"]["checks"]
            time.sleep(1)

    def cpu_seconds(self) -> float:
        """utime + stime of the agent and of the children it waited for
        (its forked checks)."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return sum(int(f) for f in fields[11:15]) / os.sysconf("SC_CLK_TCK")

    def reset_peak(self) -> None:
        """Reset the kernel's RSS high-water mark (VmHWM := VmRSS)."""
        Path(f"/proc/{self.proc.pid}/clear_refs").write_text("5")

    def peak_rss_mb(self) -> float:
        """VmHWM: the largest RSS since start or the last reset_peak()."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def start_strace(pid: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["strace", "-c", "-f", "-p", str(pid)], stderr=subprocess.PIPE, text=True
    )


def stop_strace(proc: subprocess.Popen[str]) -> dict[str, int]:
    """Detach and parse ``strace -c``: {syscall: calls}."""
    proc.send_signal(signal.SIGINT)
    _, out = proc.communicate(timeout=60)
    counts: dict[str, int] = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1] != "total" and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]
