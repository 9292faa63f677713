"""``[[service]]``: a long-running process, supervised by undistro, s6 or systemd.

Example::

    [[service]]
    name = "web"
    command = ["/usr/bin/python3", "-m", "http.server", "--directory", "/srv/www"]
    user = "www"
    readiness = "notify"           # running once it sends READY=1
    restart = "on-failure"         # with backoff; crash_loop_limit failures → failed
    requires = ["file:/etc/web.conf"]

    [[file]]
    path = "/etc/web.conf"
    template = "web.conf.j2"
    notify = ["service:web"]       # a changed config restarts it (or on_notify = "reload")

``running`` (default true) promises that it runs, or with false that it is
stopped. ``enabled = false`` declares it without enforcing either: it can be
started with ``undistro service start NAME`` and is left alone by checks.
A command given as a string is run by ``/bin/sh -c`` and needs
``shell = true``; a list is run as is. ``reload`` is a signal name
(``"SIGHUP"``, the default) or a command. Under ``--root`` the service runs
on the host with ``UNDISTRO_ROOT`` set and its working directory rebased.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from undistro.errors import ApplyError, ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Resource,
    Watch,
    abspath,
    boolean,
    integer,
    nonempty,
    one_of,
    owner,
    string_table,
)
from undistro.supervisor import Phase, ServiceSpec, ServiceStatus, validate_spec
from undistro.supervisor._spec import same_process

_UP = ("running", "starting", "backoff", "stopping")


def _command(raw: Any) -> str | tuple[str, ...]:
    if isinstance(raw, str):
        if not raw.strip():
            raise ValueError("must not be empty")
        return raw
    if isinstance(raw, list) and raw and all(isinstance(a, str) and a for a in raw):
        return tuple(raw)
    raise ValueError("expected a non-empty list of strings (or a string with shell = true)")


def _seconds(raw: Any) -> float:
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise ValueError(f"expected a number of seconds, got {type(raw).__name__}")
    if raw < 0 or raw > 86400 * 7:
        raise ValueError(f"must be between 0 and 604800 seconds, got {raw}")
    return float(raw)


def _reload(raw: Any) -> str | tuple[str, ...]:
    """A signal name (``"SIGHUP"``, ``"USR1"``) or a command (list, or a string to split)."""
    if isinstance(raw, str):
        word = raw.strip().upper()
        if (word.startswith("SIG") and word[3:].isalnum()) or word in _SHORT_SIGNALS:
            return word if word.startswith("SIG") else f"SIG{word}"
        try:
            argv = shlex.split(raw)
        except ValueError as exc:
            raise ValueError(f"cannot split command line: {exc}") from None
        if not argv:
            raise ValueError("must not be empty")
        return tuple(argv)
    return _command(raw)


_SHORT_SIGNALS = {"HUP", "USR1", "USR2", "TERM", "INT", "QUIT", "WINCH", "CONT", "ALRM"}


@dataclass(frozen=True, slots=True)
class ServiceState:
    """What the backend says of the service, and what it was started with."""

    phase: str | None  # a Phase value, None when no backend supervises it
    pid: int | None
    current: bool  # last started with this very spec, on this backend
    elsewhere: str | None  # the backend it last ran on, if not this one
    done: bool = False  # a readiness = "exit" oneshot that finished well
    updated: bool = True  # also its non-process fields (reload, restart policy) as now
    read_inputs: bool = False  # the process read its notifying files as they are now


class Service(Resource):
    type_name = "service"
    required = frozenset({"name", "command"})
    fields: ClassVar[dict[str, Converter]] = {
        "command": _command,
        "shell": boolean,
        "backend": one_of("builtin", "s6", "systemd"),
        "running": boolean,
        "enabled": boolean,
        "user": owner,
        "group": owner,
        "environment": string_table,
        "working_directory": abspath,
        "restart": one_of("always", "on-failure", "never"),
        "restart_delay": _seconds,
        "restart_delay_max": _seconds,
        "crash_loop_limit": integer(1, 1000),
        "crash_loop_window": _seconds,
        "stop_signal": nonempty,
        "stop_timeout": _seconds,
        "reload": _reload,
        "on_notify": one_of("restart", "reload"),
        "readiness": one_of("notify", "exit", "none"),
        "start_timeout": _seconds,
        "watchdog_sec": _seconds,
        "log_max_bytes": integer(1024, 1 << 40),
        "log_keep": integer(0, 100),
    }
    defaults: ClassVar[dict[str, Any]] = {
        "shell": False,
        "backend": "builtin",
        "running": True,
        "enabled": True,
        "on_notify": "restart",
        "start_timeout": 90.0,
    }
    concurrent = True  # a start waits for readiness: let other resources proceed
    inputs: tuple[str, ...] | None = ()
    """Paths of the files whose repair notifies this service (from ``bind``);
    None when a notifier is not a file (an exec): then no repair can be
    proven harmless and every notify is a refresh."""

    def validate(self) -> None:
        cmd = self.values["command"]
        if isinstance(cmd, str) and not self.values["shell"]:
            raise ValidationError(
                "command", "a string needs shell = true (or give the command as a list)"
            )
        validate_spec(self.spec("/"))

    def spec(self, root: str) -> ServiceSpec:
        """The supervisor's view of this resource under ``root``."""
        v = self.values
        cmd = v["command"]
        argv = ("/bin/sh", "-c", cmd) if isinstance(cmd, str) else tuple(cmd)
        reload = v.get("reload", "SIGHUP")
        environment = dict(v.get("environment", {}))
        cwd = v.get("working_directory")
        if root != "/":
            environment.setdefault("UNDISTRO_ROOT", root)
            cwd = root.rstrip("/") + (cwd or "/")
        extra = {
            key: v[key]
            for key in (
                "restart",
                "restart_delay",
                "restart_delay_max",
                "crash_loop_limit",
                "crash_loop_window",
                "stop_signal",
                "stop_timeout",
                "readiness",
                "watchdog_sec",
                "log_max_bytes",
                "log_keep",
            )
            if key in v
        }
        return ServiceSpec(
            name=self.name,
            argv=argv,
            user=None if "user" not in v else str(v["user"]),
            group=None if "group" not in v else str(v["group"]),
            environment=environment,
            working_directory=cwd,
            reload_signal=reload if isinstance(reload, str) else None,
            reload_command=reload if isinstance(reload, tuple) else None,
            **extra,
        )

    def bind(self, managed: Mapping[str, str], resources: Mapping[str, Resource]) -> None:
        paths: list[str] = []
        for res in resources.values():
            if self.id in res.notify:
                if res.type_name != "file" or not res.managed_paths():
                    self.inputs = None
                    return
                paths.extend(res.managed_paths())
        self.inputs = tuple(sorted(paths))

    def _inputs(self, ctx: Context) -> tuple[str, ...]:
        return tuple(ctx.path(p) for p in self.inputs or ())

    def implicit_requires(self) -> tuple[str, ...]:
        out = []
        for key in ("user", "group"):
            if isinstance(self.values.get(key), str):
                out.append(f"{key}:{self.values[key]}")
        return tuple(out)

    def watches(self) -> list[Watch]:
        return [Watch("service", self.name)]

    def probe(self, ctx: Context) -> ServiceState:
        control = ctx.services()
        spec, backend = self.spec(ctx.root), self.values["backend"]
        applied = control.applied(self.name)
        elsewhere = applied[1] if applied is not None and applied[1] != backend else None
        if elsewhere is not None:
            status = control.status(elsewhere, applied[0]) if applied else None
            if status is None or status.phase.value not in _UP:
                elsewhere = None  # nothing left to stop there
        status = control.status(backend, spec)
        current = applied is not None and applied[1] == backend and same_process(applied[0], spec)
        return ServiceState(
            None if status is None else status.phase.value,
            None if status is None else status.pid,
            current,
            elsewhere,
            status is not None and status.phase is Phase.STOPPED and status.ready,
            updated=applied is not None and applied[0] == spec,
            read_inputs=self._read_inputs(ctx, control.started_with(self.name)),
        )

    def _read_inputs(self, ctx: Context, known: Mapping[str, str | None] | None) -> bool:
        """Whether the process read every notifying file with the content the
        fingerprints now say it has (so a repair back to it owes nothing)."""
        if self.inputs is None or not self.inputs or known is None:
            return False
        for path in self._inputs(ctx):
            fp = ctx.fingerprint(path)
            if fp is None or known.get(path) != fp.sha256:
                return False
        return True

    def plan(self, state: ServiceState) -> list[Action]:
        v = self.values
        if not v["enabled"]:
            return []
        actions: list[Action] = []
        if state.elsewhere is not None:
            actions.append(StopService(self, state.elsewhere))
        if not v["running"]:
            if state.phase in _UP:
                actions.append(StopService(self, v["backend"]))
            return actions
        in_place = state.current and not state.updated
        if state.phase == Phase.RUNNING.value and state.current:
            if in_place:
                actions.append(UpdateService(self))
            return actions
        if state.done and state.current:
            return actions  # a oneshot runs once per supervisor, not at every check
        if state.phase == Phase.BACKOFF.value and state.current:
            if in_place:  # its next restart follows the new policy
                actions.append(UpdateService(self))
            return actions  # the supervisor is restarting it already
        if state.phase in _UP and not state.current:
            actions.append(StartService(self, "restart (spec changed)"))
        else:
            actions.append(StartService(self, "start"))
        return actions

    def refresh(self, state: ServiceState) -> list[Action]:
        v = self.values
        if not (v["enabled"] and v["running"]) or state.read_inputs:
            return []  # not meant to run, or it runs on exactly these files already
        if state.phase == Phase.BACKOFF.value and state.current:
            return []  # its next start, after this repair, reads the files as they are
        if state.phase == Phase.STARTING.value and state.current:
            return [RestartService(self)]  # spawned before the repair, perhaps
        if [a for a in self.plan(state) if not isinstance(a, UpdateService)]:
            return []  # starting now anyway, with what changed
        if v["on_notify"] == "reload":
            return [ReloadService(self)]
        return [RestartService(self)]

    def describe(self, state: ServiceState) -> str | None:
        if state.phase is None:
            return "not supervised"
        return state.phase + (f" pid {state.pid}" if state.pid else "")


