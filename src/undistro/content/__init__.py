"""Content: SHA-256-addressed blobs that every node stores and serves (the
swarm for large ones, each node's HTTP face for the rest).

Names are imported on first use, so the agent pays only for what it touches
(the swarm's libtorrent never enters the agent at all: it runs in a child).
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from undistro.content._store import (
        ContentError,
        ContentStore,
        HashMismatch,
        check_hex,
        store_for_root,
    )
    from undistro.content._swarm import (
        SWARM_PORT,
        SWARM_THRESHOLD,
        Swarm,
        SwarmError,
        SwarmRef,
        swarm_peers,
        swarm_ref,
    )

_WHERE = {
    "ContentError": "_store",
    "ContentStore": "_store",
    "HashMismatch": "_store",
    "check_hex": "_store",
    "store_for_root": "_store",
    "SWARM_PORT": "_swarm",
    "SWARM_THRESHOLD": "_swarm",
    "Swarm": "_swarm",
    "SwarmError": "_swarm",
    "SwarmRef": "_swarm",
    "swarm_peers": "_swarm",
    "swarm_ref": "_swarm",
}
__all__ = [
    "SWARM_PORT",
    "SWARM_THRESHOLD",
    "ContentError",
    "ContentStore",
    "HashMismatch",
    "Swarm",
    "SwarmError",
    "SwarmRef",
    "check_hex",
    "store_for_root",
    "swarm_peers",
    "swarm_ref",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'undistro.content' has no attribute {name!r}")
    return getattr(import_module(f"undistro.content.{module}"), name)
