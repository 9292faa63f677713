"""The systemd backend: unit files, method calls and signals over D-Bus.

systemd supervises; undistro writes ``undistro-NAME.service`` (see
:mod:`._systemd_unit`), reloads systemd only when a file changed, and calls
StartUnit / StopUnit / RestartUnit / ReloadUnit. It learns what happens from
two signals, after ``Subscribe``: ``JobRemoved`` ends each call (its result
says whether the job worked), and the unit's ``PropertiesChanged`` carries
every later change — a crash after a successful start is only visible there,
as ``ActiveState=failed`` or ``activating/auto-restart``. Properties are read
with ``GetAll`` only when attaching and after a job ends; never on a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from undistro.errors import ApplyError
from undistro.events._dbus import DBusConnection
from undistro.supervisor._files import write_if_changed
from undistro.supervisor._policy import validate_spec
from undistro.supervisor._spec import EventSink, Phase, ServiceEvent, ServiceSpec, ServiceStatus
from undistro.supervisor._systemd_unit import render_unit, unit_name

SYSTEMD = "org.freedesktop.systemd1"
MANAGER_PATH = "/org/freedesktop/systemd1"
MANAGER = "org.freedesktop.systemd1.Manager"
UNIT = "org.freedesktop.systemd1.Unit"
SERVICE = "org.freedesktop.systemd1.Service"
PROPERTIES = "org.freedesktop.DBus.Properties"
_WATCHED = (
    "ActiveState",
    "SubState",
    "Result",
    "MainPID",
    "NRestarts",
    "ExecMainCode",
    "ExecMainStatus",
    "StatusText",
)
_CLD_EXITED, _CLD_KILLED, _CLD_DUMPED = 1, 2, 3  # ExecMainCode: siginfo's si_code


def phase_of(props: dict[str, Any], spec: ServiceSpec, previous: Phase, want_up: bool) -> Phase:
    """systemd's (ActiveState, SubState, Result) in undistro's phases (pure).

    systemd 252 passes through ``failed`` on its way from a crash to
    ``auto-restart``, and through ``inactive`` when the restart job stops
    before it starts again: those are BACKOFF. ``failed`` is final when the
    policy does not restart, or when it comes out of BACKOFF — the restart
    job's start half refused by the start limit (Result keeps the crash's
    ``exit-code``; ``start-limit-hit`` shows only when no crash preceded).
    """
    active, sub = props.get("ActiveState", "inactive"), props.get("SubState", "")
    result = props.get("Result", "success")
    if active == "active" and sub == "exited" and spec.readiness == "exit":
        return Phase.STOPPED  # a one-shot that is done (and ready), as with the builtin backend
    if active in ("active", "reloading"):
        return Phase.RUNNING
    if active == "activating":
        return Phase.BACKOFF if sub == "auto-restart" else Phase.STARTING
    if active == "deactivating":
        return Phase.STOPPING
    restarts = spec.readiness != "exit" and (
        spec.restart == "always" or (spec.restart == "on-failure" and result != "success")
    )
    if active == "failed":
        if want_up and restarts and result != "start-limit-hit" and previous is not Phase.BACKOFF:
            return Phase.BACKOFF
        return Phase.FAILED
    if want_up and previous is Phase.BACKOFF:
        return Phase.BACKOFF  # the restart job's stop half; its start half follows
    return Phase.STOPPED


def exit_words(props: dict[str, Any]) -> str:
    """The main process's last end, in the builtin backend's words (pure)."""
    code, status = props.get("ExecMainCode", 0), props.get("ExecMainStatus", 0)
    if code == _CLD_EXITED:
        return f"exited {status}"
    if code in (_CLD_KILLED, _CLD_DUMPED) and status:
        try:
            return f"signal {signal.Signals(status).name}"
        except ValueError:
            return f"signal {status}"
    return str(props.get("Result", "unknown"))


def cause_of(props: dict[str, Any], spec: ServiceSpec, phase: Phase, before: Phase) -> str:
    """What a state change means, as an operator reads it in the journal (pure).

    Example: a unit refused by its start limit after crashes gives
    ``crash loop: 3 failures within 60s, last exited 3``.
    """
    result = props.get("Result", "success")
    if phase is Phase.FAILED:
        if before is Phase.BACKOFF or result == "start-limit-hit":
            return (
                f"crash loop: {max(spec.crash_loop_limit, 1)} failures within "
                f"{spec.crash_loop_window:g}s, last {exit_words(props)}"
            )
        return f"{exit_words(props)} (restart = {spec.restart})"
    if phase is Phase.BACKOFF:
        return f"{exit_words(props)}; restart in {spec.restart_delay:.3g}s"
    pid = props.get("MainPID") or None
    if phase is Phase.RUNNING:
        return "ready" if before is Phase.STARTING else f"running, pid {pid}"
    if phase is Phase.STARTING:
        return f"spawned, pid {pid}" if pid else "starting"
    if phase is Phase.STOPPED and props.get("SubState") == "exited":
        return f"{exit_words(props)} (done)"
    return str(phase.value)


@dataclass
class _JobWait:
    """One job being waited for. Registered under the unit's name *before* the
    call: the JobRemoved of a quick job can be handled before the coroutine
    that made the call resumes with the job's path."""

    future: asyncio.Future[str]
    job: str | None = None
    seen: dict[str, str] = field(default_factory=dict)


