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
SIGTERM (see ``Converger.cancel``). Forking a threaded process copies the
locks other threads hold; the child therefore writes only to its own pipe
and to fd 2 directly, never through ``sys.stderr``. (Policy compiles, which
import and render freely, run in a fork+exec child instead: ``_compile``.)
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from undistro.errors import ApplyError

_CHILD_FAILED = 70  # EX_SOFTWARE


def in_child(
    work: Callable[[], Iterable[Any]],
    *,
    started: Callable[[int], None] | None = None,
    ended: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """The rows ``work()`` yields, computed in a forked child, as they come.

    Rows must be JSON-serialisable; they are handed over one by one, so the
    agent never holds all of them at once. ``work`` must open its own
    resources (an SQLite connection must not cross a fork). ``started(pid)``
    is told the child's pid so that someone else may kill it, ``ended(pid)``
    once it is reaped. Raises ApplyError, after the last row, if the child
    did not finish cleanly.
    """
    read_fd, write_fd = os.pipe()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(work, write_fd)
    os.close(write_fd)
    if started is not None:
        started(pid)
    try:
        with os.fdopen(read_fd, encoding="utf-8") as pipe:
            for line in pipe:
                yield json.loads(line)
    finally:
        if sys.exc_info()[0] is not None:
            _kill(pid)  # the consumer stopped early, or failed
        _, status = os.waitpid(pid, 0)
        if ended is not None:
            ended(pid)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise ApplyError(f"the work of child process {pid} failed (exit status {code})")


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _child(work: Callable[[], Iterable[Any]], fd: int) -> None:
    # The parent's asyncio handlers write signal numbers into a pipe the
    # parent reads: a signal sent to the child must not look like the
    # parent's own SIGTERM.
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    code = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            for row in work():
                out.write(json.dumps(row) + "\n")
    except BaseException:
        # Straight to fd 2: sys.stderr's lock may have been held by another
        # thread of the parent at fork time, and is then held here for ever.
        with contextlib.suppress(OSError):
            os.write(2, traceback.format_exc().encode(errors="replace"))
        code = _CHILD_FAILED
    finally:
        os._exit(code)  # no atexit handlers, no parent's buffers flushed twice
