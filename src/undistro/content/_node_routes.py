"""The signed routes of a node's face: ``/status`` and ``/logs/<service>``.

``/logs/<service>?lines=N`` answers the last N lines (default 100, at most
``MAX_LINES``) of the supervisor's ``<service>.log`` (undistro.supervisor._logs);
``&follow=1`` then streams new lines as they are written. Following is
event-driven: an inotify watch on the log directory wakes the stream when
the file is written or rotated (a rename and a new file), never a timer.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from undistro.content._http import HttpFace, Request, Response, text

MAX_LINES = 10_000
_TAIL_BYTES = 4 << 20  # how far back from the end "last N lines" may look
_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def add_node_routes(face: HttpFace, *, summary: Callable[[], dict[str, Any]],
                    log_dir: str | None) -> None:  # fmt: skip
    """Register ``/status`` (``summary()`` as JSON) and, with a ``log_dir``, ``/logs/``."""

    async def status(request: Request) -> Response:
        body = json.dumps(summary(), sort_keys=True).encode() + b"\n"
        return Response(200, [("Content-Type", "application/json"),
                              ("Cache-Control", "no-store")], body)  # fmt: skip

    async def logs(request: Request) -> Response:
        assert log_dir is not None
        service = request.path[len("/logs/") :]
        lines = request.query.get("lines", "100")
        if not _SERVICE.fullmatch(service) or service.endswith(".log"):
            return text(400, "a log is /logs/<service>")
        if not lines.isdigit() or not 0 <= int(lines) <= MAX_LINES:
            return text(400, f"lines must be 0 to {MAX_LINES}")
        path = os.path.join(log_dir, f"{service}.log")
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return text(404, f"no log for service {service!r}")
        tail, offset = _tail(fd, int(lines))
        headers = [("Content-Type", "text/plain; charset=utf-8"), ("Cache-Control", "no-store")]
        if request.query.get("follow") != "1":
            os.close(fd)
            return Response(200, headers, tail)
        return Response(200, headers, stream=_follow(fd, offset, path, tail))

    face.route("/status", status, signed=True)
    if log_dir is not None:
        face.route("/logs/", logs, signed=True)


def _tail(fd: int, lines: int) -> tuple[bytes, int]:
    """The last ``lines`` whole lines of an open file, and the offset of its end."""
    end = os.fstat(fd).st_size
    start = max(0, end - _TAIL_BYTES)
    data = os.pread(fd, end - start, start)
    if start > 0:
        data = data.partition(b"\n")[2]  # a partial first line is dropped
    if lines == 0:
        return b"", end
    cut = data.rstrip(b"\n").rsplit(b"\n", lines)
    kept = cut[1:] if len(cut) > lines else cut
    out = b"\n".join(kept)
    return (out + b"\n" if out else b""), end


async def _follow(fd: int, offset: int, path: str, first: bytes) -> AsyncIterator[bytes]:
    from undistro.events import _binding as b

    loop = asyncio.get_running_loop()
    inotify = b.Inotify()
    woken = asyncio.Event()
    try:
        inotify.add_watch(os.path.dirname(path) or ".", b.IN_MODIFY | b.IN_CREATE | b.IN_MOVED_TO)
        name = os.path.basename(path)

        def on_event() -> None:
            if any(e.name == name for e in inotify.read()):
                woken.set()

        loop.add_reader(inotify.fileno(), on_event)
        try:
            if first:
                yield first
            while True:
                await woken.wait()
                woken.clear()
                while True:  # to the end of this file, then perhaps the next one
                    chunk = os.pread(fd, 1 << 16, offset)
                    if chunk:
                        offset += len(chunk)
                        yield chunk
                        continue
                    try:
                        rotated = os.stat(path).st_ino != os.fstat(fd).st_ino
                    except FileNotFoundError:
                        rotated = False  # between the rename and the new file: wait
                    if not rotated:
                        break
                    os.close(fd)
                    fd = -1
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                    offset = 0
        finally:
            loop.remove_reader(inotify.fileno())
    finally:
        inotify.close()
        if fd >= 0:
            os.close(fd)
