"""An idle agent makes no system call but the blocking wait itself."""

from __future__ import annotations

import shutil
import time

import pytest

from tests.agent.conftest import AgentProc, wait_until, write_policy
from tests.supervisor._idle import idle_syscalls

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


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (.ci/apt)")
def test_idle_agent_managing_1000_files_makes_no_syscalls(agent: AgentProc) -> None:
    files = {f"/srv/d{i % 10}/f{i}": f"{i}\n" for i in range(1000)}
    write_policy(agent.policy, files)
    agent.start()
    wait_until(lambda: agent.path("/srv/d9/f999").exists(), what="converged")
    _settled(agent)
    calls = idle_syscalls(agent.pid, 10)
    extra = {name: n for name, n in calls.items() if name not in ALLOWED}
    assert extra == {}, calls
    # And it still works after being watched.
    agent.path("/srv/d3/f3").write_text("drift\n")
    wait_until(lambda: agent.path("/srv/d3/f3").read_text() == "3\n", what="repaired")
