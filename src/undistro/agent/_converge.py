"""The agent's hold on the declarative core: the policy it runs, the engine,
the journal.

Kept apart from the event loop so the daemon deals in ids and causes only.
The journal must say which event caused each repair, and the engine takes
one cause per run; so a coalesced batch is first checked in one dry run
(probes only), then each drifted resource is converged in a run of its own
carrying its own cause. A batch is usually one drift, so this costs nothing;
a burst touching many resources pays one extra probe for each.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from undistro.engine import KEPT, Engine, RunSummary
from undistro.policy import Node, Policy, load_node, load_policy
from undistro.resources import Resource, Watch
from undistro.state import JournalEntry, StateStore, new_run_id

AGENT_RESOURCE = "agent"
"""The journal's resource column for what the agent itself did or refused."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one check of one resource ended, with what caused it."""

    id: str
    outcome: str
    cause: str
    actions: list[str] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Converger:
    """Loads the policy, swaps it only when valid, and runs the engine."""

    def __init__(
        self,
        policy_dir: str,
        *,
        root: str = "/",
        state_dir: str,
        node_config: str | None = None,
        tags: tuple[str, ...] = (),
    ) -> None:
        self.policy_dir = os.path.abspath(policy_dir)
        self.root = os.path.abspath(root)
        self.state_dir = state_dir
        self._node_config = node_config
        self._tags = tags
        self.node: Node = load_node(self.root, node_config, tags)
        self.store = StateStore(self.state_dir)
        self._policy: Policy | None = None
        self._engine: Engine | None = None

    @property
    def policy(self) -> Policy:
        assert self._policy is not None, "load() first"
        return self._policy

    def load(self) -> Policy:
        """Load and validate the policy; raise PolicyError (nothing changed)."""
        self.reload()
        return self.policy

    def reload(self) -> tuple[Policy, bool]:
        """Re-read node config and policy; swap them in only if all is valid.

        Returns the policy in force and whether it changed. On PolicyError the
        previous policy stays in force.
        """
        node = load_node(self.root, self._node_config, self._tags)
        facts = node.facts()
        policy = load_policy(self.policy_dir, node, facts, cache_dir=self.state_dir)
        if self._policy is not None and policy.digest and policy.digest == self._policy.digest:
            return self._policy, False
        self.node, self._policy = node, policy
        self._engine = Engine(policy, root=self.root, state=self.store, facts=facts)
        return policy, True

    def extra_inputs(self) -> list[str]:
        """Files outside the policy directory that the policy depends on."""
        return [self.node.config_path or _rebase(self.root, "/etc/undistro/node.toml")]

    def watches(self, resource: Resource) -> list[Watch]:
        """The resource's watches, rebased under the root."""
        return [Watch(w.kind, _rebase(self.root, w.target)) for w in resource.watches()]

    def run(self, only: set[str] | None, causes: dict[str, str], label: str) -> list[Outcome]:
        """Check ``only`` (all when None) and repair what drifted.

        ``causes`` gives each id its event; ids without one get ``label``.
        """
        assert self._engine is not None
        if only is None or len(only) == 1 or len({causes.get(i, label) for i in only}) == 1:
            some = next(iter(only), None) if only else None
            cause = causes.get(some, label) if some is not None else label
            return _outcomes(self._engine.run(only, cause=cause), causes, label)
        probe = self._engine.run(only, cause=label, dry_run=True)
        outcomes = [
            Outcome(r.id, KEPT, causes.get(r.id, label))
            for r in probe.results.values()
            if r.status == KEPT
        ]
        for rid in (r.id for r in probe.results.values() if r.status != KEPT):
            summary = self._engine.run({rid}, cause=causes.get(rid, label))
            outcomes.extend(_outcomes(summary, causes, label))
        return outcomes

    def apply(self, cause: str) -> RunSummary:
        """A full run, as ``undistro apply`` does it (the agent's own engine,
        so it never races the agent's repairs)."""
        assert self._engine is not None
        return self._engine.run(None, cause=cause)

    def journal_agent(self, outcome: str, cause: str, *, error: str | None = None) -> None:
        """Record something the agent did or refused (not a resource's repair)."""
        entry = JournalEntry(
            time.time(), new_run_id(), AGENT_RESOURCE, outcome, cause, (), error=error
        )
        self.store.commit(journal=[entry])

    def close(self) -> None:
        self.store.close()


def _outcomes(summary: RunSummary, causes: dict[str, str], label: str) -> list[Outcome]:
    return [
        Outcome(r.id, r.status, causes.get(r.id, summary.cause or label), r.actions, r.error)
        for r in summary.results.values()
    ]


def _rebase(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))
