"""``undistro services``, ``undistro service ACTION NAME``, ``undistro logs NAME``.

The running agent owns the services (their pidfds, notify sockets, D-Bus
subscriptions), so status and commands go through its control socket.
Without an agent, ``services`` reads what is left on disk — the builtin
backend's records checked against ``/proc``, s6's status files — and says
plainly what it cannot know; ``service`` refuses, since a one-shot process
could start a service but not supervise it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from undistro.commands._session import add_root_options, open_session
from undistro.errors import UsageError

_RAW = argparse.RawDescriptionHelpFormatter

SERVICES_HELP = """\
List the services undistro started: state, pid, uptime, restarts, readiness
and backend. Asks the running agent; without one, reads the builtin
backend's records (checked against /proc) and s6's status files.

examples:
  undistro services
  undistro services --root /tmp/r --json
"""

SERVICE_HELP = """\
Start, stop, restart or reload one service through the running agent. A start
or restart converges what the service requires first. A stopped service
whose policy says running = true is started again at the next full check
(agent start, policy change, apply): to keep it down, say running = false.

examples:
  undistro service restart web
  undistro service reload nginx --root /tmp/r
exit status: 0 done, 1 the service failed or no agent runs
"""

LOGS_HELP = """\
Show a service's log (its stdout and stderr). The builtin backend keeps
SERVICE.log in the state directory, rotated by size; s6 keeps s6-log's
'current'. systemd services log to the journal (journalctl -u undistro-NAME).

examples:
  undistro logs web
  undistro logs web -f              follow, as tail -f does
  undistro logs web -n 200 --root /tmp/r
