"""Swarm nodes in the test's own network namespaces (tests and bench share it)."""

from __future__ import annotations

import os
from pathlib import Path

from tests.fleet.netns import Host
from undistro.content import SWARM_PORT, Swarm, SwarmRef, swarm_ref


def store_path(state: Path, sha256: str) -> Path:
    return state / "content" / "sha256" / sha256


def put_blob(state: Path, data: bytes) -> SwarmRef:
    """Put ``data`` into a node's store the way the store contract says."""
    tmp = state / "content" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    path = tmp / "incoming"
    path.write_bytes(data)
    ref = swarm_ref(path)
    dest = store_path(state, ref.sha256)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o444)
    os.rename(path, dest)
    return ref


def swarm_for(host: Host, root: Path) -> Swarm:
    return Swarm(root / host.name, host.address, launcher=host.argv())


def peers_of(hosts: list[Host], but: Host) -> list[tuple[str, int]]:
    return [(h.address, SWARM_PORT) for h in hosts if h is not but]
