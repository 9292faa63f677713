"""One supervised service: the mutable record the builtin backend keeps, and how exits read.

Loop-only state, no behaviour beyond a snapshot: the backend owns every
transition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time

from undistro.supervisor._adopt import spec_hash
from undistro.supervisor._logs import LogPipe
from undistro.supervisor._notify import NotifySocket
from undistro.supervisor._spawn import Identity
from undistro.supervisor._spec import Phase, ServiceSpec, ServiceStatus


def reap(pidfd: int, popen: subprocess.Popen[bytes] | None) -> os.waitid_result | None:
    """Reap an exited process through its pidfd and close it; None if it is not our child.

    Popen is told the status so that it never tries to wait for the pid itself.
    """
    try:
        info = os.waitid(os.P_PIDFD, pidfd, os.WEXITED)
    except ChildProcessError:
        info = None
    if popen is not None:
        popen.returncode = describe(info)[0]
    os.close(pidfd)
    return info


def describe(info: os.waitid_result | None) -> tuple[int | None, str]:
    """(exit_status, cause): exit status N, or -signal, or None when not ours to know."""
    if info is None:
        return None, "exited (status unknown: not our child)"
    if info.si_code == os.CLD_EXITED:
        return info.si_status, f"exited {info.si_status}"
    return -info.si_status, f"signal {signal.Signals(info.si_status).name}"


class Service:
    """Everything the supervisor knows about one service (mutable, loop-only)."""

    def __init__(self, spec: ServiceSpec, identity: Identity) -> None:
        self.spec = spec
        self.hash = spec_hash(spec)
        self.identity = identity
        self.phase = Phase.STOPPED
        self.since = time.time()
        self.pid: int | None = None
        self.pgid: int | None = None
        self.pidfd: int | None = None
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self.restarts = 0
        self.ready = False
        self.status_text = ""
        self.exit_status: int | None = None
        self.want_up = False
        self.failures: tuple[float, ...] = ()  # recent failure times (monotonic)
        self.notify: NotifySocket | None = None
        self.logs: LogPipe | None = None
        self.restart_timer: asyncio.TimerHandle | None = None
        self.kill_timer: asyncio.TimerHandle | None = None
        self.watchdog_timer: asyncio.TimerHandle | None = None
        self.watchdog_deadline = 0.0
        self.watchdog_usec = 0
        self.watchdog_fired = False
        self.task: asyncio.Task[None] | None = None
        self.changed: list[asyncio.Future[None]] = []

    def snapshot(self) -> ServiceStatus:
        return ServiceStatus(
            name=self.spec.name,
            phase=self.phase,
            pid=self.pid,
            since=self.since,
            restarts=self.restarts,
            ready=self.ready,
            status_text=self.status_text,
            exit_status=self.exit_status,
            backend="builtin",
        )
