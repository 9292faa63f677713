"""The three inotify system calls, through ctypes, and the event decoder.

Why our own forty lines rather than a PyPI binding (the evidence is in
docs/agent.md): ``inotify_simple`` and ``asyncinotify`` both locate libc with
``ctypes.util.find_library``, which forks ``ldconfig``/``gcc`` at start-up;
``asyncinotify`` builds a Future and a Path per event, and watchfiles polls from
a thread. ``CDLL(None)`` resolves the symbols already mapped into the Python
process, and decoding a whole read buffer with ``struct`` keeps a burst of
10,000 events cheap. The fd is non-blocking: the asyncio loop waits on it with
epoll, so an idle agent makes no system call at all.
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterator
from typing import NamedTuple

IN_ACCESS = 0x00000001
IN_MODIFY = 0x00000002
IN_ATTRIB = 0x00000004
IN_CLOSE_WRITE = 0x00000008
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_MOVE_SELF = 0x00000800
IN_UNMOUNT = 0x00002000
IN_Q_OVERFLOW = 0x00004000
IN_IGNORED = 0x00008000
IN_ONLYDIR = 0x01000000
IN_EXCL_UNLINK = 0x04000000
IN_ISDIR = 0x40000000

IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

FLAG_NAMES = {
    IN_MODIFY: "modify",
    IN_ATTRIB: "attrib",
    IN_CLOSE_WRITE: "close_write",
    IN_MOVED_FROM: "moved_from",
    IN_MOVED_TO: "moved_to",
    IN_CREATE: "create",
    IN_DELETE: "delete",
    IN_DELETE_SELF: "delete_self",
    IN_MOVE_SELF: "move_self",
    IN_UNMOUNT: "unmount",
    IN_Q_OVERFLOW: "overflow",
    IN_IGNORED: "ignored",
}

_HEADER = struct.Struct("iIII")
# Room for many events per read(): a burst is drained in a few calls.
_READ_SIZE = 256 * 1024


class RawEvent(NamedTuple):
    """One inotify record: watch descriptor, mask, rename cookie, entry name."""

    wd: int
    mask: int
    cookie: int
    name: str


def describe(mask: int) -> str:
    """``'close_write'``, ``'create|isdir'``: the flags of a mask, for journals."""
    names = [label for bit, label in FLAG_NAMES.items() if mask & bit]
    if mask & IN_ISDIR:
        names.append("isdir")
    return "|".join(names) or hex(mask)


class Inotify:
    """A non-blocking inotify instance; ``fileno()`` is what an event loop waits on."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self.fd: int = self._check(self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC), "")

    def fileno(self) -> int:
        return self.fd

    def add_watch(self, path: str, mask: int) -> int:
        """Watch ``path``; calling again on the same inode replaces the mask
        and returns the same descriptor. Raises ``OSError`` with the path."""
        return self._check(self._libc.inotify_add_watch(self.fd, os.fsencode(path), mask), path)

    def rm_watch(self, wd: int) -> None:
        """Drop a watch; EINVAL (already gone with its directory) is not an error."""
        if self._libc.inotify_rm_watch(self.fd, wd) == -1:
            err = ctypes.get_errno()
            if err != errno.EINVAL:
                raise OSError(err, os.strerror(err))

    def read(self) -> list[RawEvent]:
        """Every event queued now, without blocking (empty list if none)."""
        events: list[RawEvent] = []
        while True:
            try:
                buf = os.read(self.fd, _READ_SIZE)
            except BlockingIOError:
                return events
            except InterruptedError:
                continue
            events.extend(decode(buf))
            if len(buf) < _READ_SIZE // 2:
                # A short read means the queue was emptied; skip the EAGAIN read.
                return events

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @staticmethod
    def _check(result: int, path: str) -> int:
        if result == -1:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), path or None)
        return result


def decode(buf: bytes) -> Iterator[RawEvent]:
    """Split a read() buffer into records; names are NUL-padded by the kernel."""
    offset, end, size = 0, len(buf), _HEADER.size
    while offset + size <= end:
        wd, mask, cookie, length = _HEADER.unpack_from(buf, offset)
        offset += size
        raw = buf[offset : offset + length]
        offset += length
        yield RawEvent(wd, mask, cookie, os.fsdecode(raw.rstrip(b"\0")))
