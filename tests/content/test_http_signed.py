"""Status and logs on the face: only for requests an operator signed."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest

from tests.conftest import trusting_state
from undistro.content._auth import operator_authorise, sign_request
from undistro.content._http import HttpFace, start_http_face
from undistro.content._node_routes import add_node_routes
from undistro.fleet._publish import load_operator

NODE = "node-a"


@pytest.fixture
def state(tmp_path: Path, fleet: Path) -> str:
    path = trusting_state(tmp_path / "node-state", fleet)
    (path / "logs").mkdir()
    (path / "logs" / "web.log").write_bytes(b"".join(b"line %d\n" % i for i in range(500)))
    return str(path)


async def fetch(port: int, target: str, auth: str | None) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    extra = f"Authorization: {auth}\r\n" if auth else ""
    writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra}\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    if b"chunked" in head.lower():
        out = b""
        while body:
            size, _, rest = body.partition(b"\r\n")
            n = int(size, 16)
            out, body = out + rest[:n], rest[n + 2 :]
        body = out
    return int(head.split(b" ")[1]), body


def serve(state: str, test, **kw):  # type: ignore[no-untyped-def]
    async def main() -> None:
        face = await start_http_face(
            state, "127.0.0.1", 0, authorise=operator_authorise(state, NODE, **kw)
        )
        add_node_routes(
            face, summary=lambda: {"revision": 3, "failed": 0}, log_dir=os.path.join(state, "logs")
        )
        try:
            await test(face)
        finally:
            await face.close()

    asyncio.run(main())


def test_signed_status_and_logs_answer(fleet: Path, state: str) -> None:
    signer, seq = load_operator(str(fleet), "admin")

    async def test(face: HttpFace) -> None:
        code, body = await fetch(
            face.port, "/status", sign_request(signer, NODE, "GET", "/status", sequence=seq)
        )
        assert code == 200 and json.loads(body) == {"failed": 0, "revision": 3}
        target = "/logs/web?lines=3"
        code, body = await fetch(
            face.port, target, sign_request(signer, NODE, "GET", target, sequence=seq + 1)
        )
        assert (code, body) == (200, b"line 497\nline 498\nline 499\n")

    serve(state, test)


def test_unsigned_and_wrongly_signed_are_refused(fleet: Path, state: str, tmp_path: Path) -> None:
    from securesystemslib.signer import CryptoSigner

    signer, seq = load_operator(str(fleet), "admin")
    stranger = CryptoSigner.generate_ed25519()

    async def test(face: HttpFace) -> None:
        good = sign_request(signer, NODE, "GET", "/status", sequence=seq)
        cases = {
            "none": (None, 401),
            "junk": ("Bearer abc", 401),
            "stranger": (sign_request(stranger, NODE, "GET", "/status", sequence=1), 403),
            "other node": (sign_request(signer, "node-b", "GET", "/status", sequence=seq + 1), 401),
            "other path": (sign_request(signer, NODE, "GET", "/logs/web", sequence=seq + 2), 401),
            "other method": (sign_request(signer, NODE, "HEAD", "/status", sequence=seq + 3), 401),
            "expired": (
                sign_request(
                    signer, NODE, "GET", "/status", sequence=seq + 4, now=time.time() - 120
                ),
                401,
            ),
            "future": (
                sign_request(
                    signer, NODE, "GET", "/status", sequence=seq + 5, now=time.time() + 120
                ),
                401,
            ),
            "flipped": (good[:-2] + ("00" if not good.endswith("00") else "11"), 401),
        }
        for why, (auth, expected) in cases.items():
            code, body = await fetch(face.port, "/status", auth)
            assert code == expected, (why, body)
            assert b"revision" not in body and b"Traceback" not in body
        for target in ["/logs/web", "/logs/web?lines=5&follow=1"]:
            code, body = await fetch(face.port, target, None)
            assert code == 401 and b"line" not in body
        assert (await fetch(face.port, "/status", good))[0] == 200
        code, body = await fetch(face.port, "/status", good)  # the same request again
        assert code == 401 and b"replayed" in body

    serve(state, test)


def test_bad_log_requests(fleet: Path, state: str) -> None:
    signer, seq = load_operator(str(fleet), "admin")

    async def test(face: HttpFace) -> None:
        for i, (target, expected) in enumerate(
            [
                ("/logs/nosuch", 404),
                ("/logs/web?lines=-1", 400),
                ("/logs/web?lines=99999999", 400),
                ("/logs/web?lines=abc", 400),
                ("/logs/..", 400),
                ("/logs/web.log", 400),
                ("/logs/web/x", 400),
                ("/logs/web?lines=0", 200),
            ]
        ):
            auth = sign_request(signer, NODE, "GET", target, sequence=seq + i)
            code, body = await fetch(face.port, target, auth)
            assert code == expected, (target, body)
            assert b"Traceback" not in body

    serve(state, test)


def test_follow_streams_new_lines_and_survives_rotation(fleet: Path, state: str) -> None:
    from undistro.supervisor._logs import RotatingLog

    signer, seq = load_operator(str(fleet), "admin")
    log_path = os.path.join(state, "logs", "web.log")

    async def test(face: HttpFace) -> None:
        log = RotatingLog(log_path, max_bytes=10_000, keep=1)
        target = "/logs/web?lines=1&follow=1"
        reader, writer = await asyncio.open_connection("127.0.0.1", face.port)
        auth = sign_request(signer, NODE, "GET", target, sequence=seq)
        writer.write(f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n\r\n".encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert b"line 499\n" in await asyncio.wait_for(reader.readuntil(b"line 499\n"), 5)
        log.write(b"fresh one\n")
        await asyncio.wait_for(reader.readuntil(b"fresh one\n"), 5)
        log.write(b"x" * 9000 + b"\nafter rotation\n")  # past max_bytes: the file rotates
        await asyncio.wait_for(reader.readuntil(b"after rotation\n"), 5)
        log.write(b"and more\n")
        await asyncio.wait_for(reader.readuntil(b"and more\n"), 5)
        log.close()
        writer.close()

    serve(state, test)
