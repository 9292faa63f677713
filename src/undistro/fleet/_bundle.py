"""A policy directory as one deterministic, content-addressed blob.

A policy is a few dozen small text files, so a bundle is not a tarball (no
owners, times, links or devices to get wrong): it is a zstd-compressed
msgpack list of ``[relative path, executable?, content]``, sorted by path.
The same directory gives the same bytes on any machine, so its SHA-256
names the revision. Unpacking refuses anything but plain relative names,
and writes a fresh directory that is renamed into place only when whole.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from dataclasses import dataclass

import msgpack

from undistro.errors import FleetError

FORMAT = "undistro-policy-bundle/1"
MAX_FILES = 10_000
MAX_BYTES = 64 * 1024 * 1024  # unpacked; a policy is text, not artifacts
_SKIP_DIRS = frozenset({".git", ".hg", ".svn", "__pycache__"})


class BundleError(FleetError, ValueError):
    """A policy directory cannot be bundled, or a bundle is malformed."""

    exit_code = 2


@dataclass(frozen=True)
class Bundle:
    data: bytes
    sha256: str
    files: int


def make_bundle(policy_dir: str) -> Bundle:
    """Bundle every regular file under ``policy_dir`` (VCS dirs skipped).

    A symlink, FIFO, socket or device in the policy is refused: a node must
    receive exactly what the operator reviewed, and never block on a read.
    """
    import zstandard

    top = os.path.abspath(policy_dir)
    if not os.path.isfile(os.path.join(top, "undistro.toml")):
        raise BundleError(f"{policy_dir}: not a policy directory (no undistro.toml)")
    entries: list[tuple[str, bool, bytes]] = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS)
        for name in dirnames:
            if os.path.islink(os.path.join(dirpath, name)):
                raise BundleError(f"{os.path.join(dirpath, name)}: a symlink in the policy")
        for name in filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, top)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                raise BundleError(f"{path}: not a regular file")
            total += st.st_size
            if total > MAX_BYTES or len(entries) >= MAX_FILES:
                raise BundleError(f"{policy_dir}: over {MAX_BYTES} bytes or {MAX_FILES} files")
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
            with os.fdopen(fd, "rb") as f:
                content = f.read()
            entries.append((rel, bool(st.st_mode & 0o111), content))
    entries.sort()
    raw = msgpack.packb([FORMAT, [list(e) for e in entries]], use_bin_type=True)
    data = zstandard.ZstdCompressor(level=10, write_checksum=True).compress(raw)
    return Bundle(data, hashlib.sha256(data).hexdigest(), len(entries))


def unpack_bundle(data: bytes, dest: str) -> int:
    """Write the bundle's files into the new directory ``dest``; returns
    how many. ``dest`` appears whole or not at all."""
    import zstandard

    try:
        raw = zstandard.ZstdDecompressor().decompress(data, max_output_size=MAX_BYTES * 2)
        fmt, entries = msgpack.unpackb(raw, raw=False, max_bin_len=MAX_BYTES)
    except (zstandard.ZstdError, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BundleError(f"malformed policy bundle: {exc}") from None
    if fmt != FORMAT or not isinstance(entries, list) or len(entries) > MAX_FILES:
        raise BundleError(f"not a policy bundle of format {FORMAT}")
    tmp = f"{dest}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp, 0o755)
    try:
        for entry in entries:
            rel, executable, content = _check_entry(entry)
            path = os.path.join(tmp, rel)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            try:
                os.makedirs(os.path.dirname(path), 0o755, exist_ok=True)
                fd = os.open(path, flags, 0o755 if executable else 0o644)
            except (FileExistsError, NotADirectoryError, IsADirectoryError):
                raise BundleError(f"policy bundle: {rel[:80]!r} twice, or under a file") from None
            with os.fdopen(fd, "wb") as f:
                f.write(content)
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return len(entries)


def _check_entry(entry: object) -> tuple[str, bool, bytes]:
    if not (isinstance(entry, list) and len(entry) == 3):
        raise BundleError("malformed policy bundle: an entry is not [path, exec, content]")
    rel, executable, content = entry
    if not isinstance(rel, str) or not isinstance(content, bytes):
        raise BundleError("malformed policy bundle: an entry has the wrong types")
    parts = rel.split("/")
    if (
        not rel
        or rel.startswith("/")
        or "\0" in rel
        or any(p in ("", ".", "..") for p in parts)
        or any(len(p.encode()) > 255 for p in parts)
    ):
        raise BundleError(f"policy bundle: refused path {rel[:80]!r}")
    return rel, bool(executable), content
