"""Readiness through the sd_notify socket, as systemd services speak it."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from undistro.supervisor import BuiltinBackend, Phase, ServiceSpec

from .builtin_harness import Harness, gone, poll


def test_late_ready_is_starting_until_ready(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc = h.script(
            "late.py",
            "time.sleep(0.6)\nnotify('STATUS=warming up')\nnotify('READY=1')\ntime.sleep(1000)\n",
            python=True,
        )

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("late", (svc,), readiness="notify")
            began = time.monotonic()
            starting = asyncio.create_task(sup.start(spec))
            await asyncio.sleep(0.3)
            early = sup.status("late")
            assert early is not None
            assert early.phase is Phase.STARTING and not early.ready and early.pid
            status = await starting
            assert time.monotonic() - began >= 0.6
            assert status.phase is Phase.RUNNING and status.ready
            assert status.status_text == "warming up"
            assert h.causes("late") == ["spawned", "ready"]
            stats = sup.stats()["services"]["late"]
            assert stats["phase"] == "running" and stats["readiness"] == "notify"
            assert stats["pid"] == status.pid and stats["uptime"] >= 0.5
            await sup.stop("late")

        h.run(body)


@pytest.mark.skipif(shutil.which("systemd-notify") is None, reason="needs Debian's systemd-notify")
def test_real_systemd_notify_ready_does_not_hang(tmp_path: Path) -> None:
    """systemd-notify sends BARRIER=1 with a pipe fd and waits until we close it."""
    with Harness(tmp_path) as h:
        stamp = tmp_path / "returned"
        svc = h.script(
            "sdn.sh",
            f"systemd-notify --ready --status='serving' || exit 3\n"
            f"date +%s.%N > {stamp}.tmp; mv {stamp}.tmp {stamp}\nexec sleep 1000\n",
        )

        async def body(sup: BuiltinBackend) -> None:
            began = time.time()
            status = await asyncio.wait_for(
                sup.start(ServiceSpec("sdn", (svc,), readiness="notify")), 4
            )
            assert status.phase is Phase.RUNNING and status.status_text == "serving"
            assert await poll(stamp.exists)
            # Unanswered, the barrier would hold systemd-notify for 5 s.
            assert float(stamp.read_text()) - began < 2.0
            await sup.stop("sdn")

        h.run(body)


def test_watchdog_miss_kills_and_restarts(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        spawns = tmp_path / "spawns"
        svc = h.script(
            "wd.py",
            f"open({str(spawns)!r}, 'a').write('%f\\n' % time.time())\n"
            "notify('READY=1')\n"
            "for _ in range(8):\n    notify('WATCHDOG=1')\n    time.sleep(0.1)\n"
            "time.sleep(1000)\n",
            python=True,
        )

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("wd", (svc,), readiness="notify", watchdog_sec=0.3)
            await sup.start(spec)
            await h.until(lambda: h.causes("wd").count("ready") >= 2, timeout=6)
            first, second = (float(t) for t in spawns.read_text().split()[:2])
            # Fed for 0.8 s, it outlived its 0.3 s watchdog; starved, it was killed.
            assert second - first >= 0.8 + 0.3
            causes = h.causes("wd")
            assert any(c.startswith("watchdog timeout (signal SIGKILL)") for c in causes)
            await sup.stop("wd")

        h.run(body)


def test_forking_daemon_hands_over_with_mainpid(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc = h.script(
            "forking.py",
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    notify('MAINPID=%d\\nREADY=1' % os.getpid())\n"
            "    time.sleep(1000)\n"
            "time.sleep(0.2)\n",  # the launcher exits 0 once the daemon is up
            python=True,
        )

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("forking", (svc,), readiness="notify", restart="never")
            status = await sup.start(spec)
            launcher = h.events[0][1].status.pid
            assert status.phase is Phase.RUNNING and status.pid != launcher
            daemon = status.pid
            assert daemon is not None
            assert await poll(lambda: gone(launcher or 0))
            await asyncio.sleep(0.1)
            assert h.causes("forking") == ["spawned", f"main pid {launcher} -> {daemon}", "ready"]
            os.kill(daemon, signal.SIGKILL)  # the daemon, now our child by subreaping, dies
            await h.until(lambda: h.causes("forking")[-1] == "signal SIGKILL")
            final = sup.status("forking")
            assert final is not None and final.phase is Phase.FAILED and final.exit_status == -9

        h.run(body)


def test_stopping_then_clean_exit_is_stopped_not_restarted(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc = h.script(
            "quits.py",
            "notify('READY=1')\ntime.sleep(0.2)\nnotify('STOPPING=1')\ntime.sleep(0.1)\n",
            python=True,
        )

        async def body(sup: BuiltinBackend) -> None:
            await sup.start(ServiceSpec("quits", (svc,), readiness="notify"))
            await h.until(lambda: h.causes("quits")[-1:] == ["exited 0"])
            assert h.causes("quits") == ["spawned", "ready", "service is stopping", "exited 0"]
            status = sup.status("quits")
            assert status is not None and status.phase is Phase.STOPPED

        h.run(body)
