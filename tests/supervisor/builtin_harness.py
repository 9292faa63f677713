"""A harness for builtin-supervisor tests: real scripts, recorded events, guaranteed cleanup.

Every process a test's services start is in a process group led by a pid the
harness saw in an event; on exit the harness SIGKILLs those groups and reaps
what it can, even when the test failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from undistro.supervisor import BuiltinBackend, ServiceEvent

SRC = str(Path(__file__).resolve().parents[2] / "src")

NOTIFY_PY = """\
import os, socket, sys, time

def notify(message):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.sendto(message.encode(), os.environ["NOTIFY_SOCKET"])
    s.close()

"""


def gone(pid: int) -> bool:
    """True once ``pid`` is not a live process (absent, or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in (b"Z", b"X")


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.state = tmp_path / "state"
        self.logs = tmp_path / "logs"
        self.events: list[tuple[float, ServiceEvent]] = []
        self.pids: set[int] = set()
        self.extra_pids: set[int] = set()
        self._changed: asyncio.Event | None = None

    def __enter__(self) -> Harness:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        for pid in self.pids | self.extra_pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        for pid in self.pids | self.extra_pids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        time.sleep(0.05)
        with contextlib.suppress(ChildProcessError):
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass

    def backend(self, **kwargs: Any) -> BuiltinBackend:
        backend = BuiltinBackend(self.state, self.logs, **kwargs)
        backend.subscribe(self.record)
        return backend

    def run(self, body: Callable[[BuiltinBackend], Awaitable[None]]) -> None:
        """Run ``body`` on a fresh loop with a fresh backend, closed however body ends."""

        async def main() -> None:
            backend = self.backend()
            try:
                await body(backend)
            finally:
                await backend.close()

        asyncio.run(main())

    def record(self, event: ServiceEvent) -> None:
        self.events.append((time.monotonic(), event))
        if event.status.pid is not None:
            self.pids.add(event.status.pid)
        if self._changed is not None:
            self._changed.set()

    def causes(self, name: str) -> list[str]:
        return [e.cause for _t, e in self.events if e.status.name == name]

    async def until(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait for an event after which ``predicate()`` holds."""
        self._changed = self._changed or asyncio.Event()
        deadline = time.monotonic() + timeout
        while not predicate():
            self._changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out; events: {[e.cause for _t, e in self.events]}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def script(self, name: str, text: str, *, python: bool = False) -> str:
        path = self.tmp / name
        if python:
            path.write_text(f"#!{sys.executable}\n{NOTIFY_PY}{text}")
        else:
            path.write_text(f"#!/bin/sh\n{text}")
        path.chmod(0o755)
        return str(path)


async def poll(predicate: Callable[[], bool], timeout: float = 3.0) -> bool:
    """For what the supervisor sends no event about (files a script wrote, a pid's death)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()
