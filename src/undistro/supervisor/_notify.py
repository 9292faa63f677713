"""The sd_notify socket: how a service tells its supervisor it is ready.

One unix datagram socket per service, bound at a stable path so that a new
supervisor can rebind it and keep hearing from services it re-adopts (their
``NOTIFY_SOCKET`` still names that path). The socket file is owned by the
service's user with mode 0600: only that user (and root) may notify it, which
is the permission model a filesystem socket gives for free.

Compatibility with systemd's protocol, as Debian's ``systemd-notify`` speaks
it: datagrams of ``KEY=VALUE`` lines, optional sender credentials
(``SO_PASSCRED``), and file descriptors passed with ``SCM_RIGHTS``. We keep
no fd store, so every received fd is closed at once; that is exactly what
``BARRIER=1`` asks for (the sender blocks until the receiver closes the pipe
it sent), so ``systemd-notify --ready`` returns immediately instead of
hanging 5 s.
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import os
import socket
import struct
from collections.abc import Callable

from undistro.errors import ValidationError

# sun_path is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107
_MAX_FDS = 16
_UCRED = struct.Struct("3i")  # pid, uid, gid
_ANCILLARY = socket.CMSG_SPACE(_MAX_FDS * 4) + socket.CMSG_SPACE(_UCRED.size)

NotifyHandler = Callable[[dict[str, str]], None]
"""Called with the parsed fields of one datagram."""


def parse_message(data: bytes) -> dict[str, str]:
    """``b"READY=1\\nSTATUS=up"`` → ``{"READY": "1", "STATUS": "up"}``; junk lines are dropped."""
    fields: dict[str, str] = {}
    for line in data.decode("utf-8", "replace").split("\n"):
        key, sep, value = line.partition("=")
        if sep and key:
            fields[key] = value
    return fields


class NotifySocket:
    """A bound notify socket whose datagrams are read on the event loop.

    Args:
        path: where to bind; a stale socket left there by a previous
            supervisor is replaced.
        uid: the only non-root user allowed to send (the service's user).
        handler: called once per datagram, after any passed fds were closed.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        path: str,
        uid: int,
        gid: int,
        handler: NotifyHandler,
    ) -> None:
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ValidationError(
                "state_dir", f"notify socket path is over {MAX_SOCKET_PATH} bytes: {path}"
            )
        self.path = path
        self._uid = uid
        self._handler = handler
        self._loop = loop
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
            self._sock.setblocking(False)
            self._sock.bind(path)
            os.chown(path, uid, gid)
            os.chmod(path, 0o600)
        except BaseException:
            self._sock.close()
            raise
        loop.add_reader(self._sock.fileno(), self.drain)

    def drain(self) -> None:
        """Handle every queued datagram now (also called before judging an exit)."""
        while True:
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(4096, _ANCILLARY)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            sender_uid = self._ancillary(ancdata)
            if sender_uid is not None and sender_uid not in (0, self._uid):
                continue
            self._handler(parse_message(data))

    @staticmethod
    def _ancillary(ancdata: list[tuple[int, int, bytes]]) -> int | None:
        """Close every passed fd (this answers BARRIER=1); return the sender's uid if given."""
        uid = None
        for level, kind, payload in ancdata:
            if level != socket.SOL_SOCKET:
                continue
            if kind == socket.SCM_RIGHTS:
                fds = array.array("i")
                fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
                for fd in fds:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            elif kind == socket.SCM_CREDENTIALS and len(payload) >= _UCRED.size:
                _pid, uid, _gid = _UCRED.unpack_from(payload)
        return uid

    def close(self) -> None:
        """Stop listening; the socket file stays so a service's sends keep a target path."""
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()
