"""The agent's hold on the declarative core: the policy it runs, the engine,
the journal.

Kept apart from the event loop so the daemon deals in ids and causes only.
A batch of events is converged in one engine run, so a burst pays one
durable flush rather than one per file, and each repair is still journalled
with the event that caused it (the engine takes a cause per resource).

Everything here may be stopped from the loop's thread (:meth:`Converger.cancel`,
on SIGTERM): big work runs in a forked child, which is killed; small work
runs in chunks of at most ``CHUNK`` resources, and stops between chunks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Collection, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from undistro.agent._compile import compile_policy
from undistro.agent._forked import in_child
from undistro.engine import Engine, RunSummary, check_reserved
from undistro.errors import ApplyError, PolicyError
from undistro.policy import Node, Policy, cache_key, load_node, load_policy
from undistro.resources import Resource, ServiceControl, Watch
from undistro.state import JournalEntry, StateStore, new_run_id

IN_CHILD_AT = 250
"""Runs checking this many resources or more fork (see ``_forked``)."""

CHUNK = 250
"""At most this many resources per engine run in the agent's own process
(with services): a SIGTERM waits for one chunk at most."""

COMPILE_DEADLINE = 30.0
"""Seconds a policy compile may take before it is killed and rejected."""

COMPILE_MEMORY = 1 << 30
"""Bytes a policy compile may map beyond the agent's own (then MemoryError)."""

REPORTS = ("quiet", "diff", "plain")
"""What an ``apply`` through the agent may ask to be printed."""

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


@dataclass(frozen=True, slots=True)
class Candidate:
    """A policy compiled into the cache, not yet in force."""

    node: Node
    facts: dict[str, Any]
    key: bytes


@dataclass(slots=True)
class Checked:
    """What one agent run found, kept small: resources found kept are only
    counted, unless the caller remembers something about them."""

    outcomes: list[Outcome] = field(default_factory=list)
    kept: int = 0
    reports: dict[str, str] = field(default_factory=dict)
    ok: bool = True
    cancelled: bool = False


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
        self._cancelled = threading.Event()
        self._children: set[int] = set()
        self._child_lock = threading.Lock()

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

        Returns the policy in force and whether it changed. On PolicyError
        the previous policy stays in force. :meth:`compile` then
        :meth:`swap`, which the agent calls apart (the first beside runs).
        """
        candidate = self.compile()
        if candidate is None:
            return self.policy, False
        return self.swap(candidate), True

    def compile(self) -> Candidate | None:
        """Validate and compile the policy as it is on disk now, into the
        policy cache; None if nothing changed since the policy in force.

        Safe beside a run in another thread: it reads the policy, forks a
        child to compile it (with a deadline and a memory cap) and touches
        neither the engine nor the state store. Any failure (a template
        that exhausts memory, a FIFO that blocks, a bug) is a PolicyError,
        of one line if it was not one already.
        """
        try:
            node = load_node(self.root, self._node_config, self._tags)
            facts = node.facts()
            key = cache_key(self.policy_dir, node, facts)  # every input's lstat, the facts
            if self._policy is not None and key == self._key:
                return None
            problems = compile_policy(
                self.policy_dir,
                root=self.root,
                state_dir=self.state_dir,
                node_config=self._node_config,
                tags=self._tags,
                deadline=COMPILE_DEADLINE,
                memory=COMPILE_MEMORY,
                started=self._started,
                ended=self._ended,
            )
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError([f"{self.policy_dir}: {_one_line(exc)}"]) from None
        if problems:
            raise PolicyError(problems)
        return Candidate(node, facts, key)

    def swap(self, candidate: Candidate) -> Policy:
        """Put a compiled candidate in force (between runs: the engine
        changes). Raises PolicyError and keeps the old policy if the
        compiled result cannot be loaded."""
        if self._policy is not None and candidate.key == self._key:
            return self._policy
        node, facts = candidate.node, candidate.facts
        try:
            policy = load_policy(self.policy_dir, node, facts, cache_dir=self.state_dir)
        except PolicyError:
            raise
        except Exception as exc:
            raise PolicyError([f"{self.policy_dir}: {_one_line(exc)}"]) from None
        check_reserved(policy, self.root, self.state_dir)  # before the swap: keep the old
        self.node, self._policy, self._facts, self._key = node, policy, facts, candidate.key
        self._engine = self._new_engine(policy, self.store)
        trim_memory()  # the old policy and the unpickling's garbage
        return policy

    # -- stopping ---------------------------------------------------------------

    def cancel(self) -> None:
        """Stop the work in progress as soon as it can be (any thread): a
        child is killed, a run in chunks stops before its next chunk. Later
        work is refused until :meth:`resume`."""
        self._cancelled.set()
        with self._child_lock:
            for pid in self._children:
                _kill(pid)

    def resume(self) -> None:
        self._cancelled.clear()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def _started(self, pid: int) -> None:
        with self._child_lock:
            self._children.add(pid)
            if self._cancelled.is_set():
                _kill(pid)

    def _ended(self, pid: int) -> None:
        with self._child_lock:
            self._children.discard(pid)

    def extra_inputs(self) -> list[str]:
        """Files outside the policy directory that the policy depends on."""
        return [self.node.config_path or _rebase(self.root, "/etc/undistro/node.toml")]

    def watches(self, resource: Resource) -> list[Watch]:
        """The resource's watches, rebased under the root."""
        return [Watch(w.kind, _rebase(self.root, w.target)) for w in resource.watches()]

    def run(
        self,
        only: set[str] | None,
        causes: dict[str, str],
        label: str,
        *,
        remembered: Collection[str] = (),
        reports: Collection[str] = (),
    ) -> Checked:
        """Check ``only`` (all when None) and repair what drifted.

        ``causes`` gives each id its event; ids without one get ``label``.
        Resources found kept are counted, and listed only if in
        ``remembered``. ``reports`` (of ``REPORTS``) asks for what
        ``undistro apply`` would print. Runs of ``IN_CHILD_AT`` resources or
        more happen in a forked child so that their transient memory never
        stays in the agent (and :meth:`cancel` can kill them) — unless the
        policy holds services: those belong to the agent process (its
        pidfds, its notify sockets), never to a child that exits; such runs
        go in chunks (a full run stays whole: its skips follow failures).
        """
        assert self._engine is not None
        checked = Checked()
        if self.cancelled:
            checked.cancelled = True
            return checked
        size = len(self.policy.resources) if only is None else len(only)
        if size >= IN_CHILD_AT and not self.service_names():
            engine = self._fresh_engine
            rows = in_child(
                lambda: _rows(engine(), only, causes, label, remembered, reports),
                started=self._started,
                ended=self._ended,
            )
            try:
                for row in rows:
                    _take(checked, row, causes, label)
            except ApplyError:
                if not self.cancelled:
                    raise
                checked.cancelled = True
            return checked
        for part in self._chunks(only):
            if self.cancelled:
                checked.cancelled = True
                break
            for row in _rows(self._engine, part, causes, label, remembered, reports):
                _take(checked, row, causes, label)
        if size >= 100:
            trim_memory()
        return checked

    def _chunks(self, only: set[str] | None) -> Iterator[set[str] | None]:
        """``only`` in runs of at most ``CHUNK``, requirements first."""
        if only is None or len(only) <= CHUNK:
            yield only
            return
        graph = self.policy.graph
        ordered = sorted(only & graph.level.keys(), key=graph.level.__getitem__)
        for i in range(0, len(ordered), CHUNK):
            yield set(ordered[i : i + CHUNK])

    def _fresh_engine(self) -> Engine:
        """The engine of the policy in force, on a state-store connection of
        its own (for a forked child)."""
        return self._new_engine(self.policy, StateStore(self.state_dir))

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


