"""Being PID 1 of a container: reap every zombie, pass signals on, exit with the main program.

PID 1 has two jobs no ordinary program does: every orphan in the container
is reparented to it and must be reaped, and the kernel delivers it no signal
it has not asked for (a plain ``docker stop`` would otherwise do nothing).
Doing both inside the agent's event loop would tie them to the agent's
health, so :func:`run_as_init` stays a tiny synchronous loop (as tini does):
it runs the real program — the agent — in a child, forwards SIGTERM, SIGINT
and SIGHUP to it, reaps everything, and when the program exits, terminates
what is left and exits with its status.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable

FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_GRACE = 5.0


def _exit_code(status: int) -> int:
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


def _reap(main_pid: int) -> int | None:
    """Reap every exited child; return the main program's wait status if it was among them."""
    main_status = None
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return main_status
        if pid == 0:
            return main_status
        if pid == main_pid:
            main_status = status


def _run_child(main: Callable[[], int]) -> int:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        return main()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1


def _terminate_rest(grace: float) -> None:
    """SIGTERM everything left in the container, SIGKILL what outlives ``grace`` seconds."""
    if os.getpid() != 1:
        return  # kill(-1) outside our own pid namespace would hit the whole machine
    try:
        os.kill(-1, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while True:
        _reap(0)
        try:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return  # nobody left
        left = deadline - time.monotonic()
        if left <= 0:
            break
        signal.sigtimedwait({signal.SIGCHLD}, left)
    with contextlib.suppress(ProcessLookupError):
        os.kill(-1, signal.SIGKILL)
    while True:
        try:
            os.wait()
        except ChildProcessError:
            return


def run_as_init(main: Callable[[], int], *, grace: float = _GRACE) -> int:
    """Run ``main()`` in a child process and act as its init; return its exit code.

    Args:
        main: the real program (``undistro agent``'s body); its return value,
            or ``sys.exit`` code, becomes the exit code.
        grace: seconds the remaining processes get between SIGTERM and SIGKILL
            once ``main`` has exited (only when this process is PID 1).

    Example::

        if args.init:
            sys.exit(run_as_init(lambda: run_agent(args)))
    """
    handled = {*FORWARDED, signal.SIGCHLD}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)
    sys.stdout.flush()
    sys.stderr.flush()
    main_pid = os.fork()
    if main_pid == 0:
        code = _run_child(main)
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    main_status = None
    while main_status is None:
        info = signal.sigwaitinfo(handled)
        if info.si_signo == signal.SIGCHLD:
            main_status = _reap(main_pid)
        else:
            try:
                os.kill(main_pid, info.si_signo)
            except ProcessLookupError:
                main_status = _reap(main_pid)
    _terminate_rest(grace)
    return _exit_code(main_status)
