"""The compiled-policy cache.

Parsing 10,000 resources of TOML costs ~0.25 s; a no-op run must cost less
than that in total. So a compiled policy is pickled into the state directory
under a key made of everything compiling read: the ``lstat`` of every file in
the policy directory (size, mtime, ctime, inode — a touched, edited or
replaced file changes it), the node's facts, tags and variables, and
undistro's version. Any change of any of them recompiles.

The key is stored and compared whole, not hashed, so that a cache hit pays
neither hashlib's OpenSSL import nor TOML nor Jinja2. The cache is written
only when it was missed, so a no-op run writes nothing. It lives in the state
directory (root-only, 0700): pickle trusts its input.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import struct
from collections.abc import Mapping
from typing import Any

from undistro.errors import PolicyError
from undistro.policy._model import Policy
from undistro.policy._node import Node
from undistro.policy._read import walk

CACHE_NAME = "policy.cache"
_MAGIC = b"undistro-policy-cache 2\n"  # bump when compiled objects change shape


def cache_key(policy_dir: str, node: Node, facts: Mapping[str, Any]) -> bytes:
    from undistro import __version__

    parts = [
        f"{__version__}\0{os.path.abspath(policy_dir)}\0{node.root}",
        repr(sorted(facts.items())),
        repr(sorted(node.vars.items())),
    ]
    for rel, st in walk(policy_dir)[0]:
        parts.append(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}")
    return "\n".join(parts).encode("utf-8", "surrogateescape")


def load_policy(
    policy_dir: str,
    node: Node,
    facts: Mapping[str, Any],
    *,
    cache_dir: str | None = None,
) -> Policy:
    """The compiled policy, from the cache when nothing it depends on moved.

    Raises PolicyError (exit status 2, one line per problem) and nothing
    else for anything wrong with the policy, including what would be a
    MemoryError, RecursionError or OSError while reading it."""
    try:
        return _load(os.path.abspath(policy_dir), node, facts, cache_dir)
    except MemoryError:
        raise PolicyError(f"{policy_dir}: out of memory while loading the policy") from None
    except RecursionError:
        raise PolicyError(f"{policy_dir}: policy nested too deeply to load") from None


def _load(policy_dir: str, node: Node, facts: Mapping[str, Any], cache_dir: str | None) -> Policy:
    if cache_dir is None:
        policy = _compile(policy_dir, node, facts)
        policy.digest = _digest(cache_key(policy_dir, node, facts))
        return policy
    key = cache_key(policy_dir, node, facts)
    path = os.path.join(cache_dir, CACHE_NAME)
    cached = _read(path, key)
    if cached is not None:
        return cached
    policy = _compile(policy_dir, node, facts)
    policy.digest = _digest(key)
    _write(path, key, policy)
    return policy


def _compile(policy_dir: str, node: Node, facts: Mapping[str, Any]) -> Policy:
    # The loader (TOML, templates) is imported only on a miss.
    from undistro.policy._loader import compile_policy

    return compile_policy(policy_dir, node, facts)


def _digest(key: bytes) -> str:
    import hashlib

    return hashlib.sha256(key).hexdigest()


def _read(path: str, key: bytes) -> Policy | None:
    try:
        with open(path, "rb") as f:
            if f.read(len(_MAGIC)) != _MAGIC:
                return None
            (length,) = struct.unpack("<Q", f.read(8))
            if length != len(key) or f.read(length) != key:
                return None
            policy = pickle.load(f)
    except Exception:
        # Best effort, like writing it: a cache cut short by a full disk or
        # garbled in any other way unpickles into any error; recompile.
        return None
    return policy if isinstance(policy, Policy) else None


def _write(path: str, key: bytes, policy: Policy) -> None:
    # Best effort: a cache that cannot be written costs the next run a
    # recompile, nothing more.
    tmp = path + ".tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(_MAGIC + struct.pack("<Q", len(key)) + key)
            pickle.dump(policy, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.rename(tmp, path)
    except (OSError, pickle.PicklingError, RecursionError, MemoryError):
        with contextlib.suppress(OSError):
            os.unlink(tmp)
