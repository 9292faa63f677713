"""``undistro agent``, ``undistro status``, ``undistro reload``.

The daemon's machinery (asyncio, the engine) is imported inside ``agent``
only; ``status`` and ``reload`` speak to the control socket with a plain
socket and start in a few milliseconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from undistro.commands._session import add_policy_options, add_root_options, open_session
from undistro.commands._time import stamp
from undistro.errors import UsageError

AGENT_EPILOG = """\
examples:
  undistro agent /srv/policy                  converge, then repair on every event
  undistro agent examples/demo --root /tmp/r  the same, under a test root
  kill -HUP $(pidof undistro)                 re-read the policy (or: undistro reload)
  undistro agent --init /srv/policy           as PID 1 of a container: reap, forward signals

At start the agent converges everything (changes made while it was down are
caught there), then sleeps: it wakes only when inotify reports a change to a
managed path or to the policy, on a signal, or on a control-socket request.
Logs go to stderr; SIGTERM exits cleanly with status 0. A policy change is
validated in full: if it is invalid the agent keeps the previous policy, logs
the error and journals it. 'audit_every' (seconds) in the node config adds a
periodic full check; it is off by default.
"""

STATUS_EPILOG = """\
examples:
  undistro status                    the running agent: promises, events, memory
  undistro status --root /tmp/r --all    every resource, one per line
  undistro status --json             the agent's raw snapshot

Without a running agent, status prints the last journal entries instead.
"""

RELOAD_EPILOG = """\
examples:
  undistro reload                    make the agent re-read its policy now
  undistro reload --root /tmp/r

