"""``undistro fleet members``: the fleet as this node's Serf agent sees it.

Talks to the local Serf agent's RPC port; nothing here knows a central
server, because there is none.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from undistro.commands._groups import command_group
from undistro.commands._session import add_root_options, open_session
from undistro.errors import FleetError, UsageError

if TYPE_CHECKING:
    from undistro.fleet import Member

_RAW = argparse.RawDescriptionHelpFormatter
ANNOUNCE_EVENT = "undistro-revision"
DEFAULT_RPC = "127.0.0.1:7373"  # Serf's own default -rpc-addr

FLEET_HELP = """\
The fleet: machines that gossip through Serf (HashiCorp's gossip engine),
with no control node. Trust is The Update Framework's: a fleet directory
holds the keys and signed metadata; each node trusts the fleet's root.

  undistro fleet init ~/fleet                   keys + root (2 of 3 keys)
  undistro fleet trust ~/fleet/repo/metadata/1.root.json --root /tmp/n1
  undistro fleet push examples/demo --fleet ~/fleet --to web
  undistro fleet pull --from ~/fleet/repo --root /tmp/n1 --tag web
  undistro fleet members --tag role=web
"""

INIT_HELP = """\
Create a fleet in the new directory DIR: Ed25519 keys for the root role (3
keys, any 2 of which sign a new root: move them offline), and for the
targets, snapshot and timestamp roles (online: push uses them), then the
first signed metadata. Prints the root file every node must trust.

examples:
  undistro fleet init ~/fleet
exit status: 0 created, 2 DIR already holds a fleet
"""

PUSH_HELP = """\
Bundle POLICY_DIR (deterministic: the same files give the same SHA-256),
add it to the fleet as the next revision, sign targets, snapshot and
timestamp, and announce the signed timestamp (~370 bytes) to the fleet as
a Serf user event. --to TAG[,TAG] limits the revision to nodes holding all
those tags. Each node verifies the announcement against its own trusted
root before it fetches anything.

examples:
  undistro fleet push examples/demo --fleet ~/fleet
  undistro fleet push examples/demo --fleet ~/fleet --to web --no-announce
exit status: 0 pushed (and announced), 1 pushed but not announced, 2 bad input
"""

TRUST_HELP = """\
Trust a fleet's root (its 1.root.json) on this node, under ROOT's state
directory. Refuses a file that is not a TUF root signed by its own
threshold, and refuses to replace a root already trusted: a new root
arrives signed by the old one's threshold, through pull.

examples:
  undistro fleet trust fleet-root.json
  undistro fleet trust ~/fleet/repo/metadata/1.root.json --root /tmp/n1
"""

STATUS_HELP = """\
Ask the fleet how it is: a Serf query that each node's agent answers from
its own state (policy revision, promises kept, repaired and failed,
services up and failed, last error, RSS), in under 1 KB. Nodes that are
alive but did not answer in time, and nodes Serf reports failed, are
named. --tag KEY=REGEX asks only the matching nodes.

examples:
  undistro fleet status
  undistro fleet status --tag role=web --timeout 5 --json
exit status: 0 every asked node answered, 1 some did not or Serf is unreachable
"""

OPERATOR_HELP = """\
Authorise a new operator key for signed actions (fleet run): writes
keys/operator-NAME.pem and the next root, signed by 2 of the 3 root keys,
naming it. 'fleet init' already made the operator 'admin'. Nodes learn of
the new operator at their next refresh (any push, or a pull).

examples:
  undistro fleet operator alice --fleet ~/fleet
"""

RUN_HELP = """\
Send a signed action to the fleet through Serf: 'converge' (a full check
now), 'rollback' (the previous generation of kegs) or 'restart SERVICE'.
The action carries a sequence number, an issue and an expiry time, and is
signed by an operator key the fleet root authorises (--as NAME, default
admin). Nodes refuse a replay, an expired action or an unknown signer, and
act only if they hold every --to tag.

examples:
  undistro fleet run converge --fleet ~/fleet
  undistro fleet run restart nginx --to web --fleet ~/fleet --as alice
exit status: 0 sent, 1 Serf unreachable, 2 bad input
"""

ROTATE_HELP = """\
Give an online role (targets, snapshot or timestamp) a new key, for a key
that leaked or is retired: writes the next root, signed by 2 of the 3 root
keys, naming the new key and revoking the old, and re-signs. Nodes take
the new root at their next pull or announcement and then refuse anything
the old key signs.

examples:
  undistro fleet rotate timestamp --fleet ~/fleet
"""

PULL_HELP = """\
Fetch the newest policy revision meant for this node from plain sources
(the fallback when gossip fails: a directory such as a mirror of the
fleet's repo/, or an http(s) URL of one), verify every file against the
trusted root (signatures, thresholds, versions, expiry, hashes), unpack it
and apply it as 'undistro apply' would. A revision at or below the one
applied last is refused as a replay; refusals go to the journal
(undistro log --resource fleet:revision).

examples:
  undistro fleet pull --from /mnt/fleet/repo
  undistro fleet pull --from https://mirror.example/fleet --tag web --root /tmp/n1
exit status: 0 applied or nothing newer, 1 a promise failed or no source
answered, 2 refused (verification failed) or bad input
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
    group = command_group(
        sub, "fleet", "keys, signed revisions and actions, members, status", FLEET_HELP
    )
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
    p.set_defaults(func=_one_line(cmd_members))

    p = group.add_parser(
        "init", help="create a fleet's keys and root", description=INIT_HELP, formatter_class=_RAW
    )
    p.add_argument("fleet_dir", metavar="DIR")
    p.set_defaults(func=_one_line(cmd_init))

    p = group.add_parser(
        "push",
        help="sign and announce a policy revision",
        description=PUSH_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("policy_dir", metavar="POLICY_DIR")
    p.add_argument("--fleet", required=True, metavar="DIR", help="the fleet directory (fleet init)")
    p.add_argument("--to", default="", metavar="TAG[,TAG]", help="only nodes with all these tags")
    p.add_argument("--rpc", metavar="HOST:PORT", help="the local Serf agent's RPC address")
    p.add_argument("--no-announce", action="store_true", help="sign only; do not gossip")
    p.set_defaults(func=_one_line(cmd_push))

    p = group.add_parser(
        "status", help="ask every node how it is", description=STATUS_HELP, formatter_class=_RAW
    )
    p.add_argument("--rpc", metavar="HOST:PORT", help="the local Serf agent's RPC address")
    p.add_argument("--tag", action="append", default=[], metavar="KEY=REGEX", help="filter by tag")
    p.add_argument("--timeout", type=float, default=3.0, metavar="SECONDS", help="default 3")
    p.add_argument("--json", action="store_true", help="one JSON object per node")
    p.set_defaults(func=_one_line(cmd_status))

    p = group.add_parser(
        "operator",
        help="authorise an operator key",
        description=OPERATOR_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--fleet", required=True, metavar="DIR", help="the fleet directory (fleet init)")
    p.set_defaults(func=_one_line(cmd_operator))

    p = group.add_parser(
        "run", help="send a signed action to the fleet", description=RUN_HELP, formatter_class=_RAW
    )
    p.add_argument("kind", choices=("converge", "rollback", "restart"))
    p.add_argument("service", nargs="?", default="", metavar="SERVICE")
    p.add_argument("--fleet", required=True, metavar="DIR", help="the fleet directory (fleet init)")
    p.add_argument("--as", dest="operator", default="admin", metavar="NAME", help="default admin")
    p.add_argument("--to", default="", metavar="TAG[,TAG]", help="only nodes with all these tags")
    p.add_argument("--valid-for", type=int, default=600, metavar="SECONDS", help="default 600")
    p.add_argument("--rpc", metavar="HOST:PORT", help="the local Serf agent's RPC address")
    p.set_defaults(func=_one_line(cmd_run))

    p = group.add_parser(
        "rotate", help="replace an online role's key", description=ROTATE_HELP, formatter_class=_RAW
    )
    p.add_argument("role", choices=("targets", "snapshot", "timestamp"))
    p.add_argument("--fleet", required=True, metavar="DIR", help="the fleet directory (fleet init)")
    p.set_defaults(func=_one_line(cmd_rotate))

    p = group.add_parser(
        "trust",
        help="trust a fleet's root on this node",
        description=TRUST_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("root_file", metavar="ROOT.json")
    add_root_options(p)
    p.set_defaults(func=_one_line(cmd_trust))

    p = group.add_parser(
        "pull",
        help="fetch, verify and apply the newest revision",
        description=PULL_HELP,
        formatter_class=_RAW,
    )
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="SOURCE",
        help="a fleet repo directory or URL (repeatable: tried in order)",
    )
    p.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="a node tag for this run (repeatable)",
    )
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary line")
    p.add_argument("--no-diff", action="store_true", help="do not show file diffs")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="fail at once if another run holds the state's run lock (default: wait)",
    )
    add_root_options(p)
    p.set_defaults(func=_one_line(cmd_pull))


def _one_line(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A file-system fault in a fleet command is one line, not a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except OSError as exc:
            where = f"{exc.filename}: " if exc.filename else ""
            raise FleetError(f"{where}{exc.strerror or exc}") from None

    return run


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


def cmd_init(args: argparse.Namespace) -> int:
    from undistro.fleet._publish import init_fleet

    root = init_fleet(args.fleet_dir)
    keys = os.path.join(args.fleet_dir, "keys")
    print(f"fleet created in {args.fleet_dir}")
    print(f"  trust on every node:  undistro fleet trust {root}")
    print(f"  root keys (2 of 3 sign a new root): {keys}/root-[123].pem - move them offline")
    print(f"  online keys used by push: {keys}/targets.pem snapshot.pem timestamp.pem")
    return 0


def cmd_push(args: argparse.Namespace) -> int:
    from undistro.fleet._bundle import make_bundle
    from undistro.fleet._publish import push

    to = ",".join(t.strip() for t in args.to.split(",") if t.strip())
    bundle = make_bundle(args.policy_dir)
    pushed = push(args.fleet, bundle.data, to=to)
    print(
        f"revision {pushed.revision}: {bundle.files} files, sha256 {pushed.sha256[:16]}, "
        f"for {to or 'every node'}; announcement {len(pushed.announcement)} bytes"
    )
    if args.no_announce:
        return 0
    import asyncio

    from undistro.fleet import SerfClient, SerfError

    async def announce() -> None:
        async with await SerfClient.connect(rpc_address(args.rpc)) as client:
            await client.user_event(ANNOUNCE_EVENT, pushed.announcement)

    try:
        asyncio.run(announce())
    except SerfError as exc:
        print(
            f"undistro: pushed revision {pushed.revision} but did not announce it: {exc}",
            file=sys.stderr,
        )
        return 1
    print(f"announced as Serf user event '{ANNOUNCE_EVENT}'")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    import asyncio
    import json

    from undistro.fleet import SerfClient
    from undistro.fleet._member import STATUS_QUERY

    if not 0 < args.timeout <= 60:
        raise UsageError("--timeout must be between 0 and 60 seconds")
    tags = _tag_filter(args.tag)
    address = rpc_address(args.rpc)

    async def ask() -> tuple[dict[str, bytes], list[str], list[str]]:
        async with await SerfClient.connect(address) as client:
            members = await client.members(tags)
            alive = [m.name for m in members if m.status == "alive"]
            failed = [m.name for m in members if m.status == "failed"]
            answers: dict[str, bytes] = {}
            async for reply in client.query(STATUS_QUERY, timeout=args.timeout, tags=tags):
                answers[reply.node] = reply.payload
            return answers, alive, failed

    answers, alive, failed = asyncio.run(ask())
    rows: dict[str, dict[str, object]] = {}
    for node, payload in answers.items():
        try:
            value = json.loads(payload)
            rows[node] = value if isinstance(value, dict) else {"error": "not an object"}
        except ValueError:
            rows[node] = {"error": "unreadable answer"}
    silent = sorted(set(alive) - set(rows))
    dead = sorted(set(failed) - set(rows))
    if args.json:
        for node in sorted(rows):
            sys.stdout.write(json.dumps({"node": node, **rows[node]}, sort_keys=True) + "\n")
        for node in silent:
            sys.stdout.write(json.dumps({"node": node, "answered": False}) + "\n")
        for node in dead:
            sys.stdout.write(json.dumps({"node": node, "answered": False, "failed": True}) + "\n")
    else:
        width = max([len(n) for n in [*rows, *silent, *dead]] + [4])
        print(
            f"{'NODE':<{width}}  {'REVISION':<8}  {'KEPT':>5}  {'REPAIRED':>8}  {'FAILED':>6}"
            f"  {'SERVICES':>8}  {'RSS MB':>6}  LAST ERROR"
        )
        for node in sorted(rows):
            r = rows[node]
            up, down = r.get("services_up", 0), r.get("services_failed", 0)
            print(
                f"{node:<{width}}  {r.get('revision', '-')!s:<8}  {r.get('kept', '-')!s:>5}"
                f"  {r.get('repaired', '-')!s:>8}  {r.get('failed', '-')!s:>6}"
                f"  {f'{up} up' + (f' {down} failed' if down else ''):>8}"
                f"  {r.get('rss_mb', '-')!s:>6}  {r.get('last_error') or r.get('error') or '-'}"
            )
        for node in silent:
            print(f"{node:<{width}}  (alive, did not answer within {args.timeout:g} s)")
        for node in dead:
            print(f"{node:<{width}}  (failed: Serf cannot reach it)")
        answered = len(rows)
        print(f"{answered} answered, {len(silent)} silent, {len(dead)} failed")
    return 1 if silent or dead else 0


def cmd_operator(args: argparse.Namespace) -> int:
    from undistro.fleet._publish import add_operator

    keyid = add_operator(args.fleet, args.name)
    print(f"operator {args.name}: key {keyid[:16]}, authorised by the next root")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    import asyncio

    from undistro.fleet import SerfClient, SerfError
    from undistro.fleet._actions import ACTION_EVENT, sign_action
    from undistro.fleet._publish import load_operator

    to = [t.strip() for t in args.to.split(",") if t.strip()]
    address = rpc_address(args.rpc)
    signer, sequence = load_operator(args.fleet, args.operator)
    data = sign_action(
        signer, args.kind, args.service, to=to, sequence=sequence, valid_for=args.valid_for
    )

    async def send() -> None:
        async with await SerfClient.connect(address) as client:
            await client.user_event(ACTION_EVENT, data)

    try:
        asyncio.run(send())
    except SerfError as exc:
        print(f"undistro: action not sent: {exc}", file=sys.stderr)
        return 1
    what = f"{args.kind} {args.service}".strip()
    where = ",".join(to) or "every node"
    print(f"sent {what} #{sequence} as {args.operator} to {where} ({len(data)} bytes)")
    return 0


def cmd_rotate(args: argparse.Namespace) -> int:
    from undistro.fleet._publish import rotate_key

    path = rotate_key(args.fleet, args.role)
    print(f"new {args.role} key; the next root is {path}")
    return 0


def cmd_trust(args: argparse.Namespace) -> int:
    from undistro.fleet._receive import install_root

    session = open_session(args)
    try:
        fd = os.open(args.root_file, os.O_RDONLY | os.O_NONBLOCK)  # a FIFO must not block
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise UsageError(f"{args.root_file}: not a regular file")
            data = f.read(1024 * 1024)
    except OSError as exc:
        raise UsageError(f"{args.root_file}: {exc.strerror}") from None
    install_root(session.state_dir, data)
    print(f"trusting the fleet root {args.root_file} under {session.state_dir}")
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    import time

    from undistro.commands.core import cmd_apply
    from undistro.errors import PolicyError
    from undistro.fleet._receive import RevisionRefused, mark_applied, pull
    from undistro.state import JournalEntry, StateStore

    session = open_session(args)
    store = StateStore(session.state_dir)
    run = f"fleet-pull-{os.getpid()}-{int(time.time())}"

    def journal(outcome: str, actions: tuple[str, ...] = (), error: str | None = None) -> None:
        entry = JournalEntry(
            time.time(), run, "fleet:revision", outcome, "fleet pull", actions, error=error
        )
        store.commit(journal=[entry])

    try:
        revision = pull(session.state_dir, args.sources, tags=sorted(session.node.tags))
    except RevisionRefused as exc:
        journal("refused", error=str(exc))
        raise UsageError(f"fleet revision refused: {exc}") from None
    if revision is None:
        print("no newer revision for this node")
        return 0
    for liar in revision.liars:
        journal("refused", (f"source {liar}",), error="served a bundle that failed verification")
        print(f"undistro: source {liar} served a bad bundle: passed over", file=sys.stderr)
    print(f"revision {revision.number} verified (sha256 {revision.sha256[:16]}); applying")
    args.policy_dir = revision.policy_dir
    try:
        code = cmd_apply(args)
    except PolicyError as exc:
        journal("refused", (f"revision {revision.number}",), error=f"invalid policy: {exc}")
        raise
    mark_applied(session.state_dir, revision)
    journal("repaired" if code == 0 else "failed", (f"applied revision {revision.number}",))
    return code
