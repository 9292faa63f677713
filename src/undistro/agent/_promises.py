"""What the agent knows of each resource: the last word on its promise.

Kept small on purpose: a record exists only for a resource with something
to say (repaired, failed); the rest were kept at the last full check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from undistro.agent._converge import Outcome


class Promise:
    """The last word on one resource: what ``undistro status`` lists.

    Slotted, and kept only for resources with something to say (a repair,
    a failure): the agent's memory must not grow with what is merely kept.
    """

    __slots__ = ("cause", "error", "last_check", "last_repair", "state")

    def __init__(self) -> None:
        self.state = ""
        self.cause = ""
        self.error: str | None = None
        self.last_check = 0.0
        self.last_repair: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Promises:
    """The records, and the counters of checks, repairs and failures they
    feed (``counts`` is the agent's, shared)."""

    def __init__(self, counts: dict[str, int], say: Callable[[str], None]) -> None:
        self._records: dict[str, Promise] = {}
        self._counts = counts
        self._say = say
        self.full_check: tuple[float, str] | None = None

    def note(self, out: Outcome, now: float, *, log: bool = True) -> int:
        """Record one outcome; 1 if it is worth a log line (logged if ``log``)."""
        self._counts["checks"] += 1
        promise = self._records.get(out.id)
        if promise is None:
            if out.outcome == "kept":
                return 0  # the common case needs no record: see get()
            promise = self._records[out.id] = Promise()
        promise.state, promise.last_check, promise.cause = out.outcome, now, out.cause
        promise.error = out.error
        if out.outcome == "repaired":
            self._counts["repairs"] += 1
            promise.last_repair = now
            if log:
                self._say(f"repaired {out.id} ({out.cause}): {'; '.join(out.actions)}")
            return 1
        if out.outcome == "failed":
            self._counts["failures"] += 1
            if log:
                self._say(f"failed {out.id} ({out.cause}): {out.error}")
            return 1
        return 0

    def get(self, rid: str) -> Promise:
        """What is known of ``rid``. Only resources ever repaired or not kept
        have a record (10,000 records would cost ~1.5 MB of the budget);
        the rest were kept at the last full check."""
        promise = self._records.get(rid)
        if promise is None:
            promise = Promise()
            if self.full_check is not None:
                promise.state = "kept"
                promise.last_check, promise.cause = self.full_check
            else:
                promise.state = "unchecked"
        return promise

    def drop(self, rid: str) -> None:
        self._records.pop(rid, None)

    def remembered(self) -> frozenset[str]:
        """The ids with a record (a check finding them kept must update it)."""
        return frozenset(self._records)

    def recent(self, limit: int) -> tuple[list[list[Any]], list[list[Any]]]:
        """The newest ``limit`` failing promises ``[id, error]`` and repairs
        ``[id, unix time]`` (for the fleet page): O(records), not O(policy)."""
        records = self._records.items()
        failed = sorted((p.last_check, rid, p) for rid, p in records if p.state == "failed")
        failing = [[rid, (p.error or p.cause)[:160]] for _, rid, p in failed[::-1][:limit]]
        repaired = sorted((p.last_repair, rid) for rid, p in records if p.last_repair is not None)
        return failing, [[rid, round(t, 3)] for t, rid in repaired[::-1][:limit]]

    def not_kept(self) -> list[str]:
        return [rid for rid, p in self._records.items() if p.state != "kept"]

    def states(self, total: int) -> dict[str, int]:
        """How many of ``total`` resources are in each state."""
        states: dict[str, int] = {}
        for promise in self._records.values():
            states[promise.state] = states.get(promise.state, 0) + 1
        plain = total - len(self._records)
        if plain:
            state = "kept" if self.full_check else "unchecked"
            states[state] = states.get(state, 0) + plain
        return states
