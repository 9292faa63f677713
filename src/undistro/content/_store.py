"""The node's one content store: blobs addressed by SHA-256.

Layout (a contract shared with every reader, see docs/content.md)::

    <state_dir>/content/sha256/<64 lowercase hex>   read-only blobs
    <state_dir>/content/tmp/                        staging, one file a writer

A blob enters only through :meth:`ContentStore.add_stream`: it is hashed
while it is written to a temp file, fsynced, and renamed into place only if
the hash is the one asked for. A reader therefore never sees a partial or a
wrong blob at ``sha256/<hex>``; a writer killed half way leaves a temp file
that the next :meth:`sweep` (run by every add and by gc) removes once its
writer is gone. Two writers of the same blob both succeed: the rename is
atomic and both files are the same bytes.

Policy bundles, keg artifacts and source archives all live here; what is
kept is decided by gc from the roots (generations, kept revisions, sources
of recipes in use), never by this module.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
from collections.abc import Iterator
from typing import BinaryIO

from undistro._files import fsync_dir
from undistro._hash import sha256_file
from undistro.errors import UndistroError

STATE_DIR = "/var/lib/undistro"
_CHUNK = 1 << 20
_HEX = re.compile(r"[0-9a-f]{64}")
_TMP_PREFIX = "in-"


class ContentError(UndistroError, OSError):
    """A blob is missing, malformed, corrupted, or could not be stored."""


class HashMismatch(ContentError):
    """A stream did not hash to the digest it was offered as."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"SHA-256 mismatch: expected {expected[:12]}…, got {actual[:12]}…")
        self.expected = expected
        self.actual = actual


def check_hex(sha256: str) -> str:
    """``sha256`` if it is 64 lowercase hex digits; ContentError otherwise
    (so no name handed in — from a peer, a URL, a file — can be a path)."""
    if not isinstance(sha256, str) or not _HEX.fullmatch(sha256):
        shown = repr(sha256)[:80]
        raise ContentError(f"not a SHA-256 digest (64 lowercase hex): {shown}")
    return sha256


def store_for_root(root: str = "/", state_dir: str | None = None) -> ContentStore:
    """The store of the node at ``root`` (``ROOT/var/lib/undistro`` unless a
    state directory is named, as ``--state-dir`` does)."""
    if state_dir is None:
        state_dir = os.path.join(os.path.abspath(root), STATE_DIR.lstrip("/"))
    return ContentStore(state_dir)


