"""The compiled-policy cache.

Parsing 10,000 resources of TOML costs ~0.25 s; a no-op run must cost less
than that in total. So a compiled policy is pickled into the state directory,
keyed by a digest of everything compiling read: the ``lstat`` of every file
in the policy directory (size, mtime, ctime, inode — a touched, edited or
replaced file changes it), the node's facts, tags and variables, and
undistro's version. Any change of any of them recompiles.

The cache is written only when it was missed, so a no-op run writes nothing.
It lives in the state directory (root-only, 0700): pickle trusts its input.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
from collections.abc import Mapping
from typing import Any

from undistro.policy._loader import Policy, compile_policy
from undistro.policy._node import Node

CACHE_NAME = "policy.cache"


def policy_digest(policy_dir: str, node: Node, facts: Mapping[str, Any]) -> str:
    from undistro import __version__

    h = hashlib.sha256()
    h.update(f"{__version__}\0{os.path.abspath(policy_dir)}\0{node.root}\0".encode())
    h.update(repr(sorted(facts.items())).encode())
    h.update(repr(sorted(node.vars.items())).encode())
    for rel, st in _walk(policy_dir):
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def load_policy(
    policy_dir: str,
    node: Node,
    facts: Mapping[str, Any],
    *,
    cache_dir: str | None = None,
) -> Policy:
    """The compiled policy, from the cache when nothing it depends on moved."""
    policy_dir = os.path.abspath(policy_dir)
    if cache_dir is None:
        return compile_policy(policy_dir, node, facts)
    digest = policy_digest(policy_dir, node, facts)
    path = os.path.join(cache_dir, CACHE_NAME)
    cached = _read(path, digest)
    if cached is not None:
        return cached
    policy = compile_policy(policy_dir, node, facts)
    policy.digest = digest
    _write(path, digest, policy)
    return policy


def _read(path: str, digest: str) -> Policy | None:
    try:
        with open(path, "rb") as f:
            stored = f.read(64).decode("ascii", "replace")
            if stored != digest:
                return None
            policy = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError, ImportError, ValueError):
        return None
    return policy if isinstance(policy, Policy) else None


def _write(path: str, digest: str, policy: Policy) -> None:
    # Best effort: a cache that cannot be written costs the next run a
    # recompile, nothing more.
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(digest.encode("ascii"))
            pickle.dump(policy, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.rename(tmp, path)
    except (OSError, pickle.PicklingError, RecursionError):
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _walk(top: str) -> list[tuple[str, os.stat_result]]:
    out: list[tuple[str, os.stat_result]] = []
    stack = [""]
    while stack:
        rel = stack.pop()
        try:
            entries = list(os.scandir(os.path.join(top, rel)))
        except OSError:
            continue
        for entry in entries:
            sub = f"{rel}/{entry.name}" if rel else entry.name
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError:
                continue
            out.append((sub, st))
            if entry.is_dir(follow_symlinks=True):
                stack.append(sub)
    out.sort(key=lambda item: item[0])
    return out
