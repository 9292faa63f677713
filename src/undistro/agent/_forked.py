"""Run the agent's large, rare work in a short-lived child process.

A full check of 10,000 resources allocates ~13 MB of short-lived objects
(fingerprints, probe states, results), and compiling a 10,000-resource
policy ~6 MB more than the compiled result. CPython keeps most of such a
heap after the work is done, so a daemon doing it in-process would idle
that much higher forever. A forked child inherits the agent's memory for
free (copy-on-write), does the work, streams JSON rows back through a pipe
and exits; its heap goes with it, and the agent's resident memory stays at
its working set.

The child is also what makes big work stoppable: the agent kills it on
SIGTERM (see ``Converger.cancel``), and a ``deadline`` bounds work that may
hang (a policy that names a FIFO, a template that never ends).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
import traceback
from collections.abc import Callable, Generator, Iterable, Iterator
from typing import Any

from undistro.errors import ApplyError

_CHILD_FAILED = 70  # EX_SOFTWARE


class ChildTimeout(ApplyError, TimeoutError):
    """The child ran past its deadline and was killed."""


def in_child(
    work: Callable[[], Iterable[Any]],
    *,
    deadline: float | None = None,
    memory: int | None = None,
    started: Callable[[int], None] | None = None,
    ended: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """The rows ``work()`` yields, computed in a forked child, as they come.

    Rows must be JSON-serialisable; they are handed over one by one, so the
    agent never holds all of them at once. ``work`` must open its own
    resources (an SQLite connection must not cross a fork). ``deadline``
    (seconds) kills a child that takes longer (ChildTimeout); ``memory``
    caps the child's address space growth in bytes (a MemoryError there,
    not the machine's OOM killer); ``started(pid)`` is told the child's pid
    so that someone else may kill it, and ``ended(pid)`` once it is reaped.
    Raises ApplyError, after the last
    row, if the child did not finish cleanly.
    """
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(work, write_fd, memory)
    os.close(write_fd)
    if started is not None:
        started(pid)
    late = False
    try:
        with os.fdopen(read_fd, encoding="utf-8") as pipe:
            if deadline is None:
                for line in pipe:
                    yield json.loads(line)
            else:
                late = yield from _rows_until(pipe, time.monotonic() + deadline)
    finally:
        if late or sys.exc_info()[0] is not None:
            _kill(pid)  # also when the consumer stopped early
        _, status = os.waitpid(pid, 0)
        if ended is not None:
            ended(pid)
    if late:
        raise ChildTimeout(f"child process {pid} took more than {deadline:g} s and was killed")
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise ApplyError(f"the work of child process {pid} failed (exit status {code})")


def _rows_until(pipe: Any, deadline: float) -> Generator[Any, None, bool]:
    """Rows from ``pipe`` until EOF; returns True if ``deadline`` came first."""
    buffered = b""
    fd = pipe.fileno()
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return True
        chunk = os.read(fd, 65536)
        if not chunk:
            return False
        buffered += chunk
        *lines, buffered = buffered.split(b"\n")
        for line in lines:
            yield json.loads(line)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _child(work: Callable[[], Iterable[Any]], fd: int, memory: int | None) -> None:
    # The parent's asyncio handlers write signal numbers into a pipe the
    # parent reads: a signal sent to the child must not look like the
    # parent's own SIGTERM.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    if memory is not None:
        _limit_memory(memory)
    code = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in work():
                out.write(json.dumps(row) + "\n")
    except BaseException:
        traceback.print_exc()
        code = _CHILD_FAILED
    finally:
        sys.stderr.flush()
        os._exit(code)  # no atexit handlers, no parent's buffers flushed twice


def _limit_memory(extra: int) -> None:
    """Cap the address space at what the child maps now plus ``extra``."""
    import resource

    with open("/proc/self/statm", "rb") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
