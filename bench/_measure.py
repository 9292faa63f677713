"""Run one command and measure it: wall time, CPU, peak RSS, syscall counts.

CPU and memory come from the rusage that `wait4` returns for the child. That
rusage folds in every descendant the child waited for, so user+sys is the
whole process tree's CPU; `ru_maxrss`, though, is the largest *single*
process of the tree (Linux keeps a maximum, not a sum). For the tools
compared here the tree is one process (undistro, cf-agent, puppet) or a
parent with short-lived workers (ansible), so that is the figure that
matters: what one run holds resident at its peak.

Syscall counts come from a separate run under `strace -f -c`, because
tracing slows every syscall and would spoil the timings.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

SYSCALL_GROUPS: dict[str, frozenset[str]] = {
    "stat": frozenset(
        {"stat", "lstat", "fstat", "newfstatat", "statx", "stat64", "lstat64", "fstat64"}
    ),
    "open": frozenset({"open", "openat", "openat2", "creat"}),
    "read": frozenset({"read", "pread64", "readv", "preadv", "preadv2"}),
    "write": frozenset({"write", "pwrite64", "writev", "pwritev", "pwritev2"}),
    "sync": frozenset({"fsync", "fdatasync", "syncfs", "sync", "sync_file_range"}),
    "rename": frozenset({"rename", "renameat", "renameat2"}),
}


class RunFailed(RuntimeError):
    """A measured command exited non-zero or ran past its time limit."""


@dataclass(frozen=True)
class Sample:
    """One run's cost: seconds of wall and CPU time, peak RSS in MiB."""

    wall: float
    cpu: float
    rss_mb: float


def run(
    cmd: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
    log: Path,
    timeout: float,
) -> Sample:
    """Run cmd to completion with output appended to log; measure it.

    The child gets its own session so that on a timeout, and after every
    run, whatever it left behind can be killed by process group.

    Raises RunFailed on a non-zero exit or a timeout (naming the log).
    """
    with log.open("ab") as out:
        out.write(f"\n$ {' '.join(cmd)}\n".encode())
        out.flush()
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(cmd),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pidfd = os.pidfd_open(proc.pid)
    try:
        exited, _, _ = select.select([pidfd], [], [], timeout)
        if not exited:
            _kill_group(proc.pid)
        _, status, usage = os.wait4(proc.pid, 0)
    finally:
        os.close(pidfd)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    _kill_group(proc.pid)  # stragglers; the group id is not reused while any member lives
    if not exited:
        raise RunFailed(f"{cmd[0]}: no exit after {timeout:.0f} s (see {log})")
    if proc.returncode != 0:
        raise RunFailed(f"{cmd[0]}: exit status {proc.returncode} (see {log})")
    return Sample(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)


def traced(cmd: Sequence[str], summary: Path) -> list[str]:
    """cmd wrapped in `strace -f -c`, the summary table going to a file."""
    return ["strace", "-f", "-c", "-o", str(summary), "--", *cmd]


def parse_strace_summary(text: str) -> dict[str, int]:
    """Calls per syscall from `strace -c` output (the `total` row dropped)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[3].isdigit() or fields[-1] == "total":
            continue
        calls[fields[-1]] = calls.get(fields[-1], 0) + int(fields[3])
    return calls


def group_syscalls(calls: Mapping[str, int]) -> dict[str, int]:
    """Calls summed per family (stat, open, read, write, sync, rename) and in total."""
    grouped = {
        name: sum(calls.get(s, 0) for s in members) for name, members in SYSCALL_GROUPS.items()
    }
    grouped["total"] = sum(calls.values())
    return grouped
