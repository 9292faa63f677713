"""Count the system calls a process makes while it should be idle (strace -c)."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest


def idle_syscalls(pid: int, seconds: float) -> dict[str, int]:
    """Attach ``strace -c -f`` to ``pid`` (all its threads) for ``seconds``.

    Returns syscall name -> calls. A process blocked in its event loop shows
    at most the wait it was already in (and the restart of it after strace
    attaches); anything else means something polls.
    """
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (.ci/apt/core.txt)")
    proc = subprocess.run(
        ["timeout", "-s", "INT", str(seconds), "strace", "-c", "-f", "-p", str(pid)],
        capture_output=True,
        text=True,
        check=False,
    )
    if f"Process {pid} attached" not in proc.stderr:
        pytest.skip(f"machine limit: strace could not attach here: {proc.stderr.strip()[:200]}")
    counts: dict[str, int] = {}
    for line in proc.stderr.splitlines():
        m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$", line)
        if m and m.group(2) != "total":
            counts[m.group(2)] = int(m.group(1))
    return counts


WAITS = {"epoll_wait", "epoll_pwait", "restart_syscall", "select", "poll", "futex"}
