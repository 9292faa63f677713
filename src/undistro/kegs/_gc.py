"""Garbage collection: a store path lives while a kept generation or a gc
root reaches it.

The roots are the generations kept in every profile — the last K of each
and always the current one — and the gc roots (``_gcroots``: one per keg
``keg build`` made). Everything in their runtime closures (declared
``run_deps`` and store hashes found in the files) stays; every other keg in
the store goes. Generations that are not kept are deleted first, so no
generation is ever left pointing at a removed path.

Adding to the store and collecting it must not interleave (a keg installed
but not yet in a generation would look like garbage): both take
``<store>/.gc.lock`` (``store_lock``) — installs and generation builds
shared, the collector exclusive.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from undistro.errors import GenerationError, KegError
from undistro.kegs._closure import INSTALL_STAGING, closure, store_kegs
from undistro.kegs._fs import remove_tree
from undistro.kegs._gcroots import list_roots
from undistro.kegs._generations import Profile
from undistro.kegs._store import BUILD_STAGING, DEFAULT_STORE, STORE_TRASH, store_lock

_TRASH = STORE_TRASH


@dataclass(slots=True)
class GcReport:
    """What a collection removed (or, with ``dry_run``, would remove)."""

    generations: dict[str, list[int]] = field(default_factory=dict)
    """Profile directory → generation numbers deleted."""
    removed: list[str] = field(default_factory=list)
    """Store base names deleted."""
    kept: list[str] = field(default_factory=list)
    """Store base names still referenced."""
    rooted: list[str] = field(default_factory=list)
    """Store base names held by a gc root."""
    stale_roots: list[str] = field(default_factory=list)
    """GC roots whose keg is not in the store (kept: they hold nothing)."""
    freed_bytes: int = 0


def profiles_in(profiles_dir: str, *, root: str | None = None) -> list[Profile]:
    """Every profile under ``profiles_dir`` (one directory each)."""
    try:
        names = sorted(os.listdir(profiles_dir))
    except FileNotFoundError:
        return []
    return [
        Profile(os.path.join(profiles_dir, n), root=root)
        for n in names
        if not n.startswith(".") and os.path.isdir(os.path.join(profiles_dir, n))
    ]


def collect_garbage(
    store: str,
    profiles: Sequence[Profile],
    *,
    keep_last: int | None = None,
    dry_run: bool = False,
    gcroots: str | None = None,
    final_store: str = DEFAULT_STORE,
) -> GcReport:
    """Delete unkept generations, then every store path that neither a kept
    one nor a gc root in the directory ``gcroots`` reaches (the roots of
    kegs in ``final_store``, the store as the system sees it).

    ``keep_last=None`` keeps every generation; ``keep_last=K`` keeps the K
    newest of each profile plus its current one.
    """
    if keep_last is not None and keep_last < 0:
        raise GenerationError(f"--keep-last must be 0 or more, got {keep_last}")
    report = GcReport()
    if not os.path.isdir(store):
        return report
    with store_lock(store, exclusive=True):
        roots: set[str] = set()
        doomed: dict[Profile, list[int]] = {}
        for profile in profiles:
            numbers = profile.numbers()
            kept = set(numbers if keep_last is None else numbers[len(numbers) - keep_last :])
            current = profile.current_number()
            if current is not None:
                kept.add(current)
            for n in sorted(kept):
                roots.update(k.basename for k in profile.get(n).kegs)
            drop = [n for n in numbers if n not in kept]
            if drop:
                doomed[profile] = drop
                report.generations[profile.dir] = drop
        index = store_kegs(store)
        present = set(index.values())
        named = list_roots(gcroots, final_store) if gcroots else []
        report.rooted = [n for n in named if n in present]
        report.stale_roots = [n for n in named if n not in present]
        roots.update(report.rooted)
        try:
            live = closure(store, roots, index)
        except KegError as exc:
            raise GenerationError(f"gc refused, a kept generation is broken: {exc}") from None
        report.kept = sorted(live)
        report.removed = sorted(set(index.values()) - live)
        report.freed_bytes = sum(_size(os.path.join(store, n)) for n in report.removed)
        if dry_run:
            return report
        for profile, numbers in doomed.items():
            profile.delete(numbers)
        _clear_trash(store)
        for name in report.removed:
            trash = os.path.join(store, f"{_TRASH}{name}")
            os.rename(os.path.join(store, name), trash)
            remove_tree(trash)
    return report


def _clear_trash(store: str) -> None:
    """Finish what killed collectors, builders and installers left:
    renamed-away paths and staging directories (we hold the lock
    exclusively: none of them is alive)."""
    for name in os.listdir(store):
        if name.startswith((_TRASH, INSTALL_STAGING, BUILD_STAGING)):
            remove_tree(os.path.join(store, name))


def _size(path: str) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total
