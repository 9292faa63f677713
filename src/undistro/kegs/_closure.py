"""What a keg is on disk, and which other kegs it needs at run time.

A keg is a directory ``<store>/<hash>-<name>-<version>`` holding a
``.keg.json``. Its runtime closure is itself plus every keg it refers to,
transitively: the ``run_deps`` its recipe declared, and every store hash
found in its files (a binary that embeds ``/opt/undistro/store/<hash>-zlib-…``
needs that zlib whether the recipe said so or not — the Nix argument).
The builder records what it found in ``references``; store paths are
read-only, so that record stays true and is used as is. Only a keg without
it (made by hand, or by an older builder) is scanned here.

Store paths are recorded as *final* paths (``/opt/undistro/store/…``) even
when the store lives under ``--root``; they are matched here by their base
name, which is unique in a store, so the same code serves a live system and
a prepared image.
"""

from __future__ import annotations

import functools
import json
import mmap
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from undistro.errors import KegError
from undistro.kegs._store import DEFAULT_STORE, META_NAME

INSTALL_STAGING = ".install-"
"""Prefix of the store's staging directories (hidden, so never a keg)."""

_BASENAME = re.compile(r"^([0-9a-z]{32})-([^/\0]+)$")


@functools.cache
def _reference(store: str) -> re.Pattern[bytes]:
    # References are absolute store paths, so a hash follows a '/' and
    # precedes a '-'; anchoring on both keeps random 32-letter runs in
    # binaries out. The store's own prefix, when present, marks a reference
    # that must resolve in that store.
    return re.compile(rb"(" + re.escape(store.encode()) + rb")?/([0-9a-z]{32})-")


@dataclass(frozen=True, slots=True)
class Keg:
    """The parts of ``.keg.json`` that generations, gc and artifacts use."""

    path: str
    """Where the keg is on this disk (under ``--root`` when given)."""
    name: str
    version: str
    hash: str
    recipe_hash: str
    run_deps: tuple[str, ...] = ()
    references: tuple[str, ...] | None = None
    """What the builder found scanning the files; ``None`` if it did not say."""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def basename(self) -> str:
        return f"{self.hash}-{self.name}-{self.version}"

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


def store_of(root: str | None, store: str | None = None) -> str:
    """The store directory on this disk: ``store`` or the default, under ``root``."""
    base = store or DEFAULT_STORE
    return rebase(root, base)


def rebase(root: str | None, path: str) -> str:
    """``path`` (absolute, as the running system sees it) under ``root``."""
    if not root or root == "/":
        return path
    return os.path.join(root, path.lstrip("/"))


def is_keg_basename(name: str) -> bool:
    return _BASENAME.match(name) is not None


