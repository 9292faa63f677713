"""Services outlive their supervisor; a new supervisor process re-adopts them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from .builtin_harness import SRC, Harness, gone

DRIVER = str(Path(__file__).with_name("builtin_driver.py"))


def _driver(state: Path, specs: list[dict[str, Any]], mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, DRIVER, str(state), json.dumps(specs), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": SRC},
    )


def _lines(proc: subprocess.Popen[str], timeout: float = 10) -> list[dict[str, Any]]:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0
    return [json.loads(line) for line in out.splitlines()]


def test_new_supervisor_adopts_without_duplicate_and_sees_the_exit(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        spawns = tmp_path / "spawns"
        svc = h.script(
            "svc.py",
            f"open({str(spawns)!r}, 'a').write('%d\\n' % os.getpid())\n"
            "notify('READY=1')\n"
            "time.sleep(1000)\n",
            python=True,
        )
        spec = {"name": "keeper", "argv": [svc], "readiness": "notify", "restart": "never"}

        (a,) = _lines(_driver(h.state, [spec], "close"))
        assert a["phase"] == "running"
        pid = a["pid"]
        h.extra_pids.add(pid)
        assert not gone(pid)  # supervisor A is gone; the service is not
        record = json.loads((h.state / "keeper.json").read_text())
        assert record["pid"] == pid and record["ready"] is True

        b = _driver(h.state, [spec], "watch")
        assert b.stdout is not None
        adopted = json.loads(b.stdout.readline())
        assert adopted == {
            "name": "keeper",
            "phase": "running",
            "pid": pid,
            "exit_status": None,
            "cause": "start returned",
        }
        os.kill(pid, signal.SIGTERM)
        (exited,) = _lines(b)
        assert exited["phase"] == "failed" and exited["pid"] is None
        assert exited["cause"] == "exited (status unknown: not our child)"
        assert spawns.read_text().split() == [str(pid)]  # started once, never duplicated
        assert not (h.state / "keeper.json").exists()


def test_a_recycled_pid_is_not_adopted(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        spec = {"name": "s", "argv": ["sleep", "1000"]}
        (a,) = _lines(_driver(h.state, [spec], "close"))
        h.extra_pids.add(a["pid"])
        record = json.loads((h.state / "s.json").read_text())
        record["start_time"] -= 1  # same pid, another process: must not be trusted
        (h.state / "s.json").write_text(json.dumps(record))
        (b,) = _lines(_driver(h.state, [spec], "close"))
        h.extra_pids.add(b["pid"])
        assert b["pid"] != a["pid"] and b["phase"] == "running"


def test_changed_spec_replaces_the_adopted_process(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        (a,) = _lines(_driver(h.state, [{"name": "s", "argv": ["sleep", "1000"]}], "close"))
        h.extra_pids.add(a["pid"])
        (b,) = _lines(_driver(h.state, [{"name": "s", "argv": ["sleep", "999"]}], "close"))
        h.extra_pids.add(b["pid"])
        assert b["pid"] != a["pid"] and b["phase"] == "running"
        assert gone(a["pid"])


def test_output_written_between_supervisors_is_not_lost(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc = h.script(
            "talker.sh", "trap 'echo during' USR1\necho before\nwhile :; do sleep 0.05; done\n"
        )
        spec = {"name": "talker", "argv": [svc]}
        (a,) = _lines(_driver(h.state, [spec], "close"))
        pid = a["pid"]
        h.extra_pids.add(pid)
        os.kill(pid, signal.SIGUSR1)  # nobody drains the fifo now: the line waits in the pipe
        time.sleep(0.3)
        assert not gone(pid)  # no SIGPIPE for lack of a reader
        (b,) = _lines(_driver(h.state, [spec], "close"))
        assert b["pid"] == pid
        assert (h.state / "talker.log").read_text() == "before\nduring\n"


def test_supervisor_killed_with_sigkill_is_replaced_without_a_duplicate(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        spec = {"name": "s", "argv": ["sleep", "1000"]}
        a = _driver(h.state, [spec], "hold")
        h.extra_pids.add(a.pid)
        assert a.stdout is not None
        first = json.loads(a.stdout.readline())
        h.extra_pids.add(first["pid"])
        assert json.loads(a.stdout.readline()) == {"held": 1}
        a.kill()  # no close(): the kernel drops its sockets and fds
        a.wait()
        a.stdout.close()
        assert not gone(first["pid"])
        (b,) = _lines(_driver(h.state, [spec], "close"))
        assert b["pid"] == first["pid"] and b["phase"] == "running"
