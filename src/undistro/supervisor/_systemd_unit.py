"""Render a :class:`ServiceSpec` as a systemd unit file (pure).

A unit *file* rather than a transient unit: it is what an operator expects
to find with ``systemctl cat``, it survives the agent and a daemon-reload,
and an unchanged file means no reload and no restart.

The restart policy is systemd's own (Restart=, RestartSec=, the start limit
as the crash-loop limit), so it holds while the agent is down.
``RestartSteps``/``RestartMaxDelaySec`` give the exponential backoff on
systemd ≥ 254; older ones (Debian 12 has 252) ignore them with a warning and
restart every ``restart_delay``.
"""

from __future__ import annotations

import re

from undistro.errors import ValidationError
from undistro.supervisor._spec import ServiceSpec

PREFIX = "undistro-"
_TYPES = {"notify": "notify", "exit": "oneshot", "none": "exec"}
_RESTART = {"always": "always", "on-failure": "on-failure", "never": "no"}


_UNIT_CHARS = re.compile(r"[A-Za-z0-9:_.@-]+")
_UNIT_NAME_MAX = 255  # systemd's UNIT_NAME_MAX (256) less the NUL


def unit_name(service: str) -> str:
    """``web`` -> ``undistro-web.service``: undistro's units never clash with the distro's.

    Raises ValidationError for a name systemd would refuse in a unit name.
    """
    if not _UNIT_CHARS.fullmatch(service):
        raise ValidationError(
            "name", f"{service!r}: systemd unit names allow only A-Z a-z 0-9 :_.@-"
        )
    unit = f"{PREFIX}{service}.service"
    if len(unit) > _UNIT_NAME_MAX:
        most = _UNIT_NAME_MAX - len(unit) + len(service)
        raise ValidationError(
            "name", f"{len(service)} characters: at most {most} under systemd (unit names ≤ 255)"
        )
    return unit


def quote(word: str, *, command: bool = True) -> str:
    """One word in unit-file syntax, with no specifier or variable expansion:
    ``a "b"`` -> ``"a \\"b\\""``; in a command, ``$HOME`` -> ``"$$HOME"``."""
    escaped = word.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("%", "%%")
    if command:
        escaped = escaped.replace("$", "$$")
    return f'"{escaped}"'


def _seconds(value: float) -> str:
    return f"{round(value * 1000)}ms"


def render_unit(spec: ServiceSpec) -> str:
    """The unit file text.

    Example: ``render_unit(ServiceSpec("web", ("httpd", "-f"), readiness="notify"))``.
    """
    restart = "no" if spec.readiness == "exit" else _RESTART[spec.restart]
    service = [
        f"Type={_TYPES[spec.readiness]}",
        "ExecStart=" + " ".join(quote(w) for w in spec.argv),
        f"Restart={restart}",
        f"RestartSec={_seconds(spec.restart_delay)}",
        f"RestartSteps={max(spec.crash_loop_limit, 1)}",
        f"RestartMaxDelaySec={_seconds(spec.restart_delay_max)}",
        "KillMode=control-group",
        f"KillSignal={spec.stop_signal}",
        f"TimeoutStopSec={_seconds(spec.stop_timeout)}",
        "SendSIGKILL=yes",
    ]
    if spec.readiness == "notify":
        service.append("NotifyAccess=all")  # systemd-notify runs as a child of the main process
    if spec.readiness == "exit":
        service.append("RemainAfterExit=yes")
    if spec.reload_command:
        service.append("ExecReload=" + " ".join(quote(w) for w in spec.reload_command))
    elif spec.reload_signal:
        service.append(f"ExecReload=/bin/kill -{spec.reload_signal} $MAINPID")
    if spec.watchdog_sec:
        service.append(f"WatchdogSec={_seconds(spec.watchdog_sec)}")
    if spec.user:
        service.append(f"User={spec.user}")
    if spec.group:
        service.append(f"Group={spec.group}")
    if spec.working_directory:
        service.append(f"WorkingDirectory={spec.working_directory}")
    for key, value in sorted(spec.environment.items()):
        service.append("Environment=" + quote(f"{key}={value}", command=False))
    unit = [
        f"Description=undistro service {spec.name}",
        f"StartLimitIntervalSec={_seconds(spec.crash_loop_window)}",
        f"StartLimitBurst={max(spec.crash_loop_limit, 1)}",
    ]
    return "[Unit]\n" + "\n".join(unit) + "\n\n[Service]\n" + "\n".join(service) + "\n"