Exit status 0 if the new policy is in force, 2 if it was rejected (the agent
keeps the previous one), 1 if no agent runs.
"""


COMMANDS = ("agent", "status", "reload")
"""The commands ``register`` adds (the CLI builds only what a run needs)."""


def register(sub: Any) -> None:
    agent = sub.add_parser(
        "agent",
        help="run the event-driven agent (foreground)",
        description="Converge on POLICY_DIR, then repair drift as events arrive.",
        epilog=AGENT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_policy_options(agent)
    agent.add_argument(
        "--init",
        action="store_true",
        help="act as PID 1 too: run the agent in a child, reap every zombie, forward "
        "SIGTERM/SIGINT/SIGHUP, and exit with the agent's status",
    )
    agent.set_defaults(func=run_agent)

    status = sub.add_parser(
        "status",
        help="what the running agent promises, repairs and costs",
        description="Show the running agent's promises, event counts, uptime and memory.",
        epilog=STATUS_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_root_options(status)
    status.add_argument("--all", action="store_true", help="list every resource")
    status.add_argument("--json", action="store_true", help="print the raw snapshot")
    status.set_defaults(func=run_status)

    reload = sub.add_parser(
        "reload",
        help="make the running agent re-read its policy",
        description="Ask the running agent to re-validate and, if valid, apply its policy.",
        epilog=RELOAD_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_root_options(reload)
    reload.set_defaults(func=run_reload)


def run_agent(args: argparse.Namespace) -> int:
    if getattr(args, "init", False):
        from undistro.supervisor._init import run_as_init

        args.init = False
        return run_as_init(lambda: run_agent(args))
    # The agent speaks no TLS (its socket is local; the fleet talks to a
    # loopback Serf). asyncio imports ssl only if it can, and it weighs ~4 MB
    # of a 35 MB budget: a None entry makes that import fail quietly. Only
    # here, in the daemon's own process, and only if nothing loaded it yet.
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
    import asyncio

    from undistro.agent import Agent, Converger

    session = open_session(args)
    policy_dir = args.policy_dir or session.node.policy
    if session.node.fleet:
        from undistro.fleet import policy_for_agent

        policy_dir = args.policy_dir or policy_for_agent(
            session.state_dir, session.node.fleet, session.node.policy
        )
    if not policy_dir:
        raise UsageError("no POLICY_DIR given and the node config names none ('policy')")
    converger = Converger(
        policy_dir,
        root=session.root,
        state_dir=session.state_dir,
        node_config=args.node_config,
        tags=tuple(args.tag),
    )
    code = asyncio.run(Agent(converger, audit_every=session.node.audit_every).run())
    # Stopped cleanly: the state is committed and closed, the socket gone.
    # Tearing down the interpreter would free every object of the policy
    # one by one (0.1-0.2 s at 10,000 resources) between SIGTERM and exit.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def run_status(args: argparse.Namespace) -> int:
    from undistro.agent.client import socket_path, try_agent

    state_dir = open_session(args).state_dir
    reply = try_agent(state_dir, {"op": "status", "all": args.all or args.json}, timeout=30)
    if reply is None:
        return _status_from_journal(state_dir, socket_path(state_dir), args.json)
    if args.json:
        import json

        print(json.dumps(reply, indent=2, sort_keys=True))
        return 0
    for line in format_status(reply, every=args.all):
        print(line)
    return 0


def run_reload(args: argparse.Namespace) -> int:
    from undistro.agent.client import AgentError, socket_path, try_agent

    state_dir = open_session(args).state_dir
    reply = try_agent(state_dir, {"op": "reload"})
    if reply is None:
        raise AgentError(f"no agent runs (no socket at {socket_path(state_dir)})")
    if not reply.get("ok"):
        from undistro.errors import PolicyError

        raise PolicyError(str(reply.get("error")).splitlines())
    print(f"policy in force: {reply['resources']} resources")
    return 0


def apply_through_agent(
    state_dir: str, policy_dir: str | None, *, quiet: bool, diff: bool
) -> int | None:
    """Have the running agent apply (so the two never race); ``None`` if no
    agent runs and the caller should apply itself. Returns the exit status."""
    from undistro.agent.client import try_agent

    request = {"op": "apply", "policy": policy_dir, "quiet": quiet, "diff": diff}
    reply = try_agent(state_dir, request)
    if reply is None:
        return None
    if not reply.get("ok"):
        from undistro.errors import PolicyError

        raise PolicyError(str(reply.get("error")).splitlines())
    print(reply["report"], end="")
    return int(reply["exit"])


def format_status(reply: dict[str, Any], *, every: bool = False) -> list[str]:
    """A person's view of the agent's snapshot."""
    policy, events, promises = reply["policy"], reply["events"], reply["promises"]
    states = ", ".join(f"{n} {state}" for state, n in sorted(promises.items())) or "none checked"
    lines = [
        f"agent pid {reply['pid']}, up {_duration(reply['uptime_s'])}, "
        f"RSS {reply['rss_bytes'] / 2**20:.1f} MB",
        f"policy {policy['dir']} ({policy['name']}): {policy['resources']} resources: {states}",
        f"events: {events['events']} inotify events in {events['wakeups']} wakeups, "
        f"{events['checks']} checks, {events['repairs']} repairs, {events['failures']} failures, "
        f"{events['overflows']} overflows, {events['rescans']} rescans",
        f"watching {events['watched_dirs']} directories"
        + (f", {events['unwatched_keys']} resources unwatched" if events["unwatched_keys"] else ""),
    ]
    if policy["last_error"]:
        lines.append(f"policy rejected, previous kept: {policy['last_error'].splitlines()[0]}")
    for rid, promise in sorted(reply["resources"].items()):
        if every or promise["state"] != "kept":
            when = promise.get("last_repair")
            repaired = time.strftime("%H:%M:%S", time.localtime(when)) if when else "-"
            detail = promise.get("error") or promise.get("cause") or ""
            lines.append(f"  {promise['state']:<8} {rid}  last repair {repaired}  {detail}")
    return lines


def _status_from_journal(state_dir: str, sock: str, as_json: bool) -> int:
    from undistro.state import StateStore

    entries = StateStore(state_dir).journal(limit=20)
    if as_json:
        import json

        print(json.dumps({"agent": None, "journal": [e._asdict() for e in entries]}, default=str))
        return 0
    print(f"no agent runs (no socket at {sock}); last journal entries:")
    for e in entries:
        print(f"  {stamp(e.time)} {e.outcome:<9} {e.resource}  ({e.cause})")
    if not entries:
        print("  (none)")
    return 0


def _duration(seconds: float) -> str:
    s = int(seconds)
    return (
        f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s"
        if s >= 3600
        else f"{s // 60}m{s % 60:02d}s"
    )
