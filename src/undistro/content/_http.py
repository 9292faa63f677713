"""Each node's HTTP face: blobs and TUF files for anyone, the rest signed.

Plain HTTP/1.1 on the agent's own event loop, framed by h11 (a pure-Python
parser with no I/O of its own: ~1 ms and ~0.3 MB to import, against ~60 ms
and ~12 MB for aiohttp — docs/benchmarks.md, "Content: HTTP face").

Public, because what it serves is verified by hash on the receiving side:

- ``GET|HEAD /blob/sha256/<64 hex>``: a blob of the content store, with one
  byte range (``Range: bytes=a-b``, ``a-``, ``-n``), ``ETag`` = the hash,
  immutable cache headers;
- ``GET|HEAD /tuf/<filename>``: the TUF repository files this node holds.

Everything else is a route registered with ``signed=True`` (status, logs):
the request must carry an operator's signature (undistro.content._auth).

What a hostile client gets: 400 for a malformed request, a path trick or a
bad query; 405 for anything but GET/HEAD; 404 for what is not there (never a
listing); 416 for a range that is not one satisfiable range; 431 for a head
over ``MAX_HEAD``; 503 beyond ``max_connections``; a closed socket after
``HEAD_TIMEOUT`` without a complete head (slowloris) or ``IDLE_TIMEOUT``
idle between requests. A handler's crash is a 500 and one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import h11

DEFAULT_PORT = 7948
MAX_HEAD = 8192  # request line + headers
MAX_CONNECTIONS = 64
HEAD_TIMEOUT = 10.0  # seconds to send a complete request head
IDLE_TIMEOUT = 30.0  # keep-alive between requests
SEND_TIMEOUT = 60.0  # a reader that takes nothing for this long is dropped
_CHUNK = 1 << 16
_HEX64 = re.compile(r"[0-9a-f]{64}")
_SEGMENT = re.compile(r"[A-Za-z0-9._-]{1,255}")
_MAX_RANGE_DIGITS = 19  # beyond any file size; longer numbers are abuse

_REASONS = {
    200: "OK", 206: "Partial Content", 304: "Not Modified", 400: "Bad Request",
    401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
    408: "Request Timeout", 416: "Range Not Satisfiable", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 503: "Service Unavailable",
}  # fmt: skip


@dataclass(frozen=True)
class Request:
    method: str  # GET or HEAD (nothing else reaches a handler)
    target: str  # the raw request target, path and query, as signed
    path: str  # checked: only [A-Za-z0-9._-] segments, no "..", no "%"
    query: Mapping[str, str]
    headers: Mapping[str, str]  # lower-case names; a repeated header: the last one
    peer: str


@dataclass
class Response:
    """What a handler returns.

    ``body`` is sent whole; ``stream``, when given, is sent as it is produced
    (chunked, until it ends or the client goes) — server-sent events and
    ``logs -f`` use it. For HEAD the server sends the head only.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    length: int | None = None  # Content-Length of a stream known in advance


Handler = Callable[[Request], Awaitable[Response]]
Authorise = Callable[[Request], str | None]  # None: allowed; else why not ("401 ..."/"403 ...")


def text(status: int, message: str) -> Response:
    return Response(status, [("Content-Type", "text/plain; charset=utf-8")],
                    (message + "\n").encode())  # fmt: skip