@dataclass
class _Unit:
    spec: ServiceSpec
    unit: str
    path: str
    props: dict[str, Any] = field(default_factory=dict)
    want_up: bool = False
    flush_pending: bool = False
    # phase_of needs the phase of the *previous* (ActiveState, SubState): kept
    # per state, so re-reading the same state (two signal halves, a GetAll)
    # gives the same answer.
    state: tuple[str, str] | None = None
    before: Phase = Phase.STOPPED
    phase: Phase = Phase.STOPPED
    status: ServiceStatus | None = None
    waiters: list[tuple[Callable[[ServiceStatus], bool], asyncio.Future[ServiceStatus]]] = field(
        default_factory=list
    )


class SystemdBackend:
    """Supervise services as systemd units, over a D-Bus connection.

    Args:
        bus: an open connection to the bus systemd is on.
        unit_dir: where unit files go, as seen from here (the host path of
            the container's ``/etc/systemd/system`` when systemd runs in one).

    Example::

        backend = await SystemdBackend.connect(
            "unix:path=/run/dbus/system_bus_socket", unit_dir="/etc/systemd/system")
        await backend.start(ServiceSpec("web", ("/usr/sbin/httpd", "-f")))
        await backend.close()           # the units keep running
    """

    name = "systemd"

    def __init__(self, bus: DBusConnection, unit_dir: str) -> None:
        self.bus = bus
        self.unit_dir = unit_dir
        self._units: dict[str, _Unit] = {}
        self._by_path: dict[str, _Unit] = {}
        self._job_waits: dict[str, list[_JobWait]] = {}
        self._sinks: list[EventSink] = []
        self._events = 0

    @classmethod
    async def connect(cls, address: str, unit_dir: str = "/etc/systemd/system") -> SystemdBackend:
        """Open the bus, subscribe to systemd's signals, return the backend.

        Raises ApplyError for an address that is not one, or a bus that does
        not answer."""
        try:
            bus = await DBusConnection.open(address)
        except ValueError:
            raise ApplyError(
                f"not a D-Bus address: {address!r} (e.g. unix:path=/run/dbus/system_bus_socket;"
                " UNDISTRO_SYSTEMD_BUS names the systemd bus)"
            ) from None
        except RuntimeError as exc:  # jeepney: a transport it does not speak (tcp:, ...)
            raise ApplyError(f"cannot use D-Bus address {address!r}: {exc}") from None
        backend = cls(bus, unit_dir)
        await bus.on_signal(
            backend._on_job_removed, sender=SYSTEMD, interface=MANAGER, member="JobRemoved"
        )
        await bus.call(SYSTEMD, MANAGER_PATH, MANAGER, "Subscribe")
        bus.on_lost(backend._on_bus_lost)
        return backend

    # -- the Backend protocol -------------------------------------------------

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def status(self, name: str) -> ServiceStatus | None:
        unit = self._units.get(name)
        return unit.status if unit else None

    async def start(self, spec: ServiceSpec) -> ServiceStatus:
        unit, changed = await self._attach(spec)
        phase = self._current(unit).phase
        if not changed and phase in (Phase.RUNNING, Phase.STARTING, Phase.BACKOFF):
            if phase is Phase.RUNNING:
                return self._current(unit)
            return await self._wait(unit, lambda st: st.phase in (Phase.RUNNING, Phase.FAILED))
        if phase is Phase.FAILED:
            # A unit that hit its start limit refuses to start until this is cleared.
            await self._manager("ResetFailedUnit", "s", (unit.unit,))
        method = "RestartUnit" if changed and phase is not Phase.STOPPED else "StartUnit"
        unit.want_up = True
        return await self._job(unit, method)

    async def stop(self, name: str) -> ServiceStatus:
        unit = self._get(name)
        unit.want_up = False
        return await self._job(unit, "StopUnit")

    async def restart(self, spec: ServiceSpec) -> ServiceStatus:
        unit, _ = await self._attach(spec)
        unit.want_up = True
        return await self._job(unit, "RestartUnit")

    async def reload(self, name: str) -> ServiceStatus:
        unit = self._get(name)
        if not (unit.spec.reload_command or unit.spec.reload_signal):
            raise ApplyError(f"service {name}: no reload_signal or reload_command")
        status = self._current(unit)
        if status.phase is Phase.BACKOFF:
            # systemd refuses the job ("invalid") and restarts the service on the
            # files as they are then: that start is the reload.
            event = ServiceEvent(status, "reload: satisfied by the restart under way")
            for sink in self._sinks:
                sink(event)
            return status
        return await self._job(unit, "ReloadUnit")

    async def close(self) -> None:
        """Drop the connection; the units keep running under systemd."""
        for unit in self._units.values():
            for _, waiter in unit.waiters:
                waiter.cancel()
        for waits in self._job_waits.values():
            for wait in waits:
                wait.future.cancel()
        self._units.clear()
        self._by_path.clear()
        await self.bus.close()

    def stats(self) -> dict[str, int]:
        """A cheap snapshot for ``undistro status``."""
        return {"services": len(self._units), "events": self._events}

    # -- attaching and jobs ---------------------------------------------------

    def _get(self, name: str) -> _Unit:
        try:
            return self._units[name]
        except KeyError:
            raise ApplyError(f"service {name}: not known to the systemd backend") from None

    async def _manager(
        self, method: str, signature: str | None = None, body: tuple[Any, ...] = ()
    ) -> Any:
        reply = await self.bus.call(SYSTEMD, MANAGER_PATH, MANAGER, method, signature, body)
        return reply[0] if reply else None

    async def _attach(self, spec: ServiceSpec) -> tuple[_Unit, bool]:
        """Write the unit file, reload if it changed, load and watch the unit."""
        validate_spec(spec)
        name = unit_name(spec.name)
        os.makedirs(self.unit_dir, exist_ok=True)
        changed = write_if_changed(os.path.join(self.unit_dir, name), render_unit(spec))
        if changed:
            await self._manager("Reload")
        unit = self._units.get(spec.name)
        if unit is None:
            path = await self._manager("LoadUnit", "s", (name,))
            unit = _Unit(spec, name, path)
            self._units[spec.name] = unit
            self._by_path[path] = unit
            await self.bus.on_signal(
                self._on_properties,
                sender=SYSTEMD,
                interface=PROPERTIES,
                member="PropertiesChanged",
                path=path,
            )
            await self._read_properties(unit)
            unit.want_up = unit.props.get("ActiveState") in ("active", "activating", "reloading")
            self._update(unit, "attached")
        unit.spec = spec
        return unit, changed

    async def _read_properties(self, unit: _Unit) -> None:
        for iface in (UNIT, SERVICE):
            (props,) = await self.bus.call(SYSTEMD, unit.path, PROPERTIES, "GetAll", "s", (iface,))
            unit.props.update({k: v[1] for k, v in props.items() if k in _WATCHED})

    async def _job(self, unit: _Unit, method: str) -> ServiceStatus:
        """Queue a job and wait for its JobRemoved; then the unit's state says the rest."""
        wait = _JobWait(asyncio.get_running_loop().create_future())
        waits = self._job_waits.setdefault(unit.unit, [])
        waits.append(wait)
        try:
            wait.job = await self._manager(method, "ss", (unit.unit, "replace"))
            result = wait.seen.get(wait.job) or await wait.future
        finally:
            waits.remove(wait)
        await self._read_properties(unit)
        status = self._update(unit, None if result == "done" else f"{method} {result}")
        if result not in ("done", "skipped") and status.phase is not Phase.FAILED:
            raise ApplyError(f"service {unit.spec.name}: {method} job {result}")
        return status

    def _wait(
        self, unit: _Unit, until: Callable[[ServiceStatus], bool]
    ) -> asyncio.Future[ServiceStatus]:
        fut: asyncio.Future[ServiceStatus] = asyncio.get_running_loop().create_future()
        unit.waiters.append((until, fut))
        return fut

    # -- signals ----------------------------------------------------------------

    def _on_job_removed(self, path: str, member: str, body: tuple[Any, ...]) -> None:
        _id, job, unit_name, result = body
        for wait in self._job_waits.get(unit_name, ()):
            wait.seen[job] = result
            if job == wait.job and not wait.future.done():
                wait.future.set_result(result)

    def _on_bus_lost(self) -> None:
        """systemd or its bus went away: nothing more will arrive, so fail every wait."""
        error = ApplyError(f"lost the D-Bus connection to systemd at {self.bus.address}")
        for waits in self._job_waits.values():
            for wait in waits:
                if not wait.future.done():
                    wait.future.set_exception(error)
        for unit in self._units.values():
            for _, future in unit.waiters:
                if not future.done():
                    future.set_exception(error)
            unit.waiters.clear()

    def _on_properties(self, path: str, member: str, body: tuple[Any, ...]) -> None:
        unit = self._by_path.get(path)
        if unit is None:
            return
        _iface, changed, _invalidated = body
        fresh = {k: v[1] for k, v in changed.items() if k in _WATCHED}
        if not fresh:
            return
        self._events += 1
        unit.props.update(fresh)
        self._advance(unit)  # per signal: every transition systemd sends is seen in order
        if not unit.flush_pending:
            # The Unit and Service halves of one change arrive as two signals in
            # one read: report them once, after both are in.
            unit.flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush, unit)

    def _flush(self, unit: _Unit) -> None:
        unit.flush_pending = False
        self._update(unit, None)

    def _current(self, unit: _Unit) -> ServiceStatus:
        assert unit.status is not None
        return unit.status

    @staticmethod
    def _advance(unit: _Unit) -> Phase:
        state = (unit.props.get("ActiveState", "inactive"), unit.props.get("SubState", ""))
        if state != unit.state:
            unit.before, unit.state = unit.phase, state
        unit.phase = phase_of(unit.props, unit.spec, unit.before, unit.want_up)
        return unit.phase

    def _update(self, unit: _Unit, job: str | None) -> ServiceStatus:
        """Recompute the status; an event if it changed, its cause said in words
        (``job``: a job that did not end ``done``, said first)."""
        props = unit.props
        old = unit.status
        phase = self._advance(unit)
        cause = cause_of(props, unit.spec, phase, unit.before)
        if job is not None:
            cause = f"{job}: {cause}"
        exit_status = None
        if phase is not Phase.RUNNING and props.get("ExecMainCode") == _CLD_EXITED:
            exit_status = props.get("ExecMainStatus")
        status = ServiceStatus(
            name=unit.spec.name,
            phase=phase,
            pid=props.get("MainPID") or None,
            since=old.since if old is not None and old.phase is phase else time.time(),
            restarts=props.get("NRestarts", 0),
            ready=phase is Phase.RUNNING or props.get("SubState") == "exited",
            status_text=props.get("StatusText", ""),
            exit_status=exit_status,
            backend=self.name,
        )
        unit.status = status
        if old is None or old != status:
            event = ServiceEvent(status, cause)
            for sink in self._sinks:
                sink(event)
        for waiter in list(unit.waiters):
            until, fut = waiter
            if fut.done() or until(status):
                unit.waiters.remove(waiter)
                with contextlib.suppress(asyncio.InvalidStateError):
                    fut.set_result(status)
        return status
