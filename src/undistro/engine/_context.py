"""The context a run hands to resources: the root, fingerprints, durable writes."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from undistro._accounts import Lookup
from undistro._rootfs import RootFS
from undistro.errors import ApplyError
from undistro.resources._base import Fingerprint, ServiceControl


class RunContext:
    """Implements :class:`undistro.resources.Context` for one run."""

    def __init__(
        self,
        root: str,
        facts: Mapping[str, Any],
        fingerprints: Mapping[str, Fingerprint],
        services: ServiceControl | None = None,
    ) -> None:
        self.root = root
        self._services = services
        self.facts = facts
        self._prefix = "" if root == "/" else root.rstrip("/")
        self._stored = fingerprints
        self.recorded: dict[str, Fingerprint | None] = {}
        self._staged: list[tuple[str, str]] = []
        self._lock = threading.Lock()
        self._lookup = Lookup(root)
        self.fs = RootFS(root)

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

    def services(self) -> ServiceControl:
        if self._services is None:
            raise ApplyError(
                "no supervisor in this run (services are driven by 'undistro apply' or the agent)"
            )
        return self._services

    def flush(self) -> dict[str, OSError]:
        """Make every staged file durable, then put it in place.

        One ``syncfs`` makes all the temp files' data durable, the renames
        then swap them in (each atomic), and a second ``syncfs`` makes the
        renames durable: two waits for the whole wave, not one per file,
        with the same guarantee — after a crash each file is old or new.
        Staged paths are policy paths, renamed through the root's confined
        resolution (``self.fs``); the failures are returned by rebased final
        path.
        """
        with self._lock:
            staged, self._staged = self._staged, []
        if not staged:
            return {}
        failed: dict[str, OSError] = {}
        directories = {tmp.rpartition("/")[0] for tmp, _ in staged}
        self.fs.syncfs(directories)
        for tmp, final in staged:
            try:
                self.fs.replace(tmp, final)
            except OSError as exc:
                failed[self.path(final)] = exc
                self.recorded.pop(self.path(final), None)
        self.fs.syncfs(directories)
        return failed
