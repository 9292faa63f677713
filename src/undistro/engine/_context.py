"""The context a run hands to resources: the root, fingerprints, durable writes."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from typing import Any

from undistro._accounts import Lookup
from undistro.resources._base import Fingerprint


class RunContext:
    """Implements :class:`undistro.resources.Context` for one run."""

    def __init__(
        self,
        root: str,
        facts: Mapping[str, Any],
        fingerprints: Mapping[str, Fingerprint],
    ) -> None:
        self.root = root
        self.facts = facts
        self._prefix = "" if root == "/" else root.rstrip("/")
        self._stored = fingerprints
        self.recorded: dict[str, Fingerprint | None] = {}
        self._staged: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._lookup = Lookup(root)

    def path(self, path: str) -> str:
        return self._prefix + path

    def fingerprint(self, path: str) -> Fingerprint | None:
        if path in self.recorded:
            return self.recorded[path]
        return self._stored.get(path)

    def record(self, path: str, fp: Fingerprint | None) -> None:
        with self._lock:
            self.recorded[path] = fp

    def stage_replace(self, tmp: str, final: str) -> None:
        with self._lock:
            self._staged.append((tmp, final))

    def uid(self, user: str | int) -> int:
        return self._lookup.uid(user)

    def gid(self, group: str | int) -> int:
        return self._lookup.gid(group)

    def accounts_changed(self) -> None:
        self._lookup.invalidate()

    def flush(self) -> dict[str, OSError]:
        """Make every staged file durable, then put it in place.

        One ``syncfs`` makes all the temp files' data durable, the renames
        then swap them in (each atomic), and a second ``syncfs`` makes the
        renames durable: two waits for the whole wave, not one per file,
        with the same guarantee — after a crash each file is old or new.
        Returns the failures by final path.
        """
        with self._lock:
            staged, self._staged = self._staged, []
        if not staged:
            return {}
        failed: dict[str, OSError] = {}
        filesystems = _one_dir_per_filesystem(staged)
        _syncfs(filesystems)
        for tmp, final in staged:
            try:
                os.rename(tmp, final)
            except OSError as exc:
                failed[final] = exc
                self.recorded.pop(final, None)
        _syncfs(filesystems)
        return failed


def _one_dir_per_filesystem(staged: list[tuple[str, str]]) -> list[str]:
    devices: dict[int, str] = {}
    for directory in {os.path.dirname(tmp) for tmp, _ in staged}:
        try:
            devices.setdefault(os.stat(directory).st_dev, directory)
        except OSError:
            continue
    return list(devices.values())


def _syncfs(directories: list[str]) -> None:
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for directory in directories:
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except OSError:
            continue
        try:
            if libc.syncfs(fd) != 0:
                os.sync()
        finally:
            os.close(fd)
