"""The event-driven agent: converge at start, then only on events.

``Agent`` is the daemon (asyncio, no timers); ``Converger`` its hold on the
policy and the engine; :func:`try_agent` talks to a running agent.

``undistro status`` and ``undistro apply`` import this package to find out
whether an agent runs, so the daemon's modules (asyncio, the engine) are
loaded only when ``Agent`` or ``Converger`` is first touched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from undistro.agent.client import AgentError, socket_path, try_agent

if TYPE_CHECKING:
    from undistro.agent._converge import AGENT_RESOURCE, Converger, Outcome
    from undistro.agent._daemon import Agent

_LAZY = {
    "AGENT_RESOURCE": "undistro.agent._converge",
    "Converger": "undistro.agent._converge",
    "Outcome": "undistro.agent._converge",
    "Agent": "undistro.agent._daemon",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'undistro.agent' has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(module), name)


__all__ = [
    "AGENT_RESOURCE",
    "Agent",
    "AgentError",
    "Converger",
    "Outcome",
    "socket_path",
    "try_agent",
]
