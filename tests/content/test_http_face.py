"""The HTTP face on loopback: blobs, ranges, and what a hostile client gets."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from collections.abc import AsyncIterator

import pytest

from undistro.content._http import HttpFace, Request, Response, parse_range, start_http_face


def put_blob(state_dir: str, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    top = os.path.join(state_dir, "content", "sha256")
    os.makedirs(top, exist_ok=True)
    with open(os.path.join(top, digest), "wb") as f:
        f.write(data)
    return digest


async def raw(port: int, data: bytes, *, read_all: bool = True) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    out = await asyncio.wait_for(reader.read(1 << 20) if not read_all else reader.read(), 10)
    if read_all:
        while True:
            more = await asyncio.wait_for(reader.read(), 10)
            if not more:
                break
            out += more
    writer.close()
    return out


def get(path: str, *headers: str, method: str = "GET") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: x", "Connection: close", *headers, "", ""]
    return "\r\n".join(lines).encode()


def status(reply: bytes) -> int:
    return int(reply.split(b" ", 2)[1])


def body(reply: bytes) -> bytes:
    return reply.partition(b"\r\n\r\n")[2]


@pytest.fixture
def run(tmp_path):  # type: ignore[no-untyped-def]
    """Runs ``test(face)`` against a face started on loopback; closes it after."""

    def go(test, **kw):  # type: ignore[no-untyped-def]
        async def main() -> None:
            face = await start_http_face(str(tmp_path), "127.0.0.1", 0, **kw)
            try:
                await test(face)
            finally:
                await face.close()

        asyncio.run(main())

    return go


DATA = bytes(range(256)) * 1000  # 256000 bytes


def test_blob_get_head_and_cache_headers(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    digest = put_blob(str(tmp_path), DATA)

    async def test(face: HttpFace) -> None:
        reply = await raw(face.port, get(f"/blob/sha256/{digest}"))
        assert status(reply) == 200 and body(reply) == DATA
        head = reply.partition(b"\r\n\r\n")[0].lower()
        assert f'etag: "{digest}"'.encode() in head
        assert b"immutable" in head and b"content-length: 256000" in head
        reply = await raw(face.port, get(f"/blob/sha256/{digest}", method="HEAD"))
        assert status(reply) == 200 and body(reply) == b""
        assert b"content-length: 256000" in reply.lower()
        reply = await raw(face.port, get(f"/blob/sha256/{digest}", f'If-None-Match: "{digest}"'))
        assert status(reply) == 304 and body(reply) == b""
        missing = "0" * 64
        assert status(await raw(face.port, get(f"/blob/sha256/{missing}"))) == 404

    run(test)


def test_ranges(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    digest = put_blob(str(tmp_path), DATA)
    url = f"/blob/sha256/{digest}"

    async def test(face: HttpFace) -> None:
        reply = await raw(face.port, get(url, "Range: bytes=10-19"))
        assert status(reply) == 206 and body(reply) == DATA[10:20]
        assert b"content-range: bytes 10-19/256000" in reply.lower()
        reply = await raw(face.port, get(url, "Range: bytes=-5"))
        assert status(reply) == 206 and body(reply) == DATA[-5:]
        reply = await raw(face.port, get(url, "Range: bytes=255990-"))
        assert body(reply) == DATA[255990:]
        reply = await raw(face.port, get(url, "Range: bytes=255990-99999999"))
        assert status(reply) == 206 and body(reply) == DATA[255990:]
        for bad in [
            "bytes=0-1,2-3",
            "bytes=" + ",".join(["0-1"] * 500),
            "bytes=300000-",
            "bytes=5-1",
            "bytes=" + "9" * 40 + "-",
            "items=0-1",
            "bytes=-0",
            "bytes=a-b",
            "bytes=-",
            "bytes=0-5,3-8",
        ]:
            reply = await raw(face.port, get(url, f"Range: {bad}"))
            assert status(reply) == 416, bad
            assert b"content-range: bytes */256000" in reply.lower()

    run(test)


@pytest.mark.parametrize("path", [
    "/blob/sha256/../../../etc/passwd", "/blob/sha256/%2e%2e%2fetc", "/blob/sha256/a%2fb",
    "/blob/sha256/" + "A" * 64, "/blob/sha256/" + "a" * 63, "/blob/sha256/" + "a" * 65,
    "/blob/sha256/" + "g" * 64, "/blob/sha256/" + "a" * 63 + "%00", "/blob//x",
    "/tuf/../fleet/metadata/root.json", "/tuf/", "/tuf/root.json.bak", "/blob/sha256/",
    "/", "/blob", "/blob/sha256", "//etc/passwd", "/tuf/..", "/tuf/.",
])  # fmt: skip
def test_path_tricks_are_4xx(run, tmp_path, path: str) -> None:  # type: ignore[no-untyped-def]
    put_blob(str(tmp_path), b"x")

    async def test(face: HttpFace) -> None:
        reply = await raw(face.port, get(path))
        assert 400 <= status(reply) < 500, (path, reply)
        assert b"Traceback" not in reply

    run(test)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n", b"GET\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
    b"GET /blob HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
    b"GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n", b"GET /\xff HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20000 + b"\r\n\r\n",
    b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /x HTTP/1.1\r\nHost: a\r\n" + b"X: 1\r\n" * 3000 + b"\r\n",
])  # fmt: skip
def test_malformed_requests(run, request_bytes: bytes) -> None:  # type: ignore[no-untyped-def]
    async def test(face: HttpFace) -> None:
        reply = await raw(face.port, request_bytes)
        assert 400 <= status(reply) < 500, reply[:200]
        assert b"Traceback" not in reply

    run(test)


def test_writes_are_405(run) -> None:  # type: ignore[no-untyped-def]
    async def test(face: HttpFace) -> None:
        for method in ["PUT", "POST", "DELETE", "PATCH", "OPTIONS", "TRACE"]:
            req = (
                f"{method} /blob/sha256/{'a' * 64} HTTP/1.1\r\nHost: a\r\n"
                "Content-Length: 3\r\n\r\nabc"
            ).encode()
            reply = await raw(face.port, req)
            assert status(reply) == 405, method
            assert b"allow: get, head" in reply.lower()

    run(test)


def test_keep_alive_serves_several_requests(run, tmp_path) -> None:  # type: ignore[no-untyped-def]
    digest = put_blob(str(tmp_path), b"hello")

    async def test(face: HttpFace) -> None:
        one = f"GET /blob/sha256/{digest} HTTP/1.1\r\nHost: a\r\n\r\n".encode()
        last = f"GET /blob/sha256/{digest} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n"
        reply = await raw(face.port, one * 3 + last.encode())
        assert reply.count(b"HTTP/1.1 200") == 4 and reply.count(b"hello") == 4

    run(test)


def test_slowloris_is_cut(run, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import undistro.content._http as http

    monkeypatch.setattr(http, "HEAD_TIMEOUT", 0.5)

    async def test(face: HttpFace) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", face.port)
        writer.write(b"GET /blob/sha256/")
        await writer.drain()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, nothing said
        assert loop.time() - t0 < 3
        writer.close()

    run(test)


def test_connections_are_bounded(run) -> None:  # type: ignore[no-untyped-def]
    async def test(face: HttpFace) -> None:
        held = [await asyncio.open_connection("127.0.0.1", face.port) for _ in range(3)]
        await asyncio.sleep(0.1)
        reply = await raw(face.port, get("/blob/sha256/" + "a" * 64))
        assert status(reply) == 503
        for _, w in held:
            w.close()
        await asyncio.sleep(0.1)
        assert status(await raw(face.port, get("/blob/sha256/" + "a" * 64))) == 404

    run(test, max_connections=3)


def test_extra_routes_and_a_stream(run) -> None:  # type: ignore[no-untyped-def]
    pushed: asyncio.Queue[bytes] = asyncio.Queue()

    async def events(request: Request) -> Response:
        async def stream() -> AsyncIterator[bytes]:
            while True:
                item = await pushed.get()
                if not item:
                    return
                yield b"data: " + item + b"\n\n"

        return Response(200, [("Content-Type", "text/event-stream")], stream=stream())

    async def page(request: Request) -> Response:
        return Response(
            200, [("Content-Type", "text/html")], b"<p>" + request.query.get("a", "").encode()
        )

    async def broken(request: Request) -> Response:
        raise RuntimeError("boom")

    async def test(face: HttpFace) -> None:
        face.route("/", page)
        face.route("/events", events)
        face.route("/broken", broken)
        reply = await raw(face.port, get("/?a=b"))
        assert status(reply) == 200 and body(reply) == b"<p>b"
        reply = await raw(face.port, get("/broken"))
        assert status(reply) == 500 and b"Traceback" not in reply and b"boom" not in reply
        reader, writer = await asyncio.open_connection("127.0.0.1", face.port)
        writer.write(get("/events"))
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"text/event-stream" in head and b"chunked" in head.lower()
        await pushed.put(b"one")
        assert b"data: one" in await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)
        await pushed.put(b"two")
        assert b"data: two" in await asyncio.wait_for(reader.readuntil(b"\n\n\r\n"), 5)
        await pushed.put(b"")
        assert (await asyncio.wait_for(reader.read(), 5)).endswith(b"0\r\n\r\n")
        writer.close()

    run(test)


def test_signed_route_without_authorise_is_403(run) -> None:  # type: ignore[no-untyped-def]
    async def status_handler(request: Request) -> Response:
        return Response(200, [], b"secret")

    async def test(face: HttpFace) -> None:
        face.route("/status", status_handler, signed=True)
        reply = await raw(face.port, get("/status"))
        assert status(reply) == 403 and b"secret" not in reply

    run(test)


def test_parse_range_table() -> None:
    assert parse_range("bytes=0-0", 10) == (0, 0)
    assert parse_range("bytes=-100", 10) == (0, 9)
    assert parse_range("bytes=9-", 10) == (9, 9)
    assert parse_range("bytes=10-", 10) is None
    assert parse_range("bytes=0-0", 0) is None
    assert parse_range(" bytes = 2 - 3 ", 10) == (2, 3)


def test_port_in_use_is_an_oserror(tmp_path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(OSError):
            asyncio.run(start_http_face(str(tmp_path), "127.0.0.1", port))
