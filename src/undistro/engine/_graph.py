"""The resource graph: edges from relations, a topological order, levels.

Edges come from ``requires``, ``before``, ``notify`` and each resource's
implicit requirements (parent directory, owner) when the policy declares
them. A failed resource skips everything downstream of it, and only that.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from undistro.resources._base import Resource


class CycleError(ValueError):
    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        super().__init__("dependency cycle: " + " -> ".join(cycle))


class Graph(NamedTuple):
    order: tuple[str, ...]  # topological: every id after all it depends on
    deps: Mapping[str, tuple[str, ...]]  # id -> ids that must converge first
    dependents: Mapping[str, tuple[str, ...]]
    notifies: Mapping[str, tuple[str, ...]]
    level: Mapping[str, int]  # 0 for roots; each id is 1 + max(level of deps)


def build_graph(resources: Mapping[str, Resource]) -> Graph:
    """Raise KeyError(id, field, target) for an unknown reference and
    CycleError naming the cycle."""
    deps: dict[str, list[str]] = {rid: [] for rid in resources}
    notifies: dict[str, tuple[str, ...]] = {}
    for rid, res in resources.items():
        for field, targets in (
            ("requires", res.requires),
            ("before", res.before),
            ("notify", res.notify),
        ):
            for target in targets:
                if target not in resources:
                    raise KeyError(rid, field, target)
                if field == "requires":
                    deps[rid].append(target)
                else:
                    deps[target].append(rid)
        for target in res.implicit_requires():
            if target in resources and target != rid:
                deps[rid].append(target)
        if res.notify:
            notifies[rid] = res.notify
    clean = {rid: tuple(dict.fromkeys(d)) for rid, d in deps.items()}
    order, level = _toposort(clean)
    dependents: dict[str, list[str]] = {rid: [] for rid in resources}
    for rid, ds in clean.items():
        for d in ds:
            dependents[d].append(rid)
    return Graph(
        order=tuple(order),
        deps=clean,
        dependents={k: tuple(v) for k, v in dependents.items()},
        notifies=notifies,
        level=level,
    )


def _toposort(deps: Mapping[str, tuple[str, ...]]) -> tuple[list[str], dict[str, int]]:
    # Kahn's algorithm keeps declaration order among independent resources,
    # so plan output reads like the policy.
    waiting = {rid: len(ds) for rid, ds in deps.items()}
    users: dict[str, list[str]] = {rid: [] for rid in deps}
    for rid, ds in deps.items():
        for d in ds:
            users[d].append(rid)
    ready = [rid for rid, n in waiting.items() if n == 0]
    order: list[str] = []
    level: dict[str, int] = {}
    i = 0
    while i < len(ready):
        rid = ready[i]
        i += 1
        order.append(rid)
        level[rid] = 1 + max((level[d] for d in deps[rid]), default=-1)
        for user in users[rid]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    if len(order) != len(deps):
        raise CycleError(_find_cycle({r: ds for r, ds in deps.items() if r not in level}))
    return order, level


def _find_cycle(deps: Mapping[str, tuple[str, ...]]) -> list[str]:
    # Every remaining node has an unresolved dependency inside the remainder,
    # so walking any dependency chain must revisit a node.
    start = next(iter(deps))
    path: list[str] = []
    seen: dict[str, int] = {}
    node = start
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(d for d in deps[node] if d in deps)
    cycle = [*path[seen[node] :], node]
    cycle.reverse()  # read as "a must come before b"
    return cycle
