"""Checks across resources, made once the whole policy is parsed.

A problem that only shows when the engine reaches a resource is found after
other resources were already changed: the policy is then half applied. So
everything that can be known from the policy alone is checked here, before
anything runs:

- a managed path longer than the kernel takes: a component over NAME_MAX
  (255 bytes; a file's or symlink's own name over 255 - ``TEMP_RESERVE``,
  since it is written through a temp name beside it), or the path, rebased
  under ``--root``, over PATH_MAX (4096 bytes with its NUL);
- one path managed by two resources;
- a path inside another that is not a directory (``/etc/motd`` and
  ``/etc/motd/x``: a file cannot be a parent; nor can a symlink, whose
  target would receive the child);
- a path that a resource writes as a file of its own (what it watches but
  does not manage: the account files of ``[[user]]`` and ``[[group]]``, a
  keg profile's ``current``) managed by another resource, or holding one
  (``directory:/etc/passwd`` beside a ``[[user]]``).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Mapping

from undistro.resources import Resource

NAME_MAX = 255
PATH_MAX = 4096
# Bytes kept free in a name for the temp file that replaces it: none, since
# _rootfs.temp_name cuts its stem so that every temp name fits NAME_MAX.
TEMP_RESERVE = 0

_SURELY_SHORT = (NAME_MAX - TEMP_RESERVE) // 4
_OWN_PATH_TYPES = frozenset({"file", "directory", "symlink"})

# Types whose managed path is a directory (a user's managed home is one).
_DIRECTORY_TYPES = frozenset({"directory", "user"})
# Types that replace their path through a temp name in the same directory.
_ATOMIC_TYPES = frozenset({"file", "symlink"})


def check_paths(
    resources: Mapping[str, Resource], origin: Mapping[str, str], root: str, errors: list[str]
) -> dict[str, str]:
    """Every managed path and the resource managing it (path -> id); each
    problem found is appended to ``errors`` as one line."""
    managed: dict[str, str] = {}
    written: dict[str, str] = {}  # files resources write without owning them
    prefix = len(os.fsencode(root.rstrip("/")))

    def say(rid: str, problem: str) -> None:
        errors.append(f"{origin[rid]}: {rid}: {problem}")

    for rid, res in resources.items():
        own = res.managed_paths()
        for path in own:
            problem = _length_problem(path, prefix, res.type_name in _ATOMIC_TYPES)
            if problem:
                field = res.name_key if path == res.name else "path"
                say(rid, f"field '{field}': {problem}")
                continue
            other = managed.get(path)
            if other is not None:
                say(rid, f"path {path} is also managed by {other} ({origin[other]})")
                continue
            managed[path] = rid
        if res.type_name in _OWN_PATH_TYPES:
            continue  # what they watch is what they manage (10,000 of them: 30 ms)
        home = res.values.get("home") if res.type_name == "user" else None
        for watch in res.watches():
            # A user's home may be a [[directory]] of its own: the user then
            # leaves it to that resource (it only watches it).
            if watch.kind == "path" and watch.target not in own and watch.target != home:
                written.setdefault(watch.target, rid)

    for path, writer in written.items():
        owner = managed.get(path)
        if owner is not None:
            say(owner, f"path {path} is also written by {writer}, which edits that file itself")

    # A parent that is not a directory. Paths under P sort right after
    # "P/", so each non-directory needs one bisect, not a walk of every
    # path's ancestors.
    everything = sorted({*managed, *written})
    leaves = [
        (path, rid, resources[rid].type_name)
        for path, rid in managed.items()
        if resources[rid].type_name not in _DIRECTORY_TYPES
    ]
    leaves += [(path, rid, "file") for path, rid in written.items() if path not in managed]
    for path, rid, kind in leaves:
        inside = path + "/"
        i = bisect.bisect_left(everything, inside)
        if i < len(everything) and everything[i].startswith(inside):
            child = everything[i]
            holder = managed.get(child) or written[child]
            how = "manages" if path in managed else "writes"
            say(
                holder,
                f"path {child} is inside {path}, which {rid} {how} as a {kind}:"
                f" only a directory can hold other paths",
            )
    return managed


def _length_problem(path: str, prefix: int, atomic: bool) -> str | None:
    if len(path) <= _SURELY_SHORT and prefix < PATH_MAX - 4 * _SURELY_SHORT:
        return None  # the common case, without encoding (a character is <= 4 bytes)
    raw = os.fsencode(path)
    if prefix + len(raw) >= PATH_MAX:
        under = " under the root" if prefix else ""
        return f"path is {prefix + len(raw)} bytes long{under}, more than PATH_MAX ({PATH_MAX - 1})"
    parts = raw.split(b"/")
    for part in parts[:-1]:
        if len(part) > NAME_MAX:
            return f"a path component is {len(part)} bytes long, more than NAME_MAX ({NAME_MAX})"
    limit = NAME_MAX - TEMP_RESERVE if atomic else NAME_MAX
    if len(parts[-1]) > limit:
        why = f" ({NAME_MAX} less {TEMP_RESERVE} for the temp name it is written through)"
        if limit == NAME_MAX:
            return (
                f"a path component is {len(parts[-1])} bytes long, more than NAME_MAX ({NAME_MAX})"
            )
        return f"name is {len(parts[-1])} bytes long, more than {limit}{why if atomic else ''}"
    return None