class HttpFace:
    """A running face. ``route`` adds handlers; ``close`` stops it."""

    def __init__(self, state_dir: str, *, max_connections: int = MAX_CONNECTIONS,
                 authorise: Authorise | None = None,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.state_dir = state_dir
        self.max_connections = max_connections
        self._authorise = authorise
        self._log = log or (lambda _m: None)
        self._routes: list[tuple[str, Handler, bool]] = []
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.counts = {"requests": 0, "refused": 0, "busy": 0}
        self.route("/blob/sha256/", self._blob)
        self.route("/tuf/", self._tuf)

    def route(self, path: str, handler: Handler, *, signed: bool = False) -> None:
        """Serve ``path`` (exact) or everything under it (when it ends in ``/``).

        The longest matching route wins. ``signed`` routes reach the handler
        only with a valid operator signature (401/403 otherwise).
        """
        self._routes.append((path, handler, signed))
        self._routes.sort(key=lambda r: -len(r[0]))

    def stats(self) -> dict[str, Any]:
        return {"port": self.port, "connections": len(self._tasks), **self.counts}

    async def start(self, host: str, port: int) -> None:
        self._server = await asyncio.start_server(self._connection, host, port,
                                                  limit=MAX_HEAD, backlog=128)  # fmt: skip
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    # -- one connection ------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            if len(self._tasks) > self.max_connections:
                self.counts["busy"] += 1
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                             b"Connection: close\r\nRetry-After: 1\r\n\r\n")  # fmt: skip
                await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
                return
            await self._serve(reader, writer)
        except (OSError, TimeoutError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass  # the client went, stalled or broke framing: nothing to answer
        finally:
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        peer = str(writer.get_extra_info("peername"))
        first = True
        while True:
            deadline = time.monotonic() + (HEAD_TIMEOUT if first else IDLE_TIMEOUT)
            event = await self._next_head(conn, reader, deadline)
            if event is None:
                return
            first = False
            if isinstance(event, Response):  # the head itself was bad: h11 cannot frame it
                writer.write(
                    f"HTTP/1.1 {event.status} {_REASONS[event.status]}\r\n"
                    f"Content-Length: {len(event.body)}\r\nConnection: close\r\n"
                    "Content-Type: text/plain\r\n\r\n".encode()
                    + event.body
                )
                await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
                return
            response, method = await self._answer(event, peer)
            await self._send(conn, writer, method, response)
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            # A GET/HEAD has no body; anything a client sent as one ends here.
            while conn.their_state is h11.SEND_BODY:
                more = await self._next_event(conn, reader, time.monotonic() + HEAD_TIMEOUT)
                if more is None or isinstance(more, h11.EndOfMessage):
                    break
            if conn.their_state is not h11.DONE or conn.our_state is not h11.DONE:
                return
            conn.start_next_cycle()

    async def _next_event(self, conn: h11.Connection, reader: asyncio.StreamReader,
                          deadline: float) -> Any:  # fmt: skip
        while True:
            event = conn.next_event()
            if event is not h11.NEED_DATA:
                return event
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            try:
                data = await asyncio.wait_for(
                    reader.read(MAX_HEAD), left
                )  # h11 bounds a partial head only
            except TimeoutError:
                return None
            conn.receive_data(data)
            if not data and conn.their_state is not h11.DONE:
                return None

    async def _next_head(self, conn: h11.Connection, reader: asyncio.StreamReader,
                         deadline: float) -> h11.Request | Response | None:  # fmt: skip
        try:
            event = await self._next_event(conn, reader, deadline)
        except h11.RemoteProtocolError as exc:
            self.counts["refused"] += 1
            status = exc.error_status_hint
            return text(431 if status == 431 else 400, "bad request")
        if isinstance(event, h11.ConnectionClosed) or event is None:
            return None
        if not isinstance(event, h11.Request) or event.http_version not in (b"1.0", b"1.1"):
            self.counts["refused"] += 1
            return text(400, "bad request")
        return event

    async def _answer(self, event: h11.Request, peer: str) -> tuple[Response, str]:
        self.counts["requests"] += 1
        method = event.method.decode("ascii", "replace")
        if method not in ("GET", "HEAD"):
            self.counts["refused"] += 1
            response = text(405, "only GET and HEAD")
            response.headers.append(("Allow", "GET, HEAD"))
            return response, "GET"
        try:
            request = _request(method, event, peer)
        except ValueError as exc:
            self.counts["refused"] += 1
            return text(400, str(exc)), method
        route = next((r for r in self._routes if request.path == r[0]
                      or (r[0].endswith("/") and request.path.startswith(r[0]))), None)  # fmt: skip
        if route is None:
            return text(404, "not found"), method
        _prefix, handler, signed = route
        if signed:
            why = self._authorise(request) if self._authorise else "403 no fleet trust on this node"
            if why is not None:
                self.counts["refused"] += 1
                code, _, message = why.partition(" ")
                return text(int(code), message), method
        try:
            return await handler(request), method
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one broken handler must not take the face down
            self._log(f"http: {request.path}: {type(exc).__name__}: {exc}")
            return text(500, "internal error"), method

    async def _send(self, conn: h11.Connection, writer: asyncio.StreamWriter, method: str,
                    response: Response) -> None:  # fmt: skip
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
        streaming = response.stream is not None
        if not streaming:
            headers.append(("Content-Length", str(len(response.body))))
        elif response.length is not None:
            headers.append(("Content-Length", str(response.length)))
        elif conn.their_http_version == b"1.0":
            headers.append(("Connection", "close"))  # no chunking: the close ends the body
        if response.status >= 400 and response.status != 404:
            headers.append(("Connection", "close"))
        reason = _REASONS.get(response.status, "").encode()
        out = conn.send(h11.Response(status_code=response.status, headers=headers, reason=reason))
        writer.write(out or b"")
        try:
            if method != "HEAD":
                if response.stream is not None:
                    async for chunk in response.stream:
                        if chunk:
                            writer.write(conn.send(h11.Data(data=chunk)) or b"")
                            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
                elif response.body:
                    writer.write(conn.send(h11.Data(data=response.body)) or b"")
            writer.write(conn.send(h11.EndOfMessage()) or b"")
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
        finally:
            if response.stream is not None and hasattr(response.stream, "aclose"):
                await response.stream.aclose()

    # -- the public routes ---------------------------------------------------

    async def _blob(self, request: Request) -> Response:
        digest = request.path[len("/blob/sha256/") :]
        if not _HEX64.fullmatch(digest):
            return text(400, "a blob is /blob/sha256/<64 lowercase hex>")
        return serve_file(blob_path(self.state_dir, digest), request, etag=digest)

    async def _tuf(self, request: Request) -> Response:
        from undistro.content._tuf_files import tuf_path

        name = request.path[len("/tuf/") :]
        path = tuf_path(self.state_dir, name)
        if path is None:
            return text(404, "not found")
        return serve_file(path, request, etag=None)


async def start_http_face(
    state_dir: str, host: str, port: int = DEFAULT_PORT, *,
    max_connections: int = MAX_CONNECTIONS, authorise: Authorise | None = None,
    log: Callable[[str], None] | None = None,
) -> HttpFace:  # fmt: skip
    """Serve this node's face on ``host:port`` (port 0: any free one, see ``.port``).

    ``authorise`` decides signed routes; without it they answer 403. Use
    ``undistro.content._auth.operator_authorise(state_dir)`` for the fleet's
    operator keys.
    """
    face = HttpFace(state_dir, max_connections=max_connections, authorise=authorise, log=log)
    await face.start(host, port)
    return face


def blob_path(state_dir: str, digest: str) -> str:
    return os.path.join(state_dir, "content", "sha256", digest)


def _request(method: str, event: h11.Request, peer: str) -> Request:
    try:
        target = event.target.decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("request target is not ASCII") from None
    path, _, query = target.partition("?")
    if not path.startswith("/") or "%" in path or "\\" in path or "\0" in target:
        raise ValueError("bad path (no percent-encoding, no backslashes)")
    segments = path[1:].split("/")
    if segments[-1] == "":
        segments.pop()  # "/" and "/tuf/" end in an empty segment
    for segment in segments:
        if not _SEGMENT.fullmatch(segment) or set(segment) == {"."}:
            raise ValueError("bad path segment")
    params: dict[str, str] = {}
    for pair in query.split("&") if query else ():
        key, _, value = pair.partition("=")
        if not _SEGMENT.fullmatch(key) or (value and not _SEGMENT.fullmatch(value)):
            raise ValueError("bad query")
        params[key] = value
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in event.headers}
    return Request(method, target, path, params, headers, peer)


