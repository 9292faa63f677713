"""Subscribe to an s6 fifodir: s6-supervise's state changes as loop callbacks.

s6-supervise announces every transition by writing one byte into each fifo
of ``SVC/event/`` whose name has the ftrig1 shape. Listening is therefore a
fifo plus ``loop.add_reader``: no thread, no timer, no status polling. The
fifo is made exactly as s6's own ``ftrig1_make`` does, so a writer never
sees a half-made listener: create it under a dot-name, open it for reading
(non-blocking) and for writing (so the reader never sees EOF when no writer
is there, which would make it readable forever), then rename it into place.

Bytes: ``s`` supervisor up, ``u`` run spawned, ``U`` ready, ``d`` died,
``D`` down and finish done, ``O`` will not restart, ``x`` supervisor exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import string
import time
from collections.abc import Callable

_PREFIX = "ftrig1"
_NAME_LEN = 39  # "ftrig1:@" + 24 hex (TAI64N) + ":" + 6 chars; s6 ignores any other length
_TAI_OFFSET = 4611686018427387914  # 2**62 + 10: TAI64 label of the epoch, with 10 s of TAI-UTC
_ALPHABET = string.ascii_letters + string.digits


def _tai64n_hex() -> str:
    now = time.time_ns()
    return f"{_TAI_OFFSET + now // 1_000_000_000:016x}{now % 1_000_000_000:08x}"


def fifo_name() -> str:
    """A fresh ftrig1 fifo name, the exact shape s6-supervise writes to.

    Example: ``ftrig1:@400000006577a1c40a1b2c3d:Xy12ab``.
    """
    suffix = "".join(secrets.choice(_ALPHABET) for _ in range(6))
    name = f"{_PREFIX}:@{_tai64n_hex()}:{suffix}"
    assert len(name) == _NAME_LEN
    return name


class FifodirListener:
    """One subscription to one fifodir.

    Args:
        eventdir: the fifodir, normally ``SVC/event``; it must exist.

    Example::

        listener = FifodirListener("/run/svc/web/event")
        listener.open(asyncio.get_running_loop(), print)   # print(b"u"), print(b"U"), ...
        ...
        listener.close()
    """

    def __init__(self, eventdir: str) -> None:
        self.eventdir = eventdir
        self.on_events: Callable[[bytes], None] = lambda data: None
        self.path: str | None = None
        self._rfd = -1
        self._wfd = -1
        self._loop: asyncio.AbstractEventLoop | None = None

    def open(self, loop: asyncio.AbstractEventLoop, on_events: Callable[[bytes], None]) -> None:
        """Create the fifo and call ``on_events`` on the loop with each batch of
        event bytes (one byte per event) from now on."""
        self.on_events = on_events
        name = fifo_name()
        tmp = os.path.join(self.eventdir, "." + name)
        final = os.path.join(self.eventdir, name)
        os.mkfifo(tmp, 0o600)
        try:
            self._rfd = os.open(tmp, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self._wfd = os.open(tmp, os.O_WRONLY | os.O_CLOEXEC)
            os.rename(tmp, final)
        except BaseException:
            self._close_fds()
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        self.path = final
        self._loop = loop
        loop.add_reader(self._rfd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self._rfd, 4096)
        except BlockingIOError:
            return
        if data:
            self.on_events(data)

    def _close_fds(self) -> None:
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1

    def close(self) -> None:
        """Stop listening and remove the fifo (s6 would also reap it on ENXIO)."""
        if self._loop is not None and self._rfd >= 0:
            self._loop.remove_reader(self._rfd)
        self._close_fds()
        if self.path is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            self.path = None
