"""Large blobs through a BitTorrent swarm of the fleet's own nodes.

The torrent of a blob is a pure function of its bytes (name = its SHA-256,
a piece size fixed by its length, no dates, no trackers), so every node that
holds the blob computes the same info-hash. A ``SwarmRef`` (SHA-256, size,
info-hash) is what a signed reference carries; a receiver trusts nothing
else. libtorrent checks the metadata it gets from peers against the
info-hash and every piece against the metadata, and the finished file must
still match the SHA-256 before it enters the store: a lying peer costs time,
never a wrong blob.

libtorrent itself (+15.5 MB RSS imported, +5.7 MB with a session, measured)
never enters the agent: ``Swarm`` starts one child per node
(``undistro.content._swarm_child``) the first time a large blob moves, and
talks to it in JSON lines over its stdin and stdout. See docs/content-swarm.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from undistro.errors import UndistroError

SWARM_PORT = 7949  # the shared contract: Serf tag ``bt`` advertises it
# Below this, plain HTTP from one peer beats starting a swarm (measured by
# bench/content_swarm.py; docs/content-swarm.md has the figures).
SWARM_THRESHOLD = 16 * 1024 * 1024

_MIN_PIECE = 256 * 1024
_MAX_PIECE = 4 * 1024 * 1024
_TARGET_PIECES = 1024  # pieces are the unit a receiver serves on at once
_HEX = frozenset("0123456789abcdef")


class SwarmError(UndistroError, RuntimeError):
    """A blob could not be moved through the swarm."""


@dataclass(frozen=True)
class SwarmRef:
    """What a signed reference says about a large blob: all a receiver trusts."""

    sha256: str
    size: int
    info_hash: str  # hex SHA-1 of the bencoded info dict

    def __post_init__(self) -> None:
        if len(self.sha256) != 64 or not set(self.sha256) <= _HEX:
            raise SwarmError(f"not a sha256 hex digest: {self.sha256[:80]!r}")
        if len(self.info_hash) != 40 or not set(self.info_hash) <= _HEX:
            raise SwarmError(f"not an info-hash: {self.info_hash[:80]!r}")
        if self.size <= 0:
            raise SwarmError(f"a swarm blob has a positive size, not {self.size}")

    def as_json(self) -> dict[str, Any]:
        return {"sha256": self.sha256, "size": self.size, "info_hash": self.info_hash}


def piece_size(size: int) -> int:
    """The piece length for a blob of ``size`` bytes: a power of two in 256 KiB..4 MiB."""
    piece = _MIN_PIECE
    while piece < _MAX_PIECE and size > piece * _TARGET_PIECES:
        piece *= 2
    return piece


def _bencode(value: int | bytes | dict[bytes, Any]) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    return b"d" + b"".join(_bencode(k) + _bencode(value[k]) for k in sorted(value)) + b"e"


def torrent_info(path: Path) -> tuple[str, bytes]:
    """The blob's SHA-256 and its bencoded BitTorrent v1 info dict, in one read.

    Example: ``sha, info = torrent_info(store / "sha256" / hex)``.
    """
    import hashlib  # OpenSSL's SHA-1 only on this path, never at agent start

    size = path.stat().st_size
    piece = piece_size(size)
    whole = hashlib.sha256()
    pieces = bytearray()
    with open(path, "rb") as f:
        while chunk := f.read(piece):
            whole.update(chunk)
            pieces += hashlib.sha1(chunk).digest()
    sha = whole.hexdigest()
    info = {
        b"length": size,
        b"name": sha.encode(),
        b"piece length": piece,
        b"pieces": bytes(pieces),
    }
    return sha, _bencode(info)


def swarm_ref(path: Path) -> SwarmRef:
    """The reference a publisher signs for the blob at ``path``."""
    import hashlib

    sha, info = torrent_info(path)
    return SwarmRef(sha, path.stat().st_size, hashlib.sha1(info).hexdigest())


def swarm_peers(members: Iterable[Any], own_addr: str) -> list[tuple[str, int]]:
    """(address, port) of the alive members that advertise a swarm (Serf tag ``bt``).

    ``members`` are ``undistro.fleet.Member`` records; a tag that is not a
    port number is skipped, not trusted.
    """
    peers = []
    for m in members:
        tag = m.tags.get("bt", "")
        if m.status != "alive" or m.addr == own_addr or not tag.isdigit():
            continue
        port = int(tag)
        if 0 < port < 65536:
            peers.append((m.addr, port))
    return peers


class Swarm:
    """This node's swarm: a libtorrent child started on first use.

    Args:
        state_dir: the node's state directory; blobs live in
            ``<state_dir>/content/sha256/`` (the store is the seed dir).
        bind: the node's fleet address; the child listens there only.
        port: the listen port (advertise it in the Serf tag ``bt``).
        launcher: argv put before the child's (tests: ``ip netns exec NS``).

    Example::

        swarm = Swarm(state, "10.0.0.5")
        path = await swarm.fetch(ref, swarm_peers(members, "10.0.0.5"))
    """

    def __init__(
        self,
        state_dir: Path,
        bind: str,
        port: int = SWARM_PORT,
        launcher: Sequence[str] = (),
    ) -> None:
        self.state_dir = Path(state_dir)
        self.bind = bind
        self.port = port
        self.launcher = tuple(launcher)
        self._proc: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._start_lock = asyncio.Lock()

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def start(self) -> None:
        async with self._start_lock:
            if self._proc is not None and self._proc.returncode is None:
                return
            argv = [
                *self.launcher,
                sys.executable,
                "-m",
                "undistro.content._swarm_child",
                f"--state={self.state_dir}",
                f"--listen={self.bind}:{self.port}",
            ]
            self._proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
            ready = self._expect("ready", "")
            self._reader = asyncio.create_task(self._read())
            try:
                await asyncio.wait_for(ready, 20)
            except (TimeoutError, SwarmError):
                await self.close()
                raise

    async def seed(self, sha256: str, receivers: int = 3) -> None:
        """Serve the stored blob ``sha256`` to the swarm (the origin's side).

        ``receivers``: how many nodes are expected to fetch it (the fleet's
        size); from 3 on the origin super-seeds, uploading about one copy.
        """
        path = self.state_dir / "content" / "sha256" / sha256
        if not path.is_file():
            raise SwarmError(f"blob {sha256} is not in the store")
        await self.start()
        msg = {"op": "seed", "sha256": sha256, "receivers": receivers}
        await self._call(msg, "seeding", sha256, 120)

    async def fetch(
        self, ref: SwarmRef, peers: Sequence[tuple[str, int]], timeout: float = 600
    ) -> Path:
        """Fetch ``ref`` from ``peers`` into the store and keep seeding it.

        Returns the store path once the SHA-256 matched. Raises SwarmError
        on a mismatch, a metadata that does not fit ``ref`` or a timeout.
        """
        path = self.state_dir / "content" / "sha256" / ref.sha256
        if path.is_file():
            return path
        await self.start()
        msg = {"op": "fetch", **ref.as_json(), "peers": [list(p) for p in peers]}
        await self._call(msg, "stored", ref.sha256, timeout)
        return path

    async def add_peers(self, sha256: str, peers: Sequence[tuple[str, int]]) -> None:
        """Connect the transfer of ``sha256`` to more peers (new members)."""
        await self._send({"op": "peers", "sha256": sha256, "peers": [list(p) for p in peers]})

    async def stats(self) -> dict[str, Any]:
        """Per blob: bytes uploaded/downloaded, peers, hash failures."""
        if self._proc is None:
            return {}
        reply = await self._call({"op": "stats"}, "stats", "", 10)
        return dict(reply.get("torrents", {}))

    async def close(self) -> None:
        """End the child (it stops seeding); the store keeps every blob."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.stdin is not None and not proc.stdin.is_closing():
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 5)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        if self._reader is not None:
            await self._reader

    def _expect(self, event: str, sha256: str) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(event, sha256)] = fut
        return fut

    async def _send(self, msg: dict[str, Any]) -> None:
        proc = self._proc
        if proc is None or proc.stdin is None:
            raise SwarmError("the swarm child is not running")
        proc.stdin.write(json.dumps(msg).encode() + b"\n")
        await proc.stdin.drain()

    async def _call(
        self, msg: dict[str, Any], event: str, sha256: str, timeout: float
    ) -> dict[str, Any]:
        fut = self._expect(event, sha256)
        if "sha256" in msg:
            # A failure of this blob ends the wait as well as its success.
            failed = self._expect("failed", sha256)
            failed.add_done_callback(lambda f: None if fut.done() else _relay(f, fut))
        await self._send(msg)
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise SwarmError(f"swarm: {msg['op']} {sha256} timed out after {timeout:g} s") from None
        finally:
            self._waiting.pop((event, sha256), None)
            self._waiting.pop(("failed", sha256), None)

    async def _read(self) -> None:
        proc = self._proc
        assert proc is not None and proc.stdout is not None
        async for line in proc.stdout:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            fut = self._waiting.get((str(msg.get("event")), str(msg.get("sha256", ""))))
            if fut is not None and not fut.done():
                fut.set_result(msg)
        gone = SwarmError("the swarm child exited")
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(gone)


def _relay(failed: asyncio.Future[dict[str, Any]], fut: asyncio.Future[dict[str, Any]]) -> None:
    if failed.cancelled():
        return
    exc = failed.exception()
    if exc is not None:
        fut.set_exception(exc)
    else:
        fut.set_exception(SwarmError(f"swarm: {failed.result().get('error', 'failed')}"))
