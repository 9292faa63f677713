"""The fleet: machines that gossip through Serf, with no control node.

Only the Serf RPC client lives here so far; revisions, signed actions and
status queries build on it.
"""

from undistro.fleet._serf import Event, Member, QueryResponse, SerfClient, SerfError

__all__ = ["Event", "Member", "QueryResponse", "SerfClient", "SerfError"]
