"""Child subreaper: orphans of double-forking daemons come back to us, and we reap them.

With ``PR_SET_CHILD_SUBREAPER`` a process that a service forked and then
abandoned is reparented to the supervisor instead of PID 1; when it exits
we get SIGCHLD and must reap it or it stays a zombie.

The reaper only takes zombies it can tell are orphans: not a process the
supervisor tracks (those are reaped through their pidfd, with their status)
and not in the supervisor's own process group, where children that other
parts of the agent spawned live and are waited for by their owners.
"""

from __future__ import annotations

import os
from collections.abc import Callable

_PR_SET_CHILD_SUBREAPER = 36


def set_child_subreaper() -> None:
    """Make this process the reaper of its descendants' orphans (Linux ≥ 3.4)."""
    import ctypes  # ~1 MB: only a process that supervises pays for it

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(errno)}")


def reap_orphans(on_tracked: Callable[[int], bool]) -> list[int]:
    """Reap every exited orphan; return their pids.

    ``on_tracked(pid)`` is offered each zombie first: it returns True when
    the pid is a tracked process, which it then reaps itself.
    """
    reaped: list[int] = []
    own_group = os.getpgrp()
    while True:
        try:
            info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return reaped
        if info is None:
            return reaped
        pid = info.si_pid
        if on_tracked(pid):
            continue
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group == own_group:
            # Someone else's child: its owner reaps it. It hides any orphan
            # queued behind it until the next SIGCHLD, a price we accept
            # rather than steal another waiter's exit status.
            return reaped
        os.waitpid(pid, os.WNOHANG)
        reaped.append(pid)
