"""Which file of this node answers ``/tuf/<filename>``.

Names are TUF's consistent-snapshot names: ``timestamp.json`` (the newest),
``N.root.json``, ``N.snapshot.json``, ``N.targets.json`` (versioned copies the
fleet receiver keeps of what it verified, in ``<state>/fleet/served/``), and
targets ``<sha256>.<name>``, which are blobs of the content store (a target is
addressed by its hash, so the store holds it under that hash).
"""

from __future__ import annotations

import os
import re

_META = re.compile(r"(?:[1-9][0-9]{0,9}\.)?(?:root|snapshot|targets|timestamp)\.json")
_TARGET = re.compile(r"([0-9a-f]{64})\.[A-Za-z0-9._-]{1,200}")


def served_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "fleet", "served")


def tuf_path(state_dir: str, name: str) -> str | None:
    """The local file for a TUF repository file name, or None for a name TUF never asks."""
    if _META.fullmatch(name):
        return os.path.join(served_dir(state_dir), name)
    match = _TARGET.fullmatch(name)
    if match:
        return os.path.join(state_dir, "content", "sha256", match.group(1))
    return None
