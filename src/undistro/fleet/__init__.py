"""The fleet: machines that gossip through Serf, with no control node.

Serf's RPC client, TUF-signed policy revisions, signed actions, status
queries, and the member that joins them to the agent (see docs/fleet.md).
"""

from undistro.fleet._agent import FleetHost, policy_for_agent, start_fleet
from undistro.fleet._member import FleetMember
from undistro.fleet._serf import Event, Member, QueryResponse, SerfClient, SerfError

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
