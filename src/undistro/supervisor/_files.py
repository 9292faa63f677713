"""Atomic, change-aware file writes for the files backends hand to s6 or systemd."""

from __future__ import annotations

import os


def write_if_changed(path: str, data: str, mode: int = 0o644) -> bool:
    """Make ``path`` hold ``data`` with ``mode``; True if anything had to change.

    A supervisor may read the file at any moment (s6-supervise reads ``run``
    at each spawn, systemd reads units on reload), so it is replaced with
    rename: a reader sees the old file or the new one, never half of one.
    Unchanged files are not touched, so an unchanged spec causes no restart.
    """
    raw = data.encode()
    try:
        st = os.stat(path)
        if st.st_mode & 0o7777 == mode and st.st_size == len(raw):
            with open(path, "rb") as f:
                if f.read() == raw:
                    return False
    except FileNotFoundError:
        pass
    tmp = f"{path}.tmp{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        os.write(fd, raw)
        os.fchmod(fd, mode)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    return True


def remove_if_present(path: str) -> bool:
    """Remove ``path``; True if it existed."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True
