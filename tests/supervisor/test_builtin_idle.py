"""While services run and nothing happens, the supervisor makes no system calls but its wait."""

from __future__ import annotations

import json
import platform
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from .builtin_harness import Harness
from .test_builtin_adopt import _driver

EPOLL_WAIT = {"232", "281"}  # x86_64 epoll_wait, epoll_pwait


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (Debian strace)")
def test_idle_supervisor_only_waits(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc = h.script("quiet.py", "notify('READY=1')\ntime.sleep(1000)\n", python=True)
        specs = [
            {"name": f"s{i}", "argv": [svc], "readiness": "notify", "restart": "always"}
            for i in range(5)
        ]
        driver = _driver(h.state, specs, "hold")
        h.extra_pids.add(driver.pid)
        assert driver.stdout is not None
        for _ in specs:
            status = json.loads(driver.stdout.readline())
            assert status["phase"] == "running"
            h.extra_pids.add(status["pid"])
        assert json.loads(driver.stdout.readline()) == {"held": 5}
        # No timer is armed: the loop's epoll_wait has timeout -1 (4th argument).
        time.sleep(0.5)  # let it finish printing and go to sleep
        blocked = Path(f"/proc/{driver.pid}/syscall").read_text().split()
        if platform.machine() == "x86_64":
            assert blocked[0] in EPOLL_WAIT, blocked
        assert int(blocked[4], 16) & 0xFFFFFFFF == 0xFFFFFFFF, blocked  # timeout = -1
        log = tmp_path / "strace.log"
        subprocess.run(
            ["timeout", "-s", "INT", "10", "strace", "-f", "-o", str(log), "-p", str(driver.pid)],
            capture_output=True,
            check=False,
        )
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        driver.stdout.close()
        lines = log.read_text().splitlines()
        calls = [m.group(1) for line in lines if (m := re.match(r"^\d+\s+(\w+)\(", line))]
        # One epoll_wait, entered before strace attached and still blocked when it left.
        assert calls == ["epoll_wait"] and lines[0].endswith("<detached ...>"), lines