def serve_file(path: str, request: Request, *, etag: str | None,
               content_type: str = "application/octet-stream") -> Response:  # fmt: skip
    """A regular file as a response: one range, HEAD, ETag, If-None-Match.

    Opened without following a symlink; anything but a regular file is 404.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return text(404, "not found")
    try:
        st = os.fstat(fd)
    except OSError:
        os.close(fd)
        return text(404, "not found")
    import stat

    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        return text(404, "not found")
    size = st.st_size
    headers = [("Content-Type", content_type), ("Accept-Ranges", "bytes")]
    if etag is not None:
        headers += [("ETag", f'"{etag}"'), ("Cache-Control", "public, max-age=31536000, immutable")]
        if request.headers.get("if-none-match", "").strip() in (f'"{etag}"', "*"):
            os.close(fd)
            return Response(304, headers)
    else:
        headers.append(("Cache-Control", "no-cache"))
    start, end, status = 0, size, 200
    wanted = request.headers.get("range")
    if wanted is not None:
        chosen = parse_range(wanted, size)
        if chosen is None:
            os.close(fd)
            return Response(416, [("Content-Range", f"bytes */{size}"),
                                  ("Content-Type", "text/plain")],
                            b"one satisfiable range only: bytes=a-b, a- or -n\n")  # fmt: skip
        start, end, status = chosen[0], chosen[1] + 1, 206
        headers.append(("Content-Range", f"bytes {start}-{end - 1}/{size}"))
    if request.method == "HEAD":
        os.close(fd)
        return Response(status, headers, stream=_nothing(), length=end - start)
    return Response(status, headers, stream=_read(fd, start, end), length=end - start)


async def _nothing() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


async def _read(fd: int, start: int, end: int) -> AsyncIterator[bytes]:
    try:
        offset = start
        while offset < end:
            chunk = os.pread(fd, min(_CHUNK, end - offset), offset)
            if not chunk:  # the file shrank under us (it must not: blobs are immutable)
                raise OSError("short read")
            offset += len(chunk)
            yield chunk
    finally:
        os.close(fd)


def parse_range(value: str, size: int) -> tuple[int, int] | None:
    """(first, last) byte of the one range in a ``Range`` header, or None.

    None for anything that is not exactly one satisfiable byte range: several
    ranges (a cheap amplification), other units, junk, numbers of more than
    19 digits, an empty file.
    """
    unit, _, spec = value.strip().partition("=")
    if unit.strip().lower() != "bytes" or "," in spec or size == 0:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or len(first) > _MAX_RANGE_DIGITS or len(last) > _MAX_RANGE_DIGITS:
        return None
    if (first and not first.isdigit()) or (last and not last.isdigit()) or not (first or last):
        return None
    if not first:  # suffix: the last N bytes
        n = int(last)
        return (max(0, size - n), size - 1) if n > 0 else None
    a = int(first)
    b = min(int(last), size - 1) if last else size - 1
    if a >= size or b < a:
        return None
    return a, b
