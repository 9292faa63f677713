"""What the agent gives the fleet, and the one call that joins them.

The fleet is one more event source: the agent hands :func:`start_fleet` an
object with a few coroutines (switch policy, converge, restart a service)
and gets back a running :class:`FleetMember`, or None when node.toml has
no ``[fleet]``. Nothing else in the agent knows Serf or TUF.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Protocol

from undistro.fleet._actions import Action
from undistro.fleet._config import fleet_config
from undistro.fleet._member import FleetMember
from undistro.fleet._receive import Revision, in_force, mark_applied, previous, trust_dir
from undistro.supervisor._spec import Backend

EMPTY_POLICY = "unconfigured"


class FleetHost(Protocol):
    """The agent, as the fleet sees it."""

    async def switch_policy(self, policy_dir: str, cause: str) -> bool:
        """Validate ``policy_dir`` and enforce it; False (old policy kept) if invalid."""
        ...

    async def converge_all(self, cause: str) -> str: ...

    async def restart_service(self, name: str, cause: str) -> str: ...

    def fleet_summary(self) -> Mapping[str, Any]: ...

    def journal_fleet(self, outcome: str, what: str, error: str | None) -> None: ...

    def log(self, message: str) -> None: ...


def policy_for_agent(
    state_dir: str, node_fleet: Mapping[str, Any], given: str | None
) -> str | None:
    """The policy directory an agent with a ``[fleet]`` starts on.

    The revision the fleet last gave this node wins over node.toml's
    ``policy`` (it is newer news); an explicit POLICY_DIR on the command
    line wins over both. With neither, an empty policy: the agent runs and
    waits for its first revision.
    """
    if not node_fleet:
        return given
    revision = in_force(state_dir)
    if revision is not None:
        return revision.policy_dir
    if given:
        return given
    empty = os.path.join(trust_dir(state_dir), "empty")
    if not os.path.isfile(os.path.join(empty, "undistro.toml")):
        os.makedirs(os.path.join(empty, "policy"), 0o755, exist_ok=True)
        with open(os.path.join(empty, "undistro.toml"), "w") as f:
            f.write(f'name = "{EMPTY_POLICY}"\n')
    return empty


async def start_fleet(
    host: FleetHost,
    *,
    node_fleet: Mapping[str, Any],
    hostname: str,
    node_tags: tuple[str, ...],
    where: str,
    state_dir: str,
    backend: Backend,
) -> FleetMember | None:
    config = fleet_config(node_fleet, hostname=hostname, where=where)
    if config is None:
        return None

    async def apply_revision(revision: Revision) -> bool:
        return await host.switch_policy(revision.policy_dir, f"fleet revision {revision.number}")

    async def run_action(action: Action) -> str:
        cause = f"fleet action {action.describe()}"
        if action.kind == "converge":
            return await host.converge_all(cause)
        if action.kind == "restart":
            return await host.restart_service(action.target, cause)
        older = previous(state_dir)
        if older is None:
            return "nothing to roll back to: no older revision on this node"
        if not await host.switch_policy(older.policy_dir, cause):
            return f"revision {older.number} no longer loads here: kept the current one"
        mark_applied(state_dir, older)
        return f"rolled back to revision {older.number}"

    member = FleetMember(
        config,
        state_dir,
        backend,
        node_tags=node_tags,
        apply_revision=apply_revision,
        run_action=run_action,
        summary=host.fleet_summary,
        journal=host.journal_fleet,
        log=host.log,
    )
    await member.start()
    return member
