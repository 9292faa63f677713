"""GC roots: kegs kept in the store although no generation holds them.

``undistro keg build`` (and ``keg install``) leave one root per keg asked
for, as ``nix-build`` leaves its ``result`` link: a symlink
``/var/lib/undistro/gcroots/<hash>-<name>-<version>`` to the keg's final
store path. ``undistro gc`` keeps every rooted keg and its runtime closure;
``undistro keg unroot`` drops a root, after which gc may collect the keg.

The link's *name* is the root (a base name is unique in a store); its target
is for people (``ls -l``) and is the final path, so it is right in an image
made from a ``--root`` too. Roots are added while the builder holds the
store's gc lock (shared) and read by gc under it exclusively: a keg is never
collected between its build and its root.
"""

from __future__ import annotations

import os
import re

from undistro.errors import KegError
from undistro.kegs._fs import fsync_dir

GCROOTS = "/var/lib/undistro/gcroots"
_BASENAME = re.compile(r"^[a-z2-7]{32}-[^/\0]+-[^-/\0]+$")


def add_root(roots_dir: str, store_path: str) -> str:
    """Root the keg at ``store_path`` (its final path); returns the link on
    this disk. Adding a root twice keeps one."""
    base = os.path.basename(store_path)
    if not _BASENAME.match(base):
        raise KegError(f"{store_path}: not a store path")
    os.makedirs(roots_dir, exist_ok=True)
    link = os.path.join(roots_dir, base)
    tmp = os.path.join(roots_dir, f".{base}.tmp-{os.getpid()}")
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(store_path, tmp)
    os.replace(tmp, link)
    fsync_dir(roots_dir)
    return link


def list_roots(roots_dir: str, store_dir: str | None = None) -> list[str]:
    """The base names rooted, sorted; with ``store_dir`` (a final store
    directory) only the roots of kegs in that store — one roots directory
    serves every store of a root (``keg build --store``)."""
    try:
        names = os.listdir(roots_dir)
    except FileNotFoundError:
        return []
    out = []
    for name in sorted(names):
        if not _BASENAME.match(name):
            continue
        if store_dir is not None:
            try:
                target = os.readlink(os.path.join(roots_dir, name))
            except OSError:
                continue
            if os.path.dirname(os.path.normpath(target)) != store_dir:
                continue
        out.append(name)
    return out


def match_roots(roots_dir: str, ref: str) -> list[str]:
    """The roots ``ref`` names: a store path or base name, a store hash,
    ``name-version`` or ``name``."""
    ref = os.path.basename(os.path.normpath(ref)) if "/" in ref else ref
    out = []
    for base in list_roots(roots_dir):
        hash_, rest = base.split("-", 1)
        name = rest.rsplit("-", 1)[0]
        if ref in (base, hash_, rest, name):
            out.append(base)
    return out


def drop_root(roots_dir: str, base: str) -> None:
    os.unlink(os.path.join(roots_dir, base))
    fsync_dir(roots_dir)
