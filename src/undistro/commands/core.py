"""``plan``, ``apply``, ``log`` and ``why``: the declarative core's commands."""

from __future__ import annotations

import argparse
import re
import sys
import time

from undistro.commands._session import add_policy_options, add_root_options, open_session
from undistro.commands._time import stamp
from undistro.errors import UsageError

_RAW = argparse.RawDescriptionHelpFormatter

PLAN_HELP = """\
Show what apply would change, without changing anything: each resource that
is not kept, the actions it needs and, for files, a unified diff.

examples:
  undistro plan examples/demo --root /tmp/demo-root
  undistro plan --tag web              # the node config names the policy
"""

APPLY_HELP = """\
Converge the machine on the policy. The whole policy is validated first; if
anything is wrong nothing is touched. Each resource ends kept, repaired,
failed or skipped (a dependency failed); the journal records every change.

examples:
  undistro apply examples/demo --root /tmp/demo-root
  undistro apply /srv/policy --tag web --tag eu
  undistro apply /srv/policy --no-wait  # fail at once if another run is going

One run changes a root at a time: an apply started while another apply (or
the agent's run) is changing the same root waits for it, saying for whom
(or, with --no-wait, fails naming its pid).
exit status: 0 converged, 1 a promise failed or was skipped (or the state
store could not be written), 2 invalid policy
"""

LOG_HELP = """\
Show the journal: every repair, failure and skip, with its cause.

examples:
  undistro log --root /tmp/demo-root
  undistro log --resource 'file:/etc/*' --since 2h
  undistro log --since 2026-11-29T08:00 --limit 200
"""

WHY_HELP = """\
Say which resource manages a path (as of the last apply), from which policy
file, and the last changes made to it with their causes.

examples:
  undistro why /etc/motd --root /tmp/demo-root
"""


COMMANDS = ("plan", "apply", "log", "why")
"""The commands ``register`` adds (the CLI builds only what a run needs)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "plan", help="show what would change", description=PLAN_HELP, formatter_class=_RAW
    )
    add_policy_options(p)
    p.add_argument("--no-diff", action="store_true", help="do not show file diffs")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser(
        "apply", help="converge on the policy", description=APPLY_HELP, formatter_class=_RAW
    )
    add_policy_options(p)
    p.add_argument("--no-diff", action="store_true", help="do not show file diffs")
    p.add_argument("--quiet", "-q", action="store_true", help="print only the summary line")
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="if another apply or the agent's run is changing this root, fail at once "
        "(naming its pid) instead of waiting for it",
    )
    p.set_defaults(func=cmd_apply)

    p = sub.add_parser("log", help="show the journal", description=LOG_HELP, formatter_class=_RAW)
    add_root_options(p)
    p.add_argument(
        "--resource",
        "-r",
        metavar="ID",
        help="only this resource id (a trailing * matches a prefix)",
    )
    p.add_argument("--since", metavar="WHEN", help="ISO time, or an age like 30m, 2h, 7d")
    p.add_argument("--until", metavar="WHEN", help="ISO time, or an age like 30m, 2h, 7d")
    p.add_argument(
        "--limit", "-n", type=int, default=50, metavar="N", help="at most N entries (default 50)"
    )
    p.add_argument("--output", action="store_true", help="also show captured command output")
    p.set_defaults(func=cmd_log)

    p = sub.add_parser(
        "why", help="which resource manages a path", description=WHY_HELP, formatter_class=_RAW
    )
    p.add_argument(
        "path", metavar="PATH", help="an absolute path as the policy names it (not rebased)"
    )
    add_root_options(p)
    p.add_argument(
        "--limit",
        "-n",
        type=int,
        default=5,
        metavar="N",
        help="show the last N changes (default 5)",
    )
    p.set_defaults(func=cmd_why)


def cmd_plan(args: argparse.Namespace) -> int:
    from undistro.commands._hosted import run_policy
    from undistro.commands._report import print_run

    session = open_session(args)
    policy = session.policy(args.policy_dir)
    summary, _ = run_policy(session, policy, cause="plan", dry_run=True)
    print_run(summary, sys.stdout, show_diffs=not args.no_diff, color=sys.stdout.isatty())
    return 0 if summary.count("failed") == 0 else 1


def cmd_apply(args: argparse.Namespace) -> int:
    from undistro.commands._report import print_run, summary_line
    from undistro.commands.agent import apply_through_agent

    session = open_session(args)
    policy_dir = args.policy_dir or session.node.policy
    agent_exit = apply_through_agent(
        session.state_dir, policy_dir, quiet=args.quiet, diff=not args.no_diff
    )
    if agent_exit is not None:
        return agent_exit  # a running agent applied it: no race with its repairs
    from undistro.commands._hosted import run_policy
    from undistro.errors import UnrecordedRunError

    policy = session.policy(args.policy_dir)
    unrecorded: UnrecordedRunError | None = None
    try:
        with session.changing(wait=not args.no_wait):
            summary, services = run_policy(session, policy, cause="apply (command line)")
    except UnrecordedRunError as exc:  # say what was done, then why it is not recorded
        unrecorded, summary, services = exc, exc.summary, []  # type: ignore[assignment]
    if args.quiet:
        print(summary_line(summary))
    else:
        print_run(summary, sys.stdout, show_diffs=not args.no_diff, color=sys.stdout.isatty())
    for line in services:
        print(line)
    if unrecorded is not None:
        raise unrecorded
    return 0 if summary.ok else 1


def cmd_log(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise UsageError("--limit must be at least 1")
    session = open_session(args)
    entries = session.store().journal(
        resource=args.resource,
        since=parse_when(args.since) if args.since else None,
        until=parse_when(args.until) if args.until else None,
        limit=args.limit,
    )
    if not entries:
        print(
            "no journal entries"
            + (" match" if args.resource or args.since or args.until else " yet")
        )
        return 0
    for e in entries:
        when = stamp(e.time)
        print(f"{when}  {e.outcome:<8} {e.resource}  ({e.cause})")
        for action in e.actions:
            print(f"    {action}")
        if e.before or e.after:
            print(f"    before: {e.before or '-'}")
            print(f"    after:  {e.after or '-'}")
        if e.error:
            print(f"    error: {e.error}")
        if args.output and e.output:
            for line in e.output.rstrip().splitlines():
                print(f"    | {line}")
    return 0


def cmd_why(args: argparse.Namespace) -> int:
    if not args.path.startswith("/"):
        raise UsageError(f"{args.path}: give the absolute path as the policy names it")
    session = open_session(args)
    store = session.store()
    rebased = (session.root.rstrip("/") + args.path) if session.root != "/" else args.path
    found = store.managed_by(rebased.rstrip("/") or "/")
    if found is None:
        print(f"{args.path} is not managed by undistro (as of the last apply under {session.root})")
        return 1
    rid, source = found
    print(f"{args.path} is managed by {rid}, declared in {source}")
    entries = store.journal(resource=rid, limit=args.limit)
    if not entries:
        print("  no change recorded: it has been kept since it was first managed")
    for e in entries:
        when = stamp(e.time)
        what = "; ".join(e.actions) or e.error or ""
        print(f"  {when}  {e.outcome:<8} {what}  (cause: {e.cause})")
    return 0


_AGE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_when(text: str) -> float:
    """An age ('30m', '2h', '7d') or an ISO 8601 time, as a Unix time."""
    match = _AGE.match(text.strip())
    if match:
        return time.time() - int(match.group(1)) * _UNIT[match.group(2)]
    try:
        import datetime

        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise UsageError(
            f"cannot read time {text!r}: use an age like 2h or an ISO time like 2026-11-29T08:00"
        ) from None