def _check(status: ServiceStatus, what: str) -> str | None:
    if status.phase is Phase.FAILED:
        raise ApplyError(f"{what}: service failed ({status.status_text or 'see its log'})")
    return f"{what}: {status.phase.value}" + (f", pid {status.pid}" if status.pid else "")


class StartService(Action):
    def __init__(self, service: Service, verb: str) -> None:
        self.service = service
        self.summary = f"{verb} service {service.name} ({service.values['backend']})"

    def execute(self, ctx: Context) -> str | None:
        svc = self.service
        status = ctx.services().start(
            svc.values["backend"], svc.spec(ctx.root), svc.values["start_timeout"], svc._inputs(ctx)
        )
        return _check(status, "started")


class UpdateService(StartService):
    """A change to fields the process does not depend on (reload, restart
    policy, timeouts): the backend takes the new spec, the process stays."""

    def __init__(self, service: Service) -> None:
        super().__init__(service, "update")
        self.summary = (
            f"update service {service.name} in place, no restart ({service.values['backend']})"
        )


class RestartService(Action):
    def __init__(self, service: Service) -> None:
        self.service = service
        self.summary = f"refresh: restart service {service.name}"

    def execute(self, ctx: Context) -> str | None:
        svc = self.service
        status = ctx.services().restart(
            svc.values["backend"], svc.spec(ctx.root), svc.values["start_timeout"], svc._inputs(ctx)
        )
        return _check(status, "restarted")


class ReloadService(Action):
    def __init__(self, service: Service) -> None:
        self.service = service
        self.summary = f"refresh: reload service {service.name}"

    def execute(self, ctx: Context) -> str | None:
        return _check(
            ctx.services().reload(self.service.values["backend"], self.service.name), "reloaded"
        )


class StopService(Action):
    def __init__(self, service: Service, backend: str) -> None:
        self.service = service
        self.backend = backend
        self.summary = f"stop service {service.name} ({backend})"

    def execute(self, ctx: Context) -> str | None:
        status = ctx.services().stop(self.backend, self.service.name)
        return None if status is None else f"stopped: {status.phase.value}"
