"""The ways a managed file drifts, shared by the watcher and agent tests:
(name, change, the inotify flag that reports it)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def replace(path: Path, text: str) -> None:
    """Write aside and rename over, as editors and atomic writers do."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.rename(tmp, path)


_DRIFTS: list[tuple[str, Callable[[Path], object], str]] = [
    ("modify", lambda p: p.write_text("drifted\n"), "modify"),
    ("delete", lambda p: p.unlink(), "delete"),
    ("chmod", lambda p: p.chmod(0o666), "attrib"),
    ("rename-over", lambda p: replace(p, "replaced\n"), "moved_to"),
]

drifts = pytest.mark.parametrize(
    ("drift", "flag"), [(d, f) for _, d, f in _DRIFTS], ids=[n for n, _, _ in _DRIFTS]
)
"""Parametrize a test over every kind of drift."""