def _rows(
    engine: Engine,
    only: set[str] | None,
    causes: dict[str, str],
    label: str,
    remembered: Collection[str],
    reports: Collection[str],
) -> Iterator[list[Any]]:
    """One engine run as JSON rows: ``["o", id, status, actions, error]`` per
    result worth sending, ``["k", n]`` for the rest, ``["r", kind, text]``
    per report, ``["ok", bool]``. Each repair is journalled with its own
    event: one engine run (one durable flush), one cause per resource."""
    summary = engine.run(only, cause=label, causes=causes)
    kept = 0
    for r in summary.results.values():
        if r.status == "kept" and r.id not in remembered:
            kept += 1
        else:
            yield ["o", r.id, r.status, r.actions, r.error]
    yield ["k", kept]
    for kind in reports:
        yield ["r", kind, _report(summary, kind)]
    yield ["ok", summary.ok]


def _take(checked: Checked, row: list[Any], causes: dict[str, str], label: str) -> None:
    tag = row[0]
    if tag == "o":
        _, rid, status, actions, error = row
        checked.outcomes.append(Outcome(rid, status, causes.get(rid, label), tuple(actions), error))
    elif tag == "k":
        checked.kept += row[1]
    elif tag == "r":
        checked.reports[row[1]] = row[2]
    elif tag == "ok":
        checked.ok = checked.ok and row[1]


def _report(summary: RunSummary, kind: str) -> str:
    """What ``undistro apply`` prints for ``summary`` (``kind``: REPORTS)."""
    from io import StringIO

    from undistro.commands._report import print_run, summary_line

    if kind == "quiet":
        return summary_line(summary) + "\n"
    out = StringIO()
    print_run(summary, out, show_diffs=kind == "diff")
    return out.getvalue()


def trim_memory() -> None:
    """Give the heap's free pages back to the system after big work:
    CPython and glibc would otherwise keep a burst's peak resident for ever.
    A full collection, then ``malloc_trim(0)``: a few ms."""
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(None).malloc_trim(0)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:200] + "…"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _rebase(root: str, path: str) -> str:
    return path if root == "/" else os.path.join(root, path.lstrip("/"))
