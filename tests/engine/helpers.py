"""Run a policy through the engine in-process, the way the CLI does."""

from __future__ import annotations

import os
from pathlib import Path

from undistro.engine import Engine, RunSummary
from undistro.policy import load_node, load_policy
from undistro.state import StateStore


def converge(
    policy_dir: os.PathLike[str] | str, root: Path, *, dry_run: bool = False, **kw: object
) -> RunSummary:
    node = load_node(str(root))
    facts = node.facts()
    state_dir = str(root / "var/lib/undistro")
    policy = load_policy(os.fspath(policy_dir), node, facts, cache_dir=state_dir)
    engine = Engine(policy, root=str(root), state=StateStore(state_dir), facts=facts)
    return engine.run(dry_run=dry_run, **kw)  # type: ignore[arg-type]


def statuses(summary: RunSummary) -> dict[str, str]:
    return {rid: r.status for rid, r in summary.results.items()}
