"""Profiles and generations: the set of kegs a machine runs, switched atomically.

Layout of a profile (default ``/var/lib/undistro/profiles/default``, under
``--root`` when given)::

    current -> gen-7                  the one symlink that is ever switched
    gen-6/.generation.json            which kegs, when
    gen-7/bin/hello -> ../../../../../../../opt/undistro/store/<hash>-hello-2.12/bin/hello
    gen-7/lib -> ../../../../../../opt/undistro/store/<hash>-zlib-1.3/lib
    .lock                             flock: one writer at a time

A generation is built aside in a hidden directory, renamed to ``gen-N`` when
complete, and only then made current by renaming a fresh symlink over
``current``. ``rename(2)`` replaces the name atomically, so at every instant
``current`` names a complete generation: the old one or the new one.
Links are relative so that the same tree is valid under ``--root`` today
and in the image made from that root tomorrow.
"""

from __future__ import annotations

import builtins
import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from undistro.errors import GenerationError, KegError
from undistro.kegs._closure import Keg, closure, read_keg, rebase, store_kegs
from undistro.kegs._fs import fsync_dir
from undistro.kegs._store import store_lock

PROFILES = "/var/lib/undistro/profiles"
DEFAULT_PROFILE = f"{PROFILES}/default"
CURRENT = "current"
GEN_META = ".generation.json"
_BUILDING = ".building-"
_TRASH = ".trash-"
_LINK_TMP = ".current-"


@dataclass(frozen=True, slots=True)
class GenKeg:
    """One keg as a generation records it: by its final store path."""

    name: str
    version: str
    hash: str
    store_path: str

    @property
    def basename(self) -> str:
        return os.path.basename(self.store_path)

    @property
    def label(self) -> str:
        return f"{self.name}-{self.version}"


@dataclass(frozen=True, slots=True)
class Generation:
    number: int
    created: float
    kegs: tuple[GenKeg, ...]
    current: bool


@dataclass(frozen=True, slots=True)
class GenerationDiff:
    """Kegs matched by name: a name in both with another version or hash is
    *changed*; several versions of one name that do not pair up one to one
    show as removed and added."""

    added: tuple[GenKeg, ...]
    removed: tuple[GenKeg, ...]
    changed: tuple[tuple[GenKeg, GenKeg], ...]


