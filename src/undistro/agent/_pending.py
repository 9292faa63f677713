"""What the agent still has to do, coalesced.

Events never queue work: they mark resource ids dirty (a dict, at most one
entry per managed id, keeping the first cause), ask for a full check or a
policy reload (one flag each), and callers wait on a future that the next
pass answers. However fast events arrive, this stays as large as the
policy and no larger; the agent runs at most one pass at a time, and takes
everything pending when it starts one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from undistro.state import JournalEntry

MAX_JOURNAL = 1000
"""Agent journal entries held between two passes (the rest are counted)."""


@dataclass(slots=True)
class Waiter:
    """A caller answered when a pass that started after its request ends.

    ``kind``: ``"converge"`` (a service's requirements), ``"reload"``, or an
    apply's report (one of ``Converger``'s ``REPORTS``)."""

    future: asyncio.Future[dict[str, Any]]
    kind: str

    def answer(self, reply: dict[str, Any]) -> None:
        if not self.future.done():
            self.future.set_result(reply)


class Pending:
    """The agent's to-do list: bounded by the policy, never by the events."""

    __slots__ = ("dirty", "dropped", "full", "journal", "reload", "reload_waiters", "waiters")

    def __init__(self) -> None:
        self.dirty: dict[str, str] = {}
        self.full: str | None = None
        self.reload: str | None = None
        self.waiters: list[Waiter] = []
        self.reload_waiters: list[Waiter] = []
        self.journal: list[JournalEntry] = []
        self.dropped = 0

    def __bool__(self) -> bool:
        """Whether a pass has work (a requested reload first needs its compile)."""
        return bool(self.dirty or self.full or self.waiters or self.journal)

    def mark(self, causes: Mapping[str, str]) -> None:
        """These ids may have changed (the first cause seen is kept)."""
        dirty = self.dirty
        for rid, cause in causes.items():
            if rid not in dirty:
                dirty[rid] = cause

    def check_all(self, label: str) -> None:
        if self.full is None:
            self.full = label

    def reload_policy(self, cause: str) -> None:
        if self.reload is None:
            self.reload = cause

    def record(self, entries: list[JournalEntry]) -> None:
        room = MAX_JOURNAL - len(self.journal)
        self.journal.extend(entries[:room])
        self.dropped += max(0, len(entries) - room)

    def wait(self, kind: str, *, reload: bool = False) -> asyncio.Future[dict[str, Any]]:
        """A future answered after the next pass (``reload``: after a
        compile that starts after now, and the pass that follows it)."""
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        (self.reload_waiters if reload else self.waiters).append(Waiter(future, kind))
        return future

    def stats(self) -> dict[str, int]:
        return {"dirty": len(self.dirty), "waiting": len(self.waiters) + len(self.reload_waiters)}
