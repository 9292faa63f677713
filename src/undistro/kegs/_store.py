"""The store: ``<store>/<hash>-<name>-<version>``, read-only once written.

The hash covers every input of a build (the recipe slice for that version,
the source hashes, the chosen variants, the platform and the hashes of the
dependencies), so two versions, or one version with two variant sets, get
two paths and live side by side, and the same inputs always name the same
path. A keg is always built for its final absolute path; under ``--root`` it
is stored at ``ROOT/<store path>`` (see :meth:`Store.physical`).

Each keg carries ``.keg.json`` (name, version, hash, recipe hash, variants,
platform, run dependencies and the store paths its files refer to); the
generations code reads it and nothing else.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import re
import stat
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from undistro.errors import KegError

DEFAULT_STORE = "/opt/undistro/store"
META_NAME = ".keg.json"
GC_LOCK = ".gc.lock"
BUILD_STAGING = ".staging-"
"""Prefix of a build's staging directory in the store (hidden: never a keg)."""
STORE_TRASH = ".gc-"
"""Prefix of a store entry renamed away to be removed (gc clears leftovers)."""
HASH_LEN = 32
# Part of every hash: bump it when the builder changes what it produces.
BUILDER_EPOCH = 1
_ENTRY_RE = re.compile(r"^([a-z2-7]{32})-(.+)$")


def keg_hash(inputs: Mapping[str, Any]) -> str:
    """32 base32 characters (160 bits) of the SHA-256 of the canonical JSON
    of ``inputs``: short enough for paths, ample against collisions, and
    made only of characters that never occur by chance next to each other
    in binaries — so scanning files for it finds real references."""
    blob = json.dumps(
        {"epoch": BUILDER_EPOCH, **inputs}, sort_keys=True, separators=(",", ":")
    ).encode()
    digest = hashlib.sha256(blob).digest()[:20]
    return base64.b32encode(digest).decode().lower()


@dataclass(frozen=True, slots=True)
class KegMeta:
    """The contents of ``<keg>/.keg.json``."""

    name: str
    version: str
    hash: str
    recipe_hash: str
    variants: Mapping[str, bool | str]
    platform: Mapping[str, str]
    run_deps: tuple[str, ...]  # store paths of the declared run dependencies
    references: tuple[str, ...] = ()  # store paths found by scanning the files
    sources: tuple[str, ...] = ()  # SHA-256 of each source archive
    build_deps: tuple[str, ...] = field(default=())

    def to_json(self) -> str:
        data = asdict(self)
        for key in ("run_deps", "references", "sources", "build_deps"):
            data[key] = list(data[key])
        return json.dumps(data, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> KegMeta:
        data = json.loads(text)
        for key in ("run_deps", "references", "sources", "build_deps"):
            data[key] = tuple(data.get(key, ()))
        return cls(**data)


class Store:
    """A store directory, seen from a root (``/`` or ``--root``)."""

    def __init__(self, directory: str = DEFAULT_STORE, root: str = "/") -> None:
        if not directory.startswith("/") or os.path.normpath(directory) != directory:
            raise KegError(f"store directory must be a normalised absolute path: {directory!r}")
        if not re.match(r"^[A-Za-z0-9/._+-]+$", directory):
            raise KegError(f"store directory must not need shell quoting: {directory!r}")
        self.directory = directory
        self.root = os.path.abspath(root)

    def path_for(self, hash_: str, name: str, version: str) -> str:
        """The final absolute path of a keg (what the build's prefix is)."""
        return f"{self.directory}/{hash_}-{name}-{version}"

    def physical(self, path: str) -> str:
        """Where ``path`` (a final store path) is on this machine's disk."""
        if self.root == "/":
            return path
        return os.path.join(self.root, path.lstrip("/"))

    def exists(self, path: str) -> bool:
        return os.path.isfile(os.path.join(self.physical(path), META_NAME))

    def meta(self, path: str) -> KegMeta:
        try:
            with open(os.path.join(self.physical(path), META_NAME), encoding="utf-8") as f:
                return KegMeta.from_json(f.read())
        except (OSError, ValueError, TypeError) as exc:
            raise KegError(f"{path}: not a keg ({META_NAME} unreadable: {exc})") from None

    def entries(self) -> list[str]:
        """Final paths of the finished kegs (entries with their metadata);
        staging and half-written directories start with a dot and are skipped."""
        try:
            names = sorted(os.listdir(self.physical(self.directory)))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            if _ENTRY_RE.match(name):
                path = f"{self.directory}/{name}"
                if self.exists(path):
                    out.append(path)
        return out

    def by_hash(self) -> dict[str, str]:
        return {os.path.basename(p)[:HASH_LEN]: p for p in self.entries()}


@contextlib.contextmanager
def store_lock(directory: str, *, exclusive: bool) -> Iterator[None]:
    """Hold ``<store>/.gc.lock`` (``directory`` is the store on this disk):
    shared while adding kegs, exclusive while collecting garbage — so a keg
    just built, or a dependency a build links against, is never collected
    under its feet. The generations side takes the same lock on the same file."""
    os.makedirs(directory, exist_ok=True)
    fd = os.open(os.path.join(directory, GC_LOCK), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)


def make_read_only(directory: str) -> None:
    """Drop every write bit below ``directory`` (the store is immutable; gc
    and tests restore ``u+w`` on a directory before removing it)."""
    for dirpath, dirnames, filenames in os.walk(directory, topdown=False):
        for name in filenames:
            _chmod_no_write(os.path.join(dirpath, name))
        for name in dirnames:
            _chmod_no_write(os.path.join(dirpath, name))
    _chmod_no_write(directory)


def make_writable(directory: str) -> None:
    """Undo :func:`make_read_only` (before removing a keg)."""
    os.chmod(directory, os.stat(directory).st_mode | stat.S_IWUSR)
    for dirpath, dirnames, filenames in os.walk(directory):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, os.lstat(path).st_mode | stat.S_IWUSR)


def _chmod_no_write(path: str) -> None:
    st = os.lstat(path)
    if not stat.S_ISLNK(st.st_mode):
        os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o222)
