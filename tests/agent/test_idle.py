"""An idle agent makes no system call but the blocking wait itself."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import pytest

from tests.agent.conftest import AgentProc, wait_until, write_policy

ALLOWED = {"epoll_wait", "epoll_pwait", "restart_syscall"}


def _settled(agent: AgentProc) -> None:
    """Wait until the paired checks of the start-up converge are over."""
    last = -1
    while True:
        checks = agent.status()["events"]["checks"]
        if checks == last:
            return
        last = checks
        time.sleep(0.5)


def _syscalls(strace_summary: str) -> dict[str, int]:
    """Parse ``strace -c``'s table into {syscall: calls}."""
    counts: dict[str, int] = {}
    for line in strace_summary.splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[-1] != "total" and fields[3].isdigit():
            counts[fields[-1]] = int(fields[3])
    return counts


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (.ci/apt)")
def test_idle_agent_managing_1000_files_makes_no_syscalls(agent: AgentProc) -> None:
    files = {f"/srv/d{i % 10}/f{i}": f"{i}\n" for i in range(1000)}
    write_policy(agent.policy, files)
    agent.start()
    wait_until(lambda: agent.path("/srv/d9/f999").exists(), what="converged")
    _settled(agent)
    strace = subprocess.Popen(
        ["strace", "-c", "-f", "-p", str(agent.pid)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        time.sleep(10)
        strace.send_signal(signal.SIGINT)
        _, summary = strace.communicate(timeout=20)
    finally:
        if strace.poll() is None:
            strace.kill()
            strace.wait()
    assert "attached" in summary, summary
    extra = {name: n for name, n in _syscalls(summary).items() if name not in ALLOWED}
    assert extra == {}, summary
    # And it still works after being watched.
    agent.path("/srv/d3/f3").write_text("drift\n")
    wait_until(lambda: agent.path("/srv/d3/f3").read_text() == "3\n", what="repaired")
