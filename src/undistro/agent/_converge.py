"""The agent's hold on the declarative core: the policy it runs, the engine,
the journal.

Kept apart from the event loop so the daemon deals in ids and causes only.
A batch of events is converged in one engine run, so a burst pays one
durable flush rather than one per file, and each repair is still journalled
with the event that caused it (the engine takes a cause per resource).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from undistro.agent._forked import in_child
from undistro.engine import Engine, RunSummary, check_reserved
from undistro.errors import PolicyError
from undistro.policy import Node, Policy, cache_key, load_node, load_policy
from undistro.resources import Resource, ServiceControl, Watch
from undistro.state import JournalEntry, StateStore, new_run_id

IN_CHILD_AT = 1000
"""Runs checking this many resources or more fork (see ``_forked``)."""

AGENT_RESOURCE = "agent"
"""The journal's resource column for what the agent itself did or refused."""


@dataclass(frozen=True, slots=True)
class Outcome:
    """How one check of one resource ended, with what caused it."""

    id: str
    outcome: str
    cause: str
    actions: tuple[str, ...] = ()
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
        self._facts: dict[str, Any] = {}
        self._key = b""
        self.services: ServiceControl | None = None

    def host_services(self, services: ServiceControl) -> None:
        """Drive ``[[service]]`` resources through ``services`` from now on
        (engine runs must then happen off the loop that hosts them)."""
        self.services = services
        if self._policy is not None:
            self._engine = self._new_engine(self._policy, self.store)

    def _new_engine(self, policy: Policy, store: StateStore) -> Engine:
        return Engine(
            policy, root=self.root, state=store, facts=self._facts, services=self.services
        )

    def service_names(self) -> list[str]:
        """The names of the policy's ``[[service]]`` resources."""
        return [r.name for r in self.policy.resources.values() if r.type_name == "service"]

    def requirements(self, rid: str) -> set[str]:
        """``rid`` and everything it requires, directly or not."""
        deps = self.policy.graph.deps
        seen, todo = {rid}, [rid]
        while todo:
            for dep in deps.get(todo.pop(), ()):
                if dep not in seen:
                    seen.add(dep)
                    todo.append(dep)
        return seen

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
        previous policy stays in force. Compiling happens in a forked child
        that leaves the result in the policy cache (see ``_forked``); the
        agent then loads that.
        """
        node = load_node(self.root, self._node_config, self._tags)
        facts = node.facts()
        key = cache_key(self.policy_dir, node, facts)  # every input's lstat, the facts
        if self._policy is not None and key == self._key:
            return self._policy, False
        problems = list(in_child(lambda: self._compile(node, facts)))
        if problems:
            raise PolicyError(problems)
        policy = load_policy(self.policy_dir, node, facts, cache_dir=self.state_dir)
        check_reserved(policy, self.root, self.state_dir)  # before the swap: keep the old
        self.node, self._policy, self._facts, self._key = node, policy, facts, key
        self._engine = self._new_engine(policy, self.store)
        return policy, True

    def _compile(self, node: Node, facts: dict[str, Any]) -> list[str]:
        """In the child: compile into the cache; the problems, if any."""
        try:
            load_policy(self.policy_dir, node, facts, cache_dir=self.state_dir)
        except PolicyError as exc:
            return exc.problems
        return []

    def extra_inputs(self) -> list[str]:
        """Files outside the policy directory that the policy depends on."""
        return [self.node.config_path or _rebase(self.root, "/etc/undistro/node.toml")]

    def watches(self, resource: Resource) -> list[Watch]:
        """The resource's watches, rebased under the root."""
        return [Watch(w.kind, _rebase(self.root, w.target)) for w in resource.watches()]

    def run(self, only: set[str] | None, causes: dict[str, str], label: str) -> Iterator[Outcome]:
        """Check ``only`` (all when None) and repair what drifted, in one
        engine run (one durable flush for the whole batch).

        ``causes`` gives each id its event; ids without one get ``label``.
        Runs of ``IN_CHILD_AT`` resources or more happen in a forked child
        so that their transient memory never stays in the agent; their
        outcomes stream back one by one — unless the policy holds services:
        those belong to the agent process (its pidfds, its notify sockets),
        never to a child that exits.
        """
        assert self._engine is not None
        size = len(self.policy.resources) if only is None else len(only)
        if size >= IN_CHILD_AT and not self.service_names():
            rows: Iterable[list[Any]] = in_child(
                lambda: self._rows(self._fresh_engine(), only, causes, label)
            )
        else:
            rows = self._rows(self._engine, only, causes, label)
        for rid, status, actions, error in rows:
            yield Outcome(rid, status, causes.get(rid, label), tuple(actions), error)

    @staticmethod
    def _rows(
        engine: Engine, only: set[str] | None, causes: dict[str, str], label: str
    ) -> Iterator[list[Any]]:
        # Each repair is journalled with its own event: one engine run (one
        # durable flush) for the batch, one cause per resource.
        summary = engine.run(only, cause=label, causes=causes)
        for r in summary.results.values():
            yield [r.id, r.status, r.actions, r.error]

    def _fresh_engine(self) -> Engine:
        """The engine of the policy in force, on a state-store connection of
        its own (for a forked child)."""
        return self._new_engine(self.policy, StateStore(self.state_dir))

    def apply(self, cause: str) -> RunSummary:
        """A full run, as ``undistro apply`` does it (the agent's own engine,
        so it never races the agent's repairs)."""
        assert self._engine is not None
        return self._engine.run(None, cause=cause)

    def journal_agent(self, outcome: str, *causes: str, error: str | None = None) -> None:
        """Record what the agent itself did or refused (not a resource's
        repair): one entry per cause, in one transaction."""
        run, now = new_run_id(), time.time()
        self.store.commit(
            journal=[
                JournalEntry(now, run, AGENT_RESOURCE, outcome, cause, (), error=error)
                for cause in causes
            ]
        )

    def close(self) -> None:
        self.store.close()


def _rebase(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))
