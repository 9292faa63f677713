"""Paths no policy may manage: undistro's own state directory and keg store.

A ``[[file]]`` on ``/var/lib/undistro/state.db`` overwrites the store that
records the run, and every later run fails; a file in the keg store changes
a keg under its hash; a purged directory above either deletes them. The
rule is checked once per policy where the state directory is known (the
session loading a policy, the engine starting), not by each resource type.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from undistro.errors import PolicyError

if TYPE_CHECKING:
    from undistro.policy._model import Policy
    from undistro.resources._base import Resource

DEFAULT_STORE = "/opt/undistro/store"
"""``undistro.kegs.DEFAULT_STORE`` (a test keeps the two equal): importing the
kegs package for it would cost a no-op apply hashlib and json."""

_MAX_PROBLEMS = 50


def check_reserved(policy: Policy, root: str, state_dir: str) -> None:
    """Raise PolicyError (one line per resource, naming its file and field)
    if ``policy`` manages a path inside the state directory or a keg store,
    or purges a directory holding one. ``state_dir`` is the physical path;
    the policy's paths are rebased under ``root``. No I/O: a string test per
    managed path (~2 ms for 10,000)."""
    prefix = "" if root == "/" else root.rstrip("/")
    stores = {DEFAULT_STORE}
    for res in policy.resources.values():
        if res.type_name == "keg" and isinstance(res.values.get("store"), str):
            stores.add(res.values["store"])
    # Each reserved directory as the policy names paths (un-rebased): one
    # the root does not contain cannot hold a managed path.
    reserved: dict[str, str] = {}  # policy path -> what it is
    for physical, what in [(state_dir, "the state directory")] + [
        (prefix + store, "the keg store") for store in sorted(stores)
    ]:
        physical = os.path.normpath(physical)
        if not prefix:
            reserved.setdefault(physical, what)
        elif physical == prefix or physical.startswith(prefix + "/"):
            reserved.setdefault(physical[len(prefix) :] or "/", what)
    inside = tuple(top.rstrip("/") + "/" for top in reserved)

    problems: list[str] = []
    for path, rid in policy.managed.items():
        if path in reserved or path.startswith(inside):
            top = next(t for t in reserved if path == t or path.startswith(t.rstrip("/") + "/"))
            res = policy.resources[rid]
            problems.append(
                f"{_where(res)}field '{_field(res, path)}': {path} is inside {reserved[top]}"
                f" {prefix + top}: undistro's own, no policy may manage it"
            )
    for res in policy.resources.values():
        if res.values.get("purge") is not True:
            continue
        for path in res.managed_paths():
            below = path.rstrip("/") + "/"
            for top, what in reserved.items():
                if top.startswith(below):
                    problems.append(
                        f"{_where(res)}field 'purge': purging {path} would delete {what}"
                        f" {prefix + top}"
                    )
    if problems:
        raise PolicyError(problems[:_MAX_PROBLEMS])


def _where(res: Resource) -> str:
    return f"{res.source}: {res.id}: " if res.source else f"{res.id}: "


def _field(res: Resource, path: str) -> str:
    """The field that names ``path`` (``path``, a user's ``home``, …)."""
    return next((k for k, v in res.values.items() if v == path), "path")
