"""The compiled policy: what the engine runs and the cache stores.

Kept apart from the loader so that reading a cached policy imports neither
TOML nor templates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from undistro.engine._graph import Graph
    from undistro.resources._base import Resource


class Policy:
    """A validated policy, ready for the engine."""

    def __init__(
        self,
        name: str,
        dir: str,
        resources: dict[str, Resource],
        graph: Graph,
        files: list[str],
        vars: dict[str, Any],
        managed: dict[str, str],
    ) -> None:
        self.name = name
        self.dir = dir
        self.resources = resources  # in topological order
        self.graph = graph
        self.files = files  # policy files applied to this node, relative to dir
        self.vars = vars
        self.managed = managed  # managed path -> resource id
        self.digest = ""  # identifies every input; set by the cache

    def __repr__(self) -> str:
        return f"<Policy {self.name} ({len(self.resources)} resources) from {self.dir}>"