def read_keg(path: str) -> Keg:
    """Read and check a keg's ``.keg.json``; a wrong one is a one-line error.

    The directory name must be ``<hash>-<name>-<version>`` of the metadata
    inside, so a copied or renamed keg cannot pass for another.
    """
    path = os.path.abspath(path)
    meta_path = os.path.join(path, META_NAME)
    try:
        with open(meta_path, "rb") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise KegError(f"{path}: not a keg (no {META_NAME})") from None
    except (OSError, ValueError) as exc:
        raise KegError(f"{meta_path}: unreadable: {exc}") from None
    if not isinstance(meta, dict):
        raise KegError(f"{meta_path}: expected a JSON object")
    for key in ("name", "version", "hash"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise KegError(f"{meta_path}: '{key}' must be a non-empty string")
    for key in ("run_deps", "references"):
        deps = meta.get(key, [])
        if not isinstance(deps, list) or not all(isinstance(d, str) for d in deps):
            raise KegError(f"{meta_path}: '{key}' must be a list of store paths")
    keg = Keg(
        path=path,
        name=meta["name"],
        version=meta["version"],
        hash=meta["hash"],
        recipe_hash=str(meta.get("recipe_hash", "")),
        run_deps=_basenames(meta.get("run_deps", [])),
        references=_basenames(meta["references"]) if "references" in meta else None,
        meta=meta,
    )
    if not re.fullmatch(r"[0-9a-z]{32}", keg.hash):
        raise KegError(f"{meta_path}: 'hash' must be 32 lowercase letters or digits")
    if os.path.basename(path) != keg.basename:
        raise KegError(f"{path}: directory name does not match {META_NAME} ({keg.basename})")
    return keg


def _basenames(paths: list[str]) -> tuple[str, ...]:
    return tuple(os.path.basename(p.rstrip("/")) for p in paths)


def store_kegs(store: str) -> dict[str, str]:
    """Every keg directory in ``store``: hash → base name. Hidden entries
    (builds and installs in progress, gc trash) are not kegs yet."""
    found: dict[str, str] = {}
    try:
        entries = list(os.scandir(store))
    except FileNotFoundError:
        return found
    for entry in entries:
        m = _BASENAME.match(entry.name)
        if m and entry.is_dir(follow_symlinks=False):
            found[m.group(1)] = entry.name
    return found


def scan_references(
    path: str, known: Iterable[str], store: str = DEFAULT_STORE
) -> tuple[set[str], set[str]]:
    """Store references in the files under ``path`` (symlink targets too):
    the keg's runtime references, Nix-style. A reference the build kept (an
    rpath, a shebang, a path in a config) is a dependency at run time
    whatever the recipe declared.

    Returns the hashes from ``known`` that appear, and the hashes that
    appear as full ``store`` paths but are *not* known: those are
    references to kegs missing from this store.
    """
    wanted = set(known)
    pattern = _reference(store)
    found: set[str] = set()
    prefixed: set[str] = set()
    for file_path, is_link in _walk_files(path):
        if is_link:
            _collect(pattern, os.fsencode(os.readlink(file_path)), found, prefixed)
            continue
        st = os.lstat(file_path)
        if not stat.S_ISREG(st.st_mode) or st.st_size == 0:
            continue  # a fifo would block; mmap refuses empty files
        with open(file_path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            _collect(pattern, m, found, prefixed)
    return found & wanted, prefixed - wanted


def _collect(
    pattern: re.Pattern[bytes], data: bytes | mmap.mmap, found: set[str], prefixed: set[str]
) -> None:
    for m in pattern.finditer(data):
        h = m.group(2).decode()
        found.add(h)
        if m.group(1):
            prefixed.add(h)


def references(store: str, basename: str, index: dict[str, str] | None = None) -> set[str]:
    """Base names of the kegs that ``basename`` refers to directly (not
    itself); a reference to a keg missing from ``store`` is an error."""
    index = store_kegs(store) if index is None else index
    keg = read_keg(os.path.join(store, basename))
    if keg.references is not None:
        refs = set(keg.references)
    else:
        hashes, missing = scan_references(keg.path, index)
        if missing:
            ref = f"{DEFAULT_STORE}/{sorted(missing)[0]}-…"
            raise KegError(f"{basename} needs {ref}, which is not in the store")
        refs = {index[h] for h in hashes}
    refs.update(keg.run_deps)
    refs.discard(basename)
    return refs


def closure(store: str, basenames: Iterable[str], index: dict[str, str] | None = None) -> set[str]:
    """The runtime closure of ``basenames``: themselves and all they refer to.

    A reference to a keg that is not in the store is an error: a closure
    with a hole is exactly what must never be switched to or shipped.
    """
    index = store_kegs(store) if index is None else index
    present = set(index.values())
    seen: set[str] = set()
    todo = list(basenames)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        if name not in present:
            raise KegError(f"{os.path.join(store, name)}: not in the store")
        seen.add(name)
        refs = references(store, name, index)
        missing = sorted(refs - present)
        if missing:
            raise KegError(f"{name} needs {missing[0]}, which is not in the store")
        todo.extend(refs - seen)
    return seen


def _walk_files(path: str) -> Iterator[tuple[str, bool]]:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames:
            full = os.path.join(dirpath, name)
            yield full, os.path.islink(full)
        for name in dirnames:
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                yield full, True
