"""Turn inotify notifications into "check these resources" for the engine.

A resource declares :class:`~undistro.resources.Watch` items: ``path`` (one
managed path) or ``tree`` (a directory whose entries matter). Files are
watched through their **parent directory**: editors and atomic writers
replace the inode, and a watch on the file itself would go silent after the
first rename. One kernel watch per directory serves every resource under it;
``(directory, entry name)`` maps to the keys (resource ids) it concerns.

Bursts are coalesced without timers: :meth:`PathWatcher.read` drains every
event queued in the kernel and returns each concerned key once. While the
agent checks those, new events queue up; the next read takes them all at
once. So a writer hammering a file causes a handful of checks, not one per
write, and a single edit is checked within a millisecond.

Nothing is missed silently. A directory that does not exist yet is watched
through its nearest existing ancestor (its creation is an event); a lost
watch (the directory was removed or moved), a watch the kernel refuses
(``max_user_watches``, permissions) and a queue overflow all end up in
:attr:`Batch.rescan` or :attr:`Batch.overflow`, which the agent answers with a
full check of what they cover and a journal entry.

Two kinds of events concern nobody, and dropping them is what keeps a burst
from feeding itself:

* **The agent's own repairs.** A repaired file is written to a temp name
  beside it (``.NAME.…undistro-tmp``) and renamed over ``NAME``: the kernel
  reports ``moved_from`` of the temp name and ``moved_to`` of ``NAME`` with
  the same cookie. Exactly that ``moved_to`` is dropped; any other event on
  ``NAME`` (a write, someone else's rename, a chmod) still counts, so a real
  change landing right after a repair is never hidden, and there is no time
  window to tune.
* **Editors' and ``sed -i``'s scratch files** in inputs declared with
  ``scratch=False`` (the policy directory): ``.#x``, ``x~``, ``.x.swp``,
  ``sedAB12cd``, vim's ``4913``, any dotfile. Only the rename onto the real
  name is the edit.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from undistro.events import _binding as b
from undistro.resources import Watch

ENTRY_MASK = (
    b.IN_MODIFY
    | b.IN_ATTRIB
    | b.IN_CLOSE_WRITE
    | b.IN_CREATE
    | b.IN_DELETE
    | b.IN_MOVED_FROM
    | b.IN_MOVED_TO
)
"""Everything that can change an entry: content, metadata, appearance, removal."""

SETTLED_MASK = b.IN_CLOSE_WRITE | b.IN_DELETE | b.IN_MOVED_FROM | b.IN_MOVED_TO
"""Changes of finished files only, for inputs read whole (the policy's TOML):
reacting to ``create``/``modify`` would read a half-written file."""

_SELF_MASK = b.IN_DELETE_SELF | b.IN_MOVE_SELF | b.IN_ONLYDIR | b.IN_EXCL_UNLINK
_STRUCTURE = b.IN_CREATE | b.IN_DELETE | b.IN_MOVED_FROM | b.IN_MOVED_TO
_LOST = b.IN_IGNORED | b.IN_DELETE_SELF | b.IN_MOVE_SELF | b.IN_UNMOUNT
_OWN_TEMP = "undistro-tmp"
_SCRATCH = re.compile(r"^(\..*|.*~|.*\.sw[a-p]x?|sed[A-Za-z0-9]{6}|4913|#.*#)$")
_MAX_OWN = 4096  # pending renames remembered between two reads (bounded)
_SYNC_ROUNDS = 8  # each round goes deeper; what is left waits for the next sync


def is_scratch(name: str) -> bool:
    """An editor's or ``sed -i``'s temp file, a backup, or a dotfile."""
    return _SCRATCH.match(name) is not None


def is_own_temp(temp: str, final: str) -> bool:
    """``temp`` is the name undistro writes ``final``'s new content under."""
    from undistro._rootfs import is_temp_of

    return is_temp_of(temp, final)


@dataclass(frozen=True, slots=True)
class _Interest:
    """``key`` cares about ``name`` in a directory (``None``: any entry)."""

    key: str
    name: str | None
    mask: int
    scratch: bool = True


@dataclass(slots=True)
class Batch:
    """What one drain of the queue means for the consumer.

    ``changed`` maps each concerned key to the first event seen for it (the
    cause the journal records); ``rescan`` maps keys whose watch was lost or
    refused to the reason; ``overflow`` means the kernel dropped events, so
    everything must be checked.
    """

    changed: dict[str, str] = field(default_factory=dict)
    rescan: dict[str, str] = field(default_factory=dict)
    overflow: bool = False
    events: int = 0

    def __bool__(self) -> bool:
        return bool(self.changed or self.rescan or self.overflow)


class PathWatcher:
    """Kernel watches for a set of keyed :class:`Watch` declarations.

    Call :meth:`declare` / :meth:`forget` as the policy changes, then :meth:`sync`
    to place the kernel watches; wait on :meth:`fileno`, and :meth:`read` when
    it is readable. Not thread-safe: one event loop owns it.
    """

    def __init__(self) -> None:
        self._ino = b.Inotify()
        self._decl: dict[str, list[tuple[str, str | None, int, bool]]] = {}
        # directory -> interests in it, as declared (the directory may not exist)
        self._wanted: dict[str, list[_Interest]] = {}
        # directory actually watched -> its wd, and the reverse
        self._wd_of: dict[str, int] = {}
        self._dir_of: dict[int, str] = {}
        # watched directory -> interests served there (own, or proxies for
        # missing descendants: the child on the way is the entry name)
        self._served: dict[str, list[_Interest]] = {}
        self._dirty = True
        self.failed: dict[str, str] = {}
        self.placed: dict[str, str] = {}
        # cookie -> (wd, temp name) of a rename away from one of our temp names
        self._own_moves: dict[int, tuple[int, str]] = {}
        self._counts = {
            "events": 0,
            "batches": 0,
            "overflows": 0,
            "lost_watches": 0,
            "own_writes": 0,
            "scratch_events": 0,
        }

    # -- declarations ---------------------------------------------------------

    def declare(
        self, key: str, watches: Iterable[Watch], *, mask: int = ENTRY_MASK, scratch: bool = True
    ) -> None:
        """Declare (replacing any previous declaration) what ``key`` watches.

        ``scratch=False``: entries named like editors' temp files (see
        :func:`is_scratch`) do not concern ``key``. Kinds other than
        ``path`` and ``tree`` belong to other event sources and are ignored
        here.
        """
        decl: list[tuple[str, str | None, int, bool]] = []
        for watch in watches:
            target = os.path.normpath(watch.target)
            if watch.kind == "path":
                parent, name = os.path.split(target)
                decl.append((parent or "/", name or None, mask, scratch))
            elif watch.kind == "tree":
                decl.append((target, None, mask, scratch))
        if self._decl.get(key) != decl:
            self.forget(key)
            self._decl[key] = decl
            for directory, entry, m, s in decl:
                self._wanted.setdefault(directory, []).append(_Interest(key, entry, m, s))
            self._dirty = True

    def forget(self, key: str) -> None:
        """Forget ``key``; its kernel watches go at the next :meth:`sync`."""
        for directory, *_ in self._decl.pop(key, ()):
            kept = [i for i in self._wanted.get(directory, ()) if i.key != key]
            if kept:
                self._wanted[directory] = kept
            else:
                self._wanted.pop(directory, None)
            self._dirty = True
        self.failed.pop(key, None)

    def keys(self) -> set[str]:
        return set(self._decl)

    # -- kernel watches -------------------------------------------------------

    def sync(self) -> dict[str, str]:
        """Place and remove kernel watches to match the declarations.

        Returns the keys whose watch could not be placed, with the reason
        (they must be checked by other means, and the agent journals it).
        ``placed`` then holds the keys served by a directory watched anew:
        whatever changed there before the watch existed was not seen, so
        they are to be checked once more (watch first, then check).

        A missing directory created between our look and the ancestor's
        watch would never be reported; so once the watches are in place,
        each missing child is looked at again, and if it appeared the
        watches are placed again, deeper (a few rounds at most).
        """
        self.placed = {}
        failures: dict[str, str] = {}
        for _ in range(_SYNC_ROUNDS):
            if not self._dirty:
                break
            self._dirty = False
            failures = self._sync_once()
        return failures

    def _sync_once(self) -> dict[str, str]:
        served: dict[str, list[_Interest]] = {}
        proxies: set[str] = set()
        exists: dict[str, bool] = {}
        for directory, interests in self._wanted.items():
            where, child = _nearest_existing(directory, exists)
            if child is None:
                served.setdefault(where, []).extend(interests)
            else:
                # Watch the ancestor for the missing child's arrival.
                proxies.add(os.path.join(where, child))
                served.setdefault(where, []).extend(
                    _Interest(i.key, child, _STRUCTURE | b.IN_ATTRIB, i.scratch) for i in interests
                )
        failures: dict[str, str] = {}
        for directory in [d for d in self._wd_of if d not in served]:
            self._unwatch(directory)
        for directory, interests in served.items():
            mask = _SELF_MASK
            for interest in interests:
                mask |= interest.mask
            try:
                wd = self._ino.add_watch(directory, mask)
            except OSError as exc:
                reason = f"cannot watch {directory}: {exc.strerror}"
                for interest in interests:
                    failures[interest.key] = reason
                if exc.errno == errno.ENOENT:
                    self._dirty = True  # vanished since we looked: place it higher next time
                self._unwatch(directory)
                continue
            if directory not in self._wd_of:
                for interest in interests:
                    self.placed.setdefault(interest.key, f"watch placed on {directory}")
            old = self._dir_of.get(wd)
            if old is not None and old != directory:
                # The same inode under another name (moved there): the old
                # path is no longer what this watch sees.
                self._wd_of.pop(old, None)
            self._wd_of[directory] = wd
            self._dir_of[wd] = directory
        self._served = served
        self.failed = failures
        if any(os.path.isdir(p) for p in proxies):
            self._dirty = True  # it appeared before our watch could see it
        return failures

    def _unwatch(self, directory: str) -> None:
        wd = self._wd_of.pop(directory, None)
        if wd is not None:
            self._dir_of.pop(wd, None)
            self._ino.rm_watch(wd)

    # -- events ---------------------------------------------------------------

    def fileno(self) -> int:
        return self._ino.fileno()

    def read(self) -> Batch:
        """Drain the kernel queue; map events to keys, each key once."""
        batch = Batch()
        raw = self._ino.read()
        batch.events = len(raw)
        for event in raw:
            if event.mask & b.IN_Q_OVERFLOW:
                batch.overflow = True
                self._own_moves.clear()  # a pair may have been cut: count both halves
                continue
            directory = self._dir_of.get(event.wd)
            if directory is None:
                continue  # a watch we already dropped
            if event.mask & _LOST:
                self._lose(directory, event.wd, event.mask, batch)
                continue
            if self._own_rename(event):
                continue  # our repair landing: the check that wrote it knows
            scratch = is_scratch(event.name) if event.name else False
            if scratch:
                self._counts["scratch_events"] += 1
            path = os.path.join(directory, event.name) if event.name else directory
            for interest in self._served.get(directory, ()):
                if scratch and not interest.scratch:
                    continue
                if event.mask & interest.mask and interest.name in (None, event.name):
                    batch.changed.setdefault(interest.key, f"{b.describe(event.mask)} {path}")
            if event.mask & b.IN_ISDIR and event.mask & _STRUCTURE:
                # A directory appeared or vanished: a watch may now be placed
                # deeper, or have lost its directory.
                self._dirty = True
        self._counts["events"] += batch.events
        if batch:
            self._counts["batches"] += 1
        if batch.overflow:
            self._counts["overflows"] += 1
            self._dirty = True
        return batch

    def _own_rename(self, event: b.RawEvent) -> bool:
        """Whether ``event`` is the ``moved_to`` half of our own repair's
        rename (the ``moved_from`` half, of our temp name, is remembered)."""
        if event.mask & b.IN_MOVED_FROM and _OWN_TEMP in event.name and event.cookie:
            if len(self._own_moves) >= _MAX_OWN:
                self._own_moves.clear()  # only ever costs a paired check
            self._own_moves[event.cookie] = (event.wd, event.name)
            return False
        if event.mask & b.IN_MOVED_TO and event.cookie:
            source = self._own_moves.pop(event.cookie, None)
            if source is not None and source[0] == event.wd and is_own_temp(source[1], event.name):
                self._counts["own_writes"] += 1
                return True
        return False

    def _lose(self, directory: str, wd: int, mask: int, batch: Batch) -> None:
        """The directory behind ``wd`` is gone or moved: whoever relied on the
        watch must be checked, and the watch placed again."""
        self._counts["lost_watches"] += 1
        self._wd_of.pop(directory, None)
        self._dir_of.pop(wd, None)
        if not mask & b.IN_IGNORED:
            self._ino.rm_watch(wd)  # a moved directory keeps its wd; we do not want it
        reason = f"{b.describe(mask & ~b.IN_ISDIR)} {directory}"
        for interest in self._served.get(directory, ()):
            batch.rescan.setdefault(interest.key, reason)
        self._dirty = True

    # -- inspection -----------------------------------------------------------

    def stats(self) -> dict[str, int]:
        """A cheap snapshot for ``undistro status``."""
        return {
            **self._counts,
            "watched_dirs": len(self._wd_of),
            "keys": len(self._decl),
            "unwatched_keys": len(self.failed),
        }

    def close(self) -> None:
        self._ino.close()


def _nearest_existing(directory: str, cache: dict[str, bool]) -> tuple[str, str | None]:
    """``(directory, None)`` if it is a directory, else its nearest existing
    ancestor and the name of the missing child on the way down."""
    child: str | None = None
    current = directory
    while True:
        ok = cache.get(current)
        if ok is None:
            ok = cache[current] = os.path.isdir(current)
        if ok or current == "/":
            return current, child
        current, child = os.path.split(current)
