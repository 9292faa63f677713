"""``undistro fleet members``: the fleet as this node's Serf agent sees it.

Talks to the local Serf agent's RPC port; nothing here knows a central
server, because there is none.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from undistro.commands._groups import command_group
from undistro.errors import UsageError

if TYPE_CHECKING:
    from undistro.fleet import Member

DEFAULT_RPC = "127.0.0.1:7373"  # Serf's own default -rpc-addr

FLEET_HELP = """\
The fleet: machines that gossip through Serf (HashiCorp's gossip engine),
with no control node. Each command asks this node's own Serf agent.
"""

MEMBERS_HELP = f"""\
List the fleet's members as this node's Serf agent sees them: name,
address, status (alive, leaving, left, failed) and tags.

The Serf agent's RPC address comes from --rpc, else $UNDISTRO_SERF_RPC,
else {DEFAULT_RPC}. --tag KEY=REGEX keeps the members whose tag KEY matches
REGEX (anchored, as Serf matches it); repeat it to require several.

examples:
  undistro fleet members
  undistro fleet members --tag role=web --tag env=prod
  undistro fleet members --rpc 127.0.0.1:17373 --json
exit status: 0 listed, 1 the Serf agent cannot be reached, 2 bad arguments
"""

COMMANDS = ("fleet",)
"""The commands ``register`` adds (the CLI builds only what a run needs)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    group = command_group(sub, "fleet", "the gossip fleet (Serf): members", FLEET_HELP)
    p = group.add_parser(
        "members",
        help="list the fleet's members",
        description=MEMBERS_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--rpc", metavar="HOST:PORT", help="the local Serf agent's RPC address")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=REGEX", help="filter by tag")
    p.add_argument("--status", metavar="STATUS", help="only members in this state (e.g. alive)")
    p.add_argument("--json", action="store_true", help="one JSON object per member")
    p.set_defaults(func=cmd_members)


def _tag_filter(specs: list[str]) -> dict[str, str]:
    tags: dict[str, str] = {}
    for spec in specs:
        key, sep, value = spec.partition("=")
        if not sep or not key:
            raise UsageError(f"--tag {spec!r}: expected KEY=REGEX")
        tags[key] = value
    return tags


def rpc_address(arg: str | None) -> str:
    address = arg or os.environ.get("UNDISTRO_SERF_RPC") or DEFAULT_RPC
    _host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError(f"Serf RPC address {address!r}: expected HOST:PORT")
    return address


def cmd_members(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from undistro.fleet import SerfClient

    tags = _tag_filter(args.tag)
    address = rpc_address(args.rpc)

    async def fetch() -> list[Member]:
        async with await SerfClient.connect(address) as client:
            return await client.members(tags)

    rows = sorted(
        (m for m in asyncio.run(fetch()) if not args.status or m.status == args.status),
        key=lambda m: m.name,
    )
    out = sys.stdout
    if args.json:
        for m in rows:
            record = {"name": m.name, "addr": m.addr, "port": m.port, "status": m.status}
            out.write(json.dumps({**record, "tags": dict(m.tags)}, sort_keys=True) + "\n")
        return 0
    width = max([len(m.name) for m in rows] + [4])
    out.write(f"{'NAME':<{width}}  {'ADDRESS':<21}  {'STATUS':<7}  TAGS\n")
    for m in rows:
        tagtext = ",".join(f"{k}={v}" for k, v in sorted(m.tags.items()))
        out.write(
            f"{m.name:<{width}}  {m.addr + ':' + str(m.port):<21}  {m.status:<7}  {tagtext}\n"
        )
    return 0
