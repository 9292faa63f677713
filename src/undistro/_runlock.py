"""One run that changes a machine at a time: ``STATE_DIR/run.lock``.

Every engine run that may change something — a one-shot ``apply``, each of
the agent's runs (in its own process or a forked child) — holds an
exclusive ``flock`` on this file for the whole run. Two applies of one
root, or an apply and the agent, then never interleave their writes, their
temp files or the ``apply.unfinished`` marker. The kernel drops the lock
when its holder dies, so a kill -9 never leaves it stale. ``plan`` takes no
lock: it only reads.

The holder is named from /proc/locks (the kernel's word, not a pid file a
dead holder leaves behind), so whoever waits can say for whom.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
from collections.abc import Callable, Iterator

from undistro.errors import RunLockedError, StateError
from undistro.state import fs_trouble, on_read_only_fs

LOCK_NAME = "run.lock"


@contextlib.contextmanager
def run_lock(
    state_dir: str,
    *,
    wait: bool = True,
    on_wait: Callable[[str], None] | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[None]:
    """Hold the run lock of ``state_dir`` for the ``with`` block.

    If another process holds it: with ``wait``, call ``on_wait`` once with a
    line naming the holder, then block until it lets go; without, raise
    RunLockedError naming the holder. A read-only state directory raises
    StateError at once: a run that may change things could not record them.
    ``cancel`` set while waiting (a daemon's SIGTERM) gives up the wait
    with RunLockedError; it is looked at every 50 ms, only while waiting.

    Example::

        with run_lock(session.state_dir, on_wait=print):
            engine.run()
    """
    path = os.path.join(state_dir, LOCK_NAME)
    fd = _open(state_dir, path)
    try:
        _acquire(fd, path, wait, on_wait, cancel)
        yield
    finally:
        os.close(fd)


def _acquire(
    fd: int,
    path: str,
    wait: bool,
    on_wait: Callable[[str], None] | None,
    cancel: threading.Event | None,
) -> None:
    for _ in range(3):
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            holder = holder_of(fd)
        if holder is not None:
            break  # else it let go between the two looks: try again
    else:
        holder = "another process"
    if not wait:
        raise RunLockedError(f"{holder} is changing this machine (it holds {path}); not waiting")
    if on_wait is not None:
        on_wait(f"waiting for {holder} to finish (it holds {path})")
    if cancel is None:
        fcntl.flock(fd, fcntl.LOCK_EX)
        return
    while not cancel.wait(0.05):  # a thread blocked in flock could not be stopped
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            continue
    raise RunLockedError(f"stopped while waiting for {holder} (it holds {path})")


def _open(state_dir: str, path: str) -> int:
    if on_read_only_fs(state_dir):
        raise StateError(
            f"{state_dir} is on a read-only file system: a run that changes the machine"
            " cannot record what it does ('plan', 'log' and 'why' only read and still work)"
        )
    # Read-only and created only when missing: once the file exists, taking
    # the lock writes nothing (a no-op apply must not write). flock needs no
    # write access.
    flags = os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC
    try:
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(state_dir, mode=0o700, exist_ok=True)
            return os.open(path, flags, 0o600)
    except OSError as exc:
        trouble = fs_trouble(state_dir)
        raise StateError(
            f"cannot open the run lock {path}: {exc.strerror or exc}"
            + (f" ({trouble})" if trouble else "")
        ) from None


def holder_of(fd: int) -> str | None:
    """Who holds the flock on ``fd``'s file: ``pid N (command line)``, or
    ``None`` if nobody does any more."""
    st = os.fstat(fd)
    key = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    same_inode: int | None = None
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                # "1: FLOCK  ADVISORY  WRITE 4242 00:2e:1234 0 EOF"; waiters
                # are listed as "1: -> FLOCK ..." and are skipped.
                fields = line.split()
                if len(fields) < 6 or fields[1] != "FLOCK":
                    continue
                if fields[5] == key:
                    return describe_pid(int(fields[4]))
                if fields[5].rpartition(":")[2] == str(st.st_ino):
                    same_inode = int(fields[4])  # overlayfs reports the lower device
    except (OSError, ValueError):
        return "another process"
    return None if same_inode is None else describe_pid(same_inode)


def describe_pid(pid: int) -> str:
    """``pid N (undistro apply /srv/policy …)``, from /proc."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except OSError:
        argv = []
    if argv and os.path.basename(argv[0]).startswith("python"):
        argv = argv[1:]
        if argv[:1] == ["-m"]:
            argv = argv[1:]
    if argv:
        argv[0] = os.path.basename(argv[0])
    text = " ".join(argv)
    if len(text) > 72:
        text = text[:71] + "…"
    return f"pid {pid} ({text})" if text else f"pid {pid}"