class ContentStore:
    """Blobs by SHA-256 under ``<state_dir>/content``.

    Args:
        state_dir: the node's state directory (already rebased under
            ``--root`` by the caller, as every state-dir user does).

    Example::

        store = ContentStore("/var/lib/undistro")
        with open("bundle.tar", "rb") as f:
            store.add_stream(expected_hex, f)
        store.path(expected_hex)    # .../content/sha256/<hex>, mode 0444
    """

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir
        self.directory = os.path.join(state_dir, "content")
        self.blobs = os.path.join(self.directory, "sha256")
        self.tmp = os.path.join(self.directory, "tmp")

    def __repr__(self) -> str:
        return f"ContentStore({self.state_dir!r})"

    # -- reading ------------------------------------------------------------

    def path(self, sha256: str) -> str:
        return os.path.join(self.blobs, check_hex(sha256))

    def has(self, sha256: str) -> bool:
        return os.path.isfile(self.path(sha256))

    def open(self, sha256: str) -> BinaryIO:
        """The blob for reading; ContentError when it is not here."""
        try:
            return open(self.path(sha256), "rb")
        except FileNotFoundError:
            raise ContentError(f"blob {sha256[:12]}… is not in {self.directory}") from None

    def size(self, sha256: str) -> int:
        return os.stat(self.path(sha256)).st_size

    def verify(self, sha256: str) -> bool:
        """Hash the blob again; a blob changed on disk is removed (False), a
        missing one is False, a good one True."""
        path = self.path(sha256)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            return False
        if actual == sha256:
            return True
        _unlink(path)
        return False

    def __iter__(self) -> Iterator[str]:
        """The digests present (names that are not digests are ignored)."""
        try:
            names = os.listdir(self.blobs)
        except FileNotFoundError:
            return
        for name in sorted(names):
            if _HEX.fullmatch(name):
                yield name

    # -- writing ------------------------------------------------------------

    def add_stream(self, expected: str | None, stream: BinaryIO) -> str:
        """Copy ``stream`` in, hashing as it goes; keep it only if it hashes
        to ``expected`` (any digest when None). Returns the digest.

        On a mismatch (:class:`HashMismatch`), a read error or a full disk
        (:class:`ContentError`, one line) nothing is left behind."""
        if expected is not None:
            check_hex(expected)
            if self.has(expected):
                _drain(stream)  # the caller handed us an open stream; keep its contract
                return expected
        self._prepare()
        fd, tmp = self._temp()
        digest = hashlib.sha256()
        try:
            try:
                with os.fdopen(fd, "wb") as out:
                    while chunk := stream.read(_CHUNK):
                        digest.update(chunk)
                        out.write(chunk)
                    out.flush()
                    os.fsync(out.fileno())
            except OSError as exc:
                raise ContentError(
                    f"cannot store blob in {self.directory}: {_reason(exc)}"
                ) from None
            actual = digest.hexdigest()
            if expected is not None and actual != expected:
                raise HashMismatch(expected, actual)
            os.chmod(tmp, 0o444)
            os.replace(tmp, os.path.join(self.blobs, actual))
            tmp = ""
            fsync_dir(self.blobs)
            return actual
        finally:
            if tmp:
                _unlink(tmp)

    def add_bytes(self, data: bytes, expected: str | None = None) -> str:
        import io

        return self.add_stream(expected, io.BytesIO(data))

    def add_file(self, path: str, expected: str | None = None) -> str:
        try:
            f = open(path, "rb")  # noqa: SIM115 (its own error message; closed by the with below)
        except OSError as exc:
            raise ContentError(f"{path}: cannot read: {_reason(exc)}") from None
        with f:
            return self.add_stream(expected, f)

    def remove(self, sha256: str) -> int:
        """Delete one blob (gc's job); returns the bytes freed (0 if absent)."""
        path = self.path(sha256)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return size

    def sweep(self) -> int:
        """Remove temp files whose writer process is gone; returns how many."""
        try:
            names = os.listdir(self.tmp)
        except FileNotFoundError:
            return 0
        removed = 0
        for name in names:
            pid = _writer_pid(name)
            if pid is not None and pid != os.getpid() and _alive(pid):
                continue
            if pid == os.getpid():
                continue  # ours, still being written by another thread
            _unlink(os.path.join(self.tmp, name))
            removed += 1
        return removed

    def _prepare(self) -> None:
        try:
            os.makedirs(self.blobs, mode=0o755, exist_ok=True)
            os.makedirs(self.tmp, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise ContentError(f"cannot create {self.directory}: {_reason(exc)}") from None
        self.sweep()

    def _temp(self) -> tuple[int, str]:
        # The writer's pid is in the name so that sweep() can tell a temp
        # file of a killed writer from one still being written.
        base = f"{_TMP_PREFIX}{os.getpid()}-{os.urandom(6).hex()}"
        path = os.path.join(self.tmp, base)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ContentError(f"cannot store blob in {self.directory}: {_reason(exc)}") from None
        return fd, path


def _drain(stream: BinaryIO) -> None:
    while stream.read(_CHUNK):
        pass


def _writer_pid(name: str) -> int | None:
    if not name.startswith(_TMP_PREFIX):
        return None
    pid, _, _ = name[len(_TMP_PREFIX) :].partition("-")
    return int(pid) if pid.isdigit() else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _reason(exc: OSError) -> str:
    if exc.errno == errno.ENOSPC:
        return "no space left on device"
    return exc.strerror or str(exc)
