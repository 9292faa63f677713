"""What every supervisor backend is given and what it reports.

The ``[[service]]`` resource turns policy into a :class:`ServiceSpec`; a
backend (builtin, s6, systemd) supervises it and reports each state change as
a :class:`ServiceEvent` to a callback on the agent's event loop.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol


class Phase(enum.Enum):
    STOPPED = "stopped"  # not running, and not meant to be
    STARTING = "starting"  # spawned, readiness not yet signalled
    RUNNING = "running"  # ready (or readiness = "none" and spawned)
    STOPPING = "stopping"  # stop signal sent, waiting for exit
    BACKOFF = "backoff"  # exited; a restart is scheduled
    FAILED = "failed"  # crash-loop limit reached, or start failed; not retried


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    name: str
    argv: tuple[str, ...]
    user: str | None = None
    group: str | None = None
    environment: Mapping[str, str] = field(default_factory=dict)
    working_directory: str | None = None
    restart: str = "on-failure"  # "always" | "on-failure" | "never"
    restart_delay: float = 0.1  # first backoff; doubles up to restart_delay_max
    restart_delay_max: float = 30.0
    crash_loop_limit: int = 5  # this many failed starts within crash_loop_window → FAILED
    crash_loop_window: float = 60.0
    stop_signal: str = "SIGTERM"
    stop_timeout: float = 10.0  # then SIGKILL to the whole process group
    reload_signal: str | None = "SIGHUP"
    reload_command: tuple[str, ...] | None = None
    readiness: str = "none"  # "notify" | "exit" | "none"
    watchdog_sec: float | None = None
    log_max_bytes: int = 1 << 20
    log_keep: int = 3


PROCESS_FIELDS = (
    "argv",
    "user",
    "group",
    "environment",
    "working_directory",
    "readiness",
    "watchdog_sec",
)
"""What the running process was made from (its argv, identity, environment,
cwd, the notify/watchdog variables it was handed): a change needs a restart.
The other fields (reload, restart policy, timeouts, log rotation) are the
supervisor's own and are updated in place."""


def process_fields(spec: ServiceSpec) -> dict[str, object]:
    """The fields of ``spec`` that the running process depends on."""
    out = {name: getattr(spec, name) for name in PROCESS_FIELDS}
    out["environment"] = dict(spec.environment)
    return out


def same_process(a: ServiceSpec, b: ServiceSpec) -> bool:
    """Whether a process started from ``a`` is also what ``b`` asks for."""
    return process_fields(a) == process_fields(b)


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    phase: Phase
    pid: int | None = None
    since: float = 0.0  # time.time() of the last phase change
    restarts: int = 0
    ready: bool = False
    status_text: str = ""  # the service's own STATUS= line
    exit_status: int | None = None
    backend: str = "builtin"


@dataclass(frozen=True, slots=True)
class ServiceEvent:
    status: ServiceStatus
    cause: str  # "spawned", "ready", "exited 1", "signal SIGKILL", "s6: d", ...


EventSink = Callable[[ServiceEvent], None]


class Backend(Protocol):
    """A supervisor backend. All methods run on the agent's asyncio loop."""

    name: str

    async def start(self, spec: ServiceSpec) -> ServiceStatus:
        """Start (or adopt) the service; return once it is ready or failed."""
        ...

    async def stop(self, name: str) -> ServiceStatus: ...

    async def restart(self, spec: ServiceSpec) -> ServiceStatus: ...

    async def reload(self, name: str) -> ServiceStatus: ...

    def status(self, name: str) -> ServiceStatus | None:
        """The last known status, from notifications only: no I/O."""
        ...

    def subscribe(self, sink: EventSink) -> None: ...

    async def close(self) -> None:
        """Stop watching; services keep running (they outlive the agent)."""
        ...


StartHook = Callable[[ServiceSpec], Awaitable[None]]
"""Called before every (re)start so the engine converges what the service requires."""
