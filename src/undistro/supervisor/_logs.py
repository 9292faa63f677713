"""Service output: a fifo the supervisor drains into size-rotated log files.

Why a named fifo and not an anonymous pipe: services outlive the supervisor.
With a pipe, the supervisor's death would leave the child writing into a pipe
with no reader (SIGPIPE: the service dies). The child's stdout and stderr are
instead the fifo opened read-write, so the pipe always has a reader; while
no supervisor drains it, output accumulates in the pipe buffer (enlarged to
1 MiB) and a new supervisor reopens the fifo by path and carries on, losing
nothing. Only a service writing more than that during a supervisor outage
blocks until the next supervisor drains it.

Why not let the child write the file directly: rotation would then need the
service to reopen its file (it cannot be told to) or copy-truncate (which
loses lines). Reading the pipe with ``loop.add_reader`` costs no thread and
no system call while the service is quiet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import stat

PIPE_BYTES = 1 << 20
_CHUNK = 1 << 16


class RotatingLog:
    """An append-only file rotated by size: ``name.log``, ``name.log.1`` … ``name.log.<keep>``.

    Args:
        path: the live file.
        max_bytes: rotate before a write would take the file past this size.
        keep: how many rotated files to keep (0: truncate in place).
    """

    def __init__(self, path: str, max_bytes: int, keep: int) -> None:
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.keep = max(0, keep)
        self._fd = self._open()
        self._size = os.fstat(self._fd).st_size
        self._midline = False

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)

    def write(self, data: bytes) -> None:
        """Append ``data``; rotate so that files start and end on whole lines.

        A line a pipe read cut in two is finished in the old file even past
        ``max_bytes``; only a single line longer than ``max_bytes`` is split.
        """
        while data:
            room = self.max_bytes - self._size
            if len(data) <= room:
                self._append(data)
                return
            cut = data.rfind(b"\n", 0, max(room, 0)) + 1
            if not cut and self._midline:
                cut = data.find(b"\n", 0, self.max_bytes) + 1
            if not cut and self._size == 0:
                cut = self.max_bytes
            if cut:
                self._append(data[:cut])
                data = data[cut:]
            self.rotate()

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(data)
        self._midline = not data.endswith(b"\n")

    def rotate(self) -> None:
        os.close(self._fd)
        if self.keep:
            for index in range(self.keep - 1, 0, -1):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(f"{self.path}.{index}", f"{self.path}.{index + 1}")
            os.rename(self.path, f"{self.path}.1")
        else:
            os.truncate(self.path, 0)
        self._fd = self._open()
        self._size = 0
        self._midline = False

    def close(self) -> None:
        os.close(self._fd)


class LogPipe:
    """The fifo between a service and its :class:`RotatingLog`.

    ``child_fd()`` gives the descriptor to hand the child as stdout and
    stderr; the supervisor's own end is read-write too, so it never sees an
    end-of-file spin when the service exits.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, fifo: str, log: RotatingLog) -> None:
        self.fifo = fifo
        self.log = log
        self._loop = loop
        try:
            if not stat.S_ISFIFO(os.stat(fifo).st_mode):
                os.unlink(fifo)
                os.mkfifo(fifo, 0o600)
        except FileNotFoundError:
            os.mkfifo(fifo, 0o600)
        self._fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        with contextlib.suppress(OSError):
            fcntl.fcntl(self._fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        loop.add_reader(self._fd, self.drain)

    def child_fd(self) -> int:
        """A fresh blocking read-write descriptor for the child; the caller closes it."""
        return os.open(self.fifo, os.O_RDWR | os.O_CLOEXEC)

    def drain(self) -> None:
        """Move what the pipe holds into the log (one chunk per wakeup; level-triggered)."""
        try:
            data = os.read(self._fd, _CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        if data:
            self.log.write(data)

    def flush(self) -> None:
        """Drain everything buffered, e.g. before the service's log is closed."""
        while True:
            try:
                data = os.read(self._fd, _CHUNK)
            except (BlockingIOError, InterruptedError):
                return
            if not data:
                return
            self.log.write(data)

    def close(self) -> None:
        """Stop draining; output written from now on waits in the pipe for the next supervisor."""
        self._loop.remove_reader(self._fd)
        os.close(self._fd)
        self.log.close()
