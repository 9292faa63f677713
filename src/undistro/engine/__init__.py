"""The engine: graph, scheduling, probe/plan/execute, notify, run summary."""

from undistro.engine._graph import CycleError, Graph, build_graph
from undistro.engine._reserved import check_reserved
from undistro.engine._run import FAILED, KEPT, REPAIRED, SKIPPED, Engine, Result, RunSummary

__all__ = [
    "FAILED",
    "KEPT",
    "REPAIRED",
    "SKIPPED",
    "CycleError",
    "Engine",
    "Graph",
    "Result",
    "RunSummary",
    "build_graph",
    "check_reserved",
]
