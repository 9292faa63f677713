"""The few filesystem moves the store and profiles make durable or undo."""

from __future__ import annotations

import os
import shutil

from undistro._files import atomic_write, fsync_dir

__all__ = ["atomic_write", "fsync_dir", "remove_tree"]


def remove_tree(path: str) -> None:
    """Remove a tree whose directories may be read-only (store paths are);
    each directory is opened up first, symlinks are never followed."""
    if not os.path.lexists(path):
        return
    if not os.path.islink(path):
        os.chmod(path, 0o700)
    for dirpath, dirnames, _files in os.walk(path):
        for d in dirnames:
            full = os.path.join(dirpath, d)
            if not os.path.islink(full):
                os.chmod(full, 0o700)
    shutil.rmtree(path)