class Profile:
    """A directory of generations with one ``current`` symlink.

    ``root`` is the ``--root`` the profile and the store live under; store
    paths handed in and out are paths on this disk, and generations record
    them as the system under ``root`` will see them.
    """

    def __init__(self, profile_dir: str, *, root: str | None = None) -> None:
        self.dir = os.path.abspath(profile_dir)
        self.root = os.path.abspath(root) if root and root != "/" else None

    # -- reading ------------------------------------------------------------

    def current_number(self) -> int | None:
        try:
            target = os.readlink(os.path.join(self.dir, CURRENT))
        except (FileNotFoundError, NotADirectoryError):
            return None
        number = _gen_number(target)
        if number is None:
            raise GenerationError(f"{self.dir}/{CURRENT}: points at {target!r}, not a generation")
        return number

    def current(self) -> list[str]:
        """Store paths (on this disk) of the current generation; [] if none."""
        number = self.current_number()
        if number is None:
            return []
        return [self._on_disk(k.store_path) for k in self._load(number).kegs]

    def numbers(self) -> list[int]:
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        return sorted(n for n in map(_gen_number, names) if n is not None)

    def get(self, number: int) -> Generation:
        if number not in self.numbers():
            raise GenerationError(f"no generation {number} in {self.dir}{self._have()}")
        return self._load(number)

    def list(self) -> list[Generation]:
        return [self._load(n) for n in self.numbers()]

    def holding(self, store_paths: Iterable[str]) -> int | None:
        """The newest generation of exactly these kegs (final store paths),
        if there is one: what ``build_and_switch`` would switch to."""
        want = sorted(set(store_paths))
        for number in reversed(self.numbers()):
            if sorted({k.store_path for k in self._load(number).kegs}) == want:
                return number
        return None

    def diff(self, a: int, b: int) -> GenerationDiff:
        return diff_kegs(self.get(a).kegs, self.get(b).kegs)

    # -- changing -----------------------------------------------------------

    def build_and_switch(self, store_paths: Sequence[str]) -> int:
        """Make a generation of exactly these kegs and switch to it.

        Everything is checked first — each keg readable, its runtime closure
        present, no two kegs providing the same file — so a missing path or
        a conflict changes nothing. Asking for the current set again is kept:
        the current number comes back and no generation is made. Asking for
        the set of an existing generation (after a rollback, the set the
        policy still names) switches to the newest such generation rather
        than making its twin.
        """
        kegs = _read_all(store_paths)
        recorded = tuple(
            GenKeg(k.name, k.version, k.hash, self._final(k.path))
            for k in sorted(kegs, key=lambda k: (k.name, k.version, k.hash))
        )
        # The stores' gc lock (shared) keeps a collector from removing a keg
        # between the closure check and the switch that makes it live.
        with contextlib.ExitStack() as held:
            for store, names in _by_store(kegs).items():
                held.enter_context(store_lock(store, exclusive=False))
                try:
                    closure(store, names, store_kegs(store))
                except KegError as exc:
                    raise GenerationError(f"cannot build a generation: {exc}") from None
            tree = plan_tree(kegs)
            os.makedirs(self.dir, exist_ok=True)
            with self._locked():
                self._clean_stale()
                cur = self.current_number()
                if cur is not None and self._load(cur).kegs == recorded:
                    return cur
                twin = next(
                    (n for n in reversed(self.numbers()) if self._load(n).kegs == recorded), None
                )
                if twin is not None:
                    self._point_current(twin)
                    return twin
                number = max(self.numbers(), default=0) + 1
                self._write_generation(number, recorded, tree)
                self._point_current(number)
        return number

    def switch(self, number: int) -> None:
        """Make generation ``number`` current (its kegs must still be present)."""
        with self._locked():
            self._check_present(number)
            self._point_current(number)

    def rollback(self) -> int:
        """Switch to the newest generation older than the current one."""
        with self._locked():
            cur = self.current_number()
            if cur is None:
                raise GenerationError(f"no current generation in {self.dir}")
            older = [n for n in self.numbers() if n < cur]
            if not older:
                raise GenerationError(f"no generation before {cur} to roll back to")
            self._check_present(older[-1])
            self._point_current(older[-1])
            return older[-1]

    def delete(self, numbers: Iterable[int]) -> builtins.list[int]:
        """Remove generations (never the current one); returns those removed."""
        removed = []
        with self._locked():
            cur = self.current_number()
            for n in sorted(set(numbers)):
                if n == cur:
                    raise GenerationError(f"generation {n} is current; it cannot be deleted")
                path = os.path.join(self.dir, f"gen-{n}")
                if not os.path.isdir(path):
                    continue
                trash = os.path.join(self.dir, f"{_TRASH}gen-{n}-{os.getpid()}")
                os.rename(path, trash)
                shutil.rmtree(trash)
                removed.append(n)
            fsync_dir(self.dir)
        return removed

    # -- internals ----------------------------------------------------------

    def _check_present(self, number: int) -> None:
        for k in self.get(number).kegs:
            if not os.path.isdir(self._on_disk(k.store_path)):
                raise GenerationError(f"generation {number}: {k.store_path} is gone")

    def _write_generation(self, number: int, kegs: tuple[GenKeg, ...], tree: Tree) -> None:
        final = os.path.join(os.path.realpath(self.dir), f"gen-{number}")
        tmp = os.path.join(self.dir, f"{_BUILDING}{number}-{os.getpid()}")
        os.mkdir(tmp)
        made_dirs = [tmp]
        up_to_keg: dict[str, str] = {}
        for rel, keg_dir in tree:
            path = os.path.join(tmp, rel)
            if keg_dir is None:
                os.mkdir(path)
                made_dirs.append(path)
                continue
            # gen-N/REL links to KEG/REL: climb REL's depth, then go to KEG
            if keg_dir not in up_to_keg:
                up_to_keg[keg_dir] = os.path.relpath(keg_dir, final)
            os.symlink("../" * rel.count("/") + f"{up_to_keg[keg_dir]}/{rel}", path)
        meta = {
            "number": number,
            "created": time.time(),
            "kegs": [
                {"name": k.name, "version": k.version, "hash": k.hash, "store_path": k.store_path}
                for k in kegs
            ],
        }
        with open(os.path.join(tmp, GEN_META), "x", encoding="utf-8") as f:
            json.dump(meta, f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        for d in made_dirs:
            fsync_dir(d)
        os.rename(tmp, final)
        fsync_dir(self.dir)

    def _point_current(self, number: int) -> None:
        tmp = os.path.join(self.dir, f"{_LINK_TMP}{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(f"gen-{number}", tmp)
        os.replace(tmp, os.path.join(self.dir, CURRENT))
        fsync_dir(self.dir)

    def _clean_stale(self) -> None:
        """Remove what a killed writer left (we hold the lock, so no writer
        is alive): half-built generations, half-deleted ones, link temps."""
        for name in os.listdir(self.dir):
            path = os.path.join(self.dir, name)
            if name.startswith((_BUILDING, _TRASH)):
                shutil.rmtree(path, ignore_errors=True)
            elif name.startswith(_LINK_TMP):
                os.unlink(path)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if not os.path.isdir(self.dir):
            raise GenerationError(f"no profile at {self.dir}")
        fd = os.open(os.path.join(self.dir, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load(self, number: int) -> Generation:
        path = os.path.join(self.dir, f"gen-{number}", GEN_META)
        try:
            with open(path, encoding="utf-8") as f:
                meta = json.load(f)
            kegs = tuple(
                GenKeg(k["name"], k["version"], k["hash"], k["store_path"]) for k in meta["kegs"]
            )
            created = float(meta["created"])
        except FileNotFoundError:
            raise GenerationError(f"no generation {number} in {self.dir}{self._have()}") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise GenerationError(f"{path}: unreadable generation record: {exc}") from None
        return Generation(number, created, kegs, number == self.current_number())

    def _have(self) -> str:
        numbers = self.numbers()
        if not numbers:
            return " (there are none)"
        return f" (have {', '.join(map(str, numbers))})"

    def _final(self, path: str) -> str:
        if self.root is None:
            return path
        rel = os.path.relpath(path, self.root)
        if rel.startswith(".."):
            raise GenerationError(f"{path}: not under the root {self.root}")
        return "/" + rel

    def _on_disk(self, store_path: str) -> str:
        return rebase(self.root, store_path)


# -- the symlink tree --------------------------------------------------------

Tree = list[tuple[str, str | None]]
"""(relative path, the keg directory whose same relative path it links to, or
None for a real directory), parents first."""


def plan_tree(kegs: Sequence[Keg]) -> Tree:
    """Merge the top-level directories of ``kegs`` into one tree, without I/O
    beyond reading directories.

    A directory only one keg provides becomes one symlink (few links, fast
    switches); a directory several provide is real and merged entry by
    entry; the same file from two kegs is an error naming both.
    """
    tops: dict[str, list[tuple[Keg, str]]] = {}
    for keg in kegs:
        for entry in sorted(os.scandir(os.path.realpath(keg.path)), key=lambda e: e.name):
            if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                tops.setdefault(entry.name, []).append((keg, entry.path))
    real = {keg: os.path.realpath(keg.path) for keg in kegs}
    tree: Tree = []
    for name in sorted(tops):
        _merge(name, tops[name], tree, real)
    return tree


def _merge(rel: str, providers: list[tuple[Keg, str]], tree: Tree, real: dict[Keg, str]) -> None:
    if len(providers) == 1:
        tree.append((rel, real[providers[0][0]]))
        return
    tree.append((rel, None))
    children: dict[str, list[tuple[Keg, str, bool]]] = {}
    for keg, path in providers:
        for entry in os.scandir(path):
            is_dir = entry.is_dir(follow_symlinks=False)
            children.setdefault(entry.name, []).append((keg, entry.path, is_dir))
    for name in sorted(children):
        got = children[name]
        child = f"{rel}/{name}"
        if len(got) > 1 and not all(is_dir for _, _, is_dir in got):
            a, b = got[0][0], got[1][0]
            raise GenerationError(f"{child}: provided by both {a.label} and {b.label}")
        _merge(child, [(keg, path) for keg, path, _ in got], tree, real)


def diff_kegs(old: Sequence[GenKeg], new: Sequence[GenKeg]) -> GenerationDiff:
    same = {k.store_path for k in old} & {k.store_path for k in new}
    old_rest = [k for k in old if k.store_path not in same]
    new_rest = [k for k in new if k.store_path not in same]
    changed = []
    for name in sorted({k.name for k in old_rest} & {k.name for k in new_rest}):
        was = [k for k in old_rest if k.name == name]
        now = [k for k in new_rest if k.name == name]
        if len(was) == len(now) == 1:
            changed.append((was[0], now[0]))
            old_rest.remove(was[0])
            new_rest.remove(now[0])
    return GenerationDiff(tuple(new_rest), tuple(old_rest), tuple(changed))


def _read_all(store_paths: Sequence[str]) -> list[Keg]:
    kegs: dict[str, Keg] = {}
    for path in store_paths:
        try:
            keg = read_keg(path)
        except KegError as exc:
            raise GenerationError(f"cannot build a generation: {exc}") from None
        kegs.setdefault(keg.path, keg)
    return list(kegs.values())


def _by_store(kegs: Sequence[Keg]) -> dict[str, list[str]]:
    stores: dict[str, list[str]] = {}
    for k in kegs:
        stores.setdefault(os.path.dirname(k.path), []).append(k.basename)
    return stores


def _gen_number(name: str) -> int | None:
    if name.startswith("gen-") and name[4:].isdigit() and not name[4:].startswith("0"):
        return int(name[4:])
    return None
