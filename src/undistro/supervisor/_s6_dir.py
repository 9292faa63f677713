"""Render a :class:`ServiceSpec` as an s6 service directory.

Everything policy says is expressed in files s6-supervise reads itself, so
the service keeps its restart policy, crash-loop limit and stop timeout even
while the agent is down:

``run``               exports the environment, records its pid (= the
                      process group: s6 runs it in a new session), then
                      execs the command, optionally as another user.
``finish``            SIGKILLs what is left of the group, then applies the
                      restart policy: exit 125 (s6's "permanent failure",
                      event ``O``) for a clean exit under on-failure, or
                      through ``s6-permafailon`` once the crash-loop limit is
                      hit; otherwise sleeps the backoff before s6 respawns.
``notification-fd``   readiness = notify: the service writes a newline to fd 3;
                      readiness = none: ``run`` writes it just before the
                      exec (and closes fd 3), see :func:`render_run`.
``timeout-kill``      stop timeout; then SIGKILL to the process, and
                      ``finish`` kills the rest of its group (s6 after
                      2.13.2 does that itself with ``flag-timeout-killpg``).
``down-signal``       the stop signal.
``down``              always: s6 never starts a service on its own; the
                      agent converges what it requires first, then says ``u``.
``log/run``           s6-log with size rotation, fed by s6-svscan's pipe.
"""

from __future__ import annotations

import grp
import hashlib
import json
import pwd
import shlex
import signal
from dataclasses import asdict

from undistro.supervisor._s6_status import DTALLY_ENTRY
from undistro.supervisor._spec import ServiceSpec

NOTIFICATION_FD = 3
PGID_FILE = "undistro-pgid"
SPEC_FILE = "undistro-spec"
# Every death counts towards the crash loop except ones the agent asked for (those
# happen with want-up cleared, so s6 never reads finish's verdict for them).
_CRASHES = (
    "1-255,SIGHUP,SIGINT,SIGQUIT,SIGILL,SIGTRAP,SIGABRT,SIGBUS,SIGFPE,SIGKILL,"
    "SIGUSR1,SIGSEGV,SIGUSR2,SIGPIPE,SIGALRM,SIGTERM"
)


def spec_digest(spec: ServiceSpec) -> str:
    """A stable hash of everything in the spec: equal digests mean no restart needed."""
    blob = json.dumps(asdict(spec), sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _sh(words: tuple[str, ...] | list[str]) -> str:
    return " ".join(shlex.quote(w) for w in words)


def _identity(spec: ServiceSpec) -> list[str]:
    if spec.user is None and spec.group is None:
        return []
    if spec.group is None:
        return ["s6-setuidgid", spec.user or "root"]
    pw = pwd.getpwnam(spec.user or "root")
    gid = grp.getgrnam(spec.group).gr_gid
    return ["s6-applyuidgid", "-u", str(pw.pw_uid), "-g", str(gid), "-G", ""]


def render_run(spec: ServiceSpec) -> str:
    """``./run``. For readiness = none it reports ready itself at the exec:
    s6-supervise 2.11 throttles a respawn to one second after the last
    readiness, or — with no notification fd at all — to one second after
    the death, which would make every crash restart cost over a second."""
    lines = ["#!/bin/sh", "exec 2>&1", f"echo $$ > {PGID_FILE}"]
    lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(spec.environment.items())]
    if spec.working_directory:
        lines.append(f"cd {shlex.quote(spec.working_directory)} || exit 111")
    if spec.readiness == "none":
        lines.append(f"echo >&{NOTIFICATION_FD}; exec {NOTIFICATION_FD}>&-")
    lines.append("exec " + _sh([*_identity(spec), *spec.argv]))
    return "\n".join(lines) + "\n"


def backoff_delays(spec: ServiceSpec) -> list[float]:
    """Delay before the n-th consecutive restart (n = index + 1), doubling to the cap."""
    delays: list[float] = []
    d = spec.restart_delay
    for _ in range(max(spec.crash_loop_limit, 1)):
        delays.append(min(d, spec.restart_delay_max))
        d *= 2
    return delays


def render_finish(spec: ServiceSpec) -> str:
    lines = [
        "#!/bin/sh",
        "# $1: exit code of ./run (256 if killed by a signal); $2: the signal",
        "code=$1",
        f"pg=; {{ read -r pg < {PGID_FILE}; }} 2>/dev/null",
        '[ -n "$pg" ] && kill -KILL "-$pg" 2>/dev/null',
        f": > {PGID_FILE}",  # a builtin: no process for the cleanup
    ]
    if spec.restart == "never" or spec.readiness == "exit":
        lines.append("exit 0")  # started with "o": s6 will not respawn it anyway
        return "\n".join(lines) + "\n"
    lines += [
        "# a stop the agent asked for (want-up cleared): no verdict, no backoff",
        "# (the flags are the last byte of the status file, whichever its size)",
        "set -- $(od -An -tu1 -v supervise/status)",
        'eval "f=\\${$#}"',
        "[ $(( f & 4 )) = 0 ] && exit 0",
    ]
    if spec.restart == "on-failure":
        lines.append('[ "$code" = 0 ] && exit 125')
    cases = " ".join(f"{n + 1}) d={d:g} ;;" for n, d in enumerate(backoff_delays(spec)))
    lines += [
        f"n=$(( $(wc -c < supervise/death_tally) / {DTALLY_ENTRY} ))",
        f"case $n in {cases} *) d={spec.restart_delay_max:g} ;; esac",
        f"exec s6-permafailon {max(1, round(spec.crash_loop_window))} "
        f'{max(spec.crash_loop_limit, 1)} {_CRASHES} sleep "$d"',
    ]
    return "\n".join(lines) + "\n"


def render_log_run(spec: ServiceSpec, logdir: str) -> str:
    size = max(4096, spec.log_max_bytes)
    return f"#!/bin/sh\nexec s6-log -b -- n{spec.log_keep} s{size} T {shlex.quote(logdir)}\n"


def render(spec: ServiceSpec, logdir: str) -> dict[str, tuple[str, int]]:
    """Every file of the service directory: relative path -> (content, mode).

    Example: ``render(ServiceSpec("web", ("httpd", "-f")), "/var/log/web")["run"]``.
    """
    files: dict[str, tuple[str, int]] = {
        "run": (render_run(spec), 0o755),
        "finish": (render_finish(spec), 0o755),
        "down": ("", 0o644),
        "down-signal": (f"{int(signal.Signals[spec.stop_signal])}\n", 0o644),
        "timeout-kill": (f"{max(1, round(spec.stop_timeout * 1000))}\n", 0o644),
        "flag-timeout-killpg": ("", 0o644),
        "timeout-finish": (f"{round((spec.restart_delay_max + 5) * 1000)}\n", 0o644),
        "max-death-tally": (f"{max(spec.crash_loop_limit, 1)}\n", 0o644),
        "log/run": (render_log_run(spec, logdir), 0o755),
        SPEC_FILE: (spec_digest(spec) + "\n", 0o644),
    }
    if spec.readiness in ("notify", "none"):
        files["notification-fd"] = (f"{NOTIFICATION_FD}\n", 0o644)
    return files