"""


COMMANDS = ("services", "service", "logs")
"""The commands ``register`` adds (the CLI builds only what a run needs)."""


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "services", help="list supervised services", description=SERVICES_HELP, formatter_class=_RAW
    )
    add_root_options(p)
    p.add_argument("--json", action="store_true", help="print the raw snapshot")
    p.set_defaults(func=cmd_services)

    p = sub.add_parser(
        "service",
        help="start, stop, restart or reload a service",
        description=SERVICE_HELP,
        formatter_class=_RAW,
    )
    p.add_argument("action", choices=("start", "stop", "restart", "reload"))
    p.add_argument("name", metavar="NAME")
    add_root_options(p)
    p.set_defaults(func=cmd_service)

    p = sub.add_parser(
        "logs", help="show a service's log", description=LOGS_HELP, formatter_class=_RAW
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    p.add_argument(
        "-n", "--lines", type=int, default=50, metavar="N", help="last N lines (default 50)"
    )
    add_root_options(p)
    p.set_defaults(func=cmd_logs)


def cmd_services(args: argparse.Namespace) -> int:
    from undistro.agent.client import try_agent

    state_dir = open_session(args).state_dir
    reply = try_agent(state_dir, {"op": "services"}, timeout=30)
    if reply is not None and not reply.get("ok"):
        from undistro.agent.client import AgentError

        raise AgentError(str(reply.get("error")))
    source = "agent" if reply is not None else "disk"
    services = reply["services"] if reply is not None else services_on_disk(state_dir)
    if args.json:
        import json

        print(json.dumps({"source": source, "services": services}, indent=2, sort_keys=True))
        return 0
    if reply is None:
        print("no agent runs: state read from disk (what only a supervisor knows shows as '?')")
    if not services:
        print("no services")
        return 0
    print(f"{'NAME':<20} {'STATE':<9} {'PID':>7} {'UPTIME':>9} {'RESTARTS':>8} READY  BACKEND")
    for name, s in sorted(services.items()):
        pid = s.get("pid")
        uptime = s.get("uptime")
        restarts = s.get("restarts")
        ready = s.get("ready")
        print(
            f"{name:<20} {s['phase']:<9} {pid or '-':>7} "
            f"{_duration(uptime) if uptime is not None else '-':>9} "
            f"{'?' if restarts is None else restarts:>8} "
            f"{'?' if ready is None else ('yes' if ready else 'no'):<5}  "
            f"{s['backend']} ({s['readiness']})"
        )
    return 0


def services_on_disk(state_dir: str) -> dict[str, Any]:
    """What can be told without a supervisor: builtin records checked
    against /proc, s6 status files; systemd needs the bus (unknown)."""
    from undistro.supervisor._control import describe, load_record, recorded_status

    top = os.path.join(state_dir, "services")
    managed = os.path.join(top, "managed")
    try:
        names = sorted(n[:-5] for n in os.listdir(managed) if n.endswith(".json"))
    except FileNotFoundError:
        return {}
    out: dict[str, Any] = {}
    for name in names:
        found = load_record(os.path.join(managed, f"{name}.json"))
        if found is None:
            continue
        spec, kind = found
        if kind == "builtin":
            status = recorded_status(os.path.join(top, "builtin"), name)
            out[name] = describe(status, spec, kind)
            if status is None:
                out[name].update(phase="stopped", pid=None, restarts=None, ready=None)
        elif kind == "s6":
            out[name] = _s6_on_disk(os.path.join(top, "s6", "s6", name), spec.readiness)
        else:
            out[name] = {"backend": kind, "phase": "unknown", "readiness": spec.readiness}
    return out


def _s6_on_disk(path: str, readiness: str) -> dict[str, Any]:
    from undistro.supervisor._s6_status import read_status, seconds_since

    raw = read_status(path)
    if raw is None:
        return {"backend": "s6", "phase": "unknown", "readiness": readiness}
    return {
        "backend": "s6",
        "phase": "running" if raw.up else "stopped",
        "pid": raw.pid or None,
        "uptime": round(seconds_since(raw.stamp), 3) if raw.up else None,
        "restarts": None,
        "ready": raw.is_ready(readiness),
        "readiness": readiness,
    }


def cmd_service(args: argparse.Namespace) -> int:
    from undistro.agent.client import AgentError, socket_path, try_agent

    state_dir = open_session(args).state_dir
    request = {"op": "service", "action": args.action, "name": args.name}
    reply = try_agent(state_dir, request)
    if reply is None:
        raise AgentError(
            f"no agent runs (no socket at {socket_path(state_dir)}): services are "
            "supervised by 'undistro agent'"
        )
    if not reply.get("ok"):
        raise AgentError(str(reply.get("error")))
    pid = f", pid {reply['pid']}" if reply.get("pid") else ""
    print(f"service {args.name}: {reply['phase']}{pid}")
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    if args.lines < 0:
        raise UsageError("--lines must not be negative")
    state_dir = open_session(args).state_dir
    path = log_file(state_dir, args.name)
    try:
        with open(path, "rb") as f:
            _print_tail(f, args.lines)
            if args.follow:
                _follow(f, path)
    except FileNotFoundError:
        raise UsageError(f"no log for service {args.name!r} (looked for {path})") from None
    except KeyboardInterrupt:
        return 0
    return 0


def log_file(state_dir: str, name: str) -> str:
    """The current log file of service ``name``, by the backend it was started on."""
    from undistro.supervisor._control import load_record

    if not name or "/" in name or name.startswith("."):
        raise UsageError(f"not a service name: {name!r}")
    top = os.path.join(state_dir, "services")
    found = load_record(os.path.join(top, "managed", f"{name}.json"))
    kind = found[1] if found is not None else "builtin"
    if kind == "s6":
        from undistro.supervisor import S6Backend

        return S6Backend(os.path.join(top, "s6", "scan"), os.path.join(top, "s6")).log_file(name)
    if kind == "systemd":
        raise UsageError(f"service {name} runs under systemd: journalctl -u undistro-{name}")
    return os.path.join(top, "builtin", f"{name}.log")


def _print_tail(f: Any, lines: int) -> None:
    data = f.read()
    tail = data.splitlines(keepends=True)[-lines:] if lines else []
    sys.stdout.buffer.write(b"".join(tail))
    sys.stdout.flush()


def _follow(f: Any, path: str) -> None:
    """Print what is appended, woken by inotify (no polling); reopen after a rotation."""
    import select

    from undistro.events._binding import IN_CREATE, IN_MODIFY, IN_MOVED_TO, Inotify

    inotify = Inotify()
    try:
        inotify.add_watch(os.path.dirname(path), IN_MODIFY | IN_CREATE | IN_MOVED_TO)
        name = os.path.basename(path)
        while True:
            select.select([inotify.fileno()], [], [])
            events = inotify.read()
            if any(e.name == name and e.mask & (IN_CREATE | IN_MOVED_TO) for e in events):
                sys.stdout.buffer.write(f.read())  # the rest of the rotated file
                f.close()
                f = open(path, "rb")  # noqa: SIM115 - the loop owns it from here
            sys.stdout.buffer.write(f.read())
            sys.stdout.flush()
    finally:
        f.close()
        inotify.close()


def _duration(seconds: float) -> str:
    if seconds < 0:
        return "?"  # a clock set back since the stamp: unknown, not negative
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{s % 86400 // 3600:02d}h"
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s"
