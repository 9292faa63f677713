"""One-shot runs of a policy that holds services.

The supervisor backends live on an event loop (the builtin one reads pidfds
and notify sockets there), so ``plan`` and ``apply`` host one on the main
thread and run the engine in a worker thread for as long as the run lasts.
When it ends the backends let go: the services keep running, and the
builtin backend's records let the next ``apply`` or agent re-adopt them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from undistro.commands._session import Session
    from undistro.engine import RunSummary
    from undistro.policy import Policy
    from undistro.supervisor import Supervisors


def service_names(policy: Policy) -> list[str]:
    """The names of the policy's ``[[service]]`` resources."""
    return [r.name for r in policy.resources.values() if r.type_name == "service"]


def run_policy(
    session: Session, policy: Policy, *, cause: str, dry_run: bool = False
) -> tuple[RunSummary, list[str]]:
    """Run the engine on ``policy``; returns the summary and lines about
    services stopped because they left the policy (an apply only).

    A policy without services runs on this thread, as before. With one, or
    with services recorded by an earlier run, the engine runs in a worker
    thread while this thread's loop hosts the backends.
    """
    names = service_names(policy)
    if not names and not _recorded(session.state_dir):
        return session.engine(policy).run(cause=cause, dry_run=dry_run), []

    # Only now: the supervisor brings asyncio (~10 MB) that a policy
    # without services must not pay for.
    from undistro.supervisor import run_hosted

    def work(services: Supervisors) -> tuple[RunSummary, list[str]]:
        summary = session.engine(policy, services).run(cause=cause, dry_run=dry_run)
        if dry_run:
            return summary, []
        gone = services.retire(names)
        if gone:
            _journal_retired(session, summary.run, gone)
        return summary, [f"stopped service {n}: it left the policy" for n in gone]

    # Service events (spawned, ready, exited, reloaded) are journalled once
    # the run is over: the engine's worker thread owns the store meanwhile.
    events: list[tuple[str, str, str, float]] = []
    try:
        return run_hosted(
            work,
            session.state_dir,
            root=session.root,
            read_only=dry_run,
            journal=None if dry_run else lambda *event: events.append(event),
        )
    finally:
        if events:
            _journal_events(session, events)


def _recorded(state_dir: str) -> bool:
    import os

    managed = os.path.join(state_dir, "services", "managed")
    return os.path.isdir(managed) and any(n.endswith(".json") for n in os.listdir(managed))


def _journal_events(session: Session, events: list[tuple[str, str, str, float]]) -> None:
    from undistro.state import JournalEntry, new_run_id

    run = new_run_id()
    session.store().commit(
        journal=[
            JournalEntry(
                when, run, rid, outcome, cause, (), error=cause if outcome == "failed" else None
            )
            for rid, outcome, cause, when in events
        ]
    )


def _journal_retired(session: Session, run: str, names: list[str]) -> None:
    from undistro.state import JournalEntry

    now = time.time()
    session.store().commit(
        journal=[
            JournalEntry(
                now,
                run,
                f"service:{n}",
                "repaired",
                "left the policy",
                (f"stop service {n}",),
            )
            for n in names
        ]
    )
