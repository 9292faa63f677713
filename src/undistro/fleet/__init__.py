"""The fleet: machines that gossip through Serf, with no control node.

Serf's RPC client, TUF-signed policy revisions, signed actions, status
queries, and the member that joins them to the agent (see docs/fleet.md).
Names are imported on first use: the short-lived fetch child
(``undistro.fleet._child``) must not pay for the agent's side.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from undistro.fleet._agent import FleetHost, policy_for_agent, start_fleet
    from undistro.fleet._member import FleetMember
    from undistro.fleet._serf import Event, Member, QueryResponse, SerfClient, SerfError

_WHERE = {
    "Event": "_serf",
    "FleetHost": "_agent",
    "FleetMember": "_member",
    "Member": "_serf",
    "QueryResponse": "_serf",
    "SerfClient": "_serf",
    "SerfError": "_serf",
    "policy_for_agent": "_agent",
    "start_fleet": "_agent",
}
__all__ = [
    "Event",
    "FleetHost",
    "FleetMember",
    "Member",
    "QueryResponse",
    "SerfClient",
    "SerfError",
    "policy_for_agent",
    "start_fleet",
]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'undistro.fleet' has no attribute {name!r}")
    return getattr(import_module(f"undistro.fleet.{module}"), name)
