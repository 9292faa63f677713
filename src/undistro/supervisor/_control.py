"""The services of one process, driven from the engine's worker thread.

The backends are asyncio objects: the builtin one installs a SIGCHLD handler
and reads pidfds and notify sockets on the loop of the main thread, s6's
listens to fifodirs there, systemd's to D-Bus. The engine is synchronous and
must stay generic, so it runs in a worker thread and reaches the backends
through this facade: each call is a coroutine handed to the main loop with
``asyncio.run_coroutine_threadsafe`` and waited for with a timeout. The
loop keeps supervising (readiness, exits, logs) while the engine waits.

Backends are created on first use, on the loop, so a policy without a
service never pays for one, and a policy with only builtin services never
loads the D-Bus library.

The facade also remembers, per service, the spec it last started and on
which backend (``managed/NAME.json``). The resource compares against it to
tell a changed spec, and :meth:`Supervisors.retire` stops a service that
left the policy with the stop signal and timeout it was started with — the
state store's ``managed`` table knows paths and ids, not how to stop what
is gone, so the record lives beside the backends' own state.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, TypeVar

from undistro.errors import ApplyError
from undistro.supervisor._adopt import RecordStore, proc_start_time
from undistro.supervisor._builtin import BuiltinBackend
from undistro.supervisor._spec import (
    Backend,
    EventSink,
    Phase,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
)

T = TypeVar("T")

BACKENDS = ("builtin", "s6", "systemd")
SYSTEMD_BUS = "unix:path=/run/dbus/system_bus_socket"
"""The system bus; ``UNDISTRO_SYSTEMD_BUS`` names another (a container's)."""

Converge = Callable[[ServiceSpec], Awaitable[None]]
Journal = Callable[[str, str, str, float], None]
"""(resource id, outcome, cause, time): one journal entry per service state
change. The agent's writes it under its run lock; a one-shot run keeps them
for after the run. The supervisor never sees the state store."""
_INPUT_LIMIT = 16 << 20  # a notifying file larger than this is not fingerprinted


class Supervisors:
    """Implements the resources' ``ServiceControl`` over lazily made backends.

    Args:
        loop: the main thread's running loop, where the backends live.
        state_dir: the undistro state directory; services keep theirs in
            ``services/`` under it (builtin records, sockets and logs in
            ``services/builtin``, s6 in ``services/s6``).
        root: ``--root``: systemd unit files go under it.
        converge: awaited before a restart the builtin backend initiates
            itself (a crash restart), so what the service requires is
            converged first ("init calls CM"). Not called for starts this
            facade asked for: the engine converged the requirements just
            before, and holds the lock ``converge`` would wait for.
        read_only: for ``undistro plan``: read what the builtin backend's
            records say and never adopt (adopting binds the notify socket,
            which a running agent owns); s6 and systemd services read as
            unknown.
        journal: told every service state change (started, ready, exited,
            restarting, given up, reloaded, reload failed, stopped).

    Example (in a coroutine on the main thread)::

        services = Supervisors(asyncio.get_running_loop(), "/var/lib/undistro")
        summary = await loop.run_in_executor(None, engine.run)   # uses services
        await services.close()                                    # services keep running
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        state_dir: str,
        *,
        root: str = "/",
        converge: Converge | None = None,
        read_only: bool = False,
        journal: Journal | None = None,
    ) -> None:
        self.loop = loop
        self.read_only = read_only
        self.state_dir = os.path.join(state_dir, "services")
        self.root = root
        self._converge = converge
        self._backends: dict[str, Backend] = {}
        self._creating: dict[str, asyncio.Future[Backend]] = {}
        self._sinks: list[EventSink] = []
        self._starting: set[str] = set()
        self._starting_lock = threading.Lock()
        self._records = os.path.join(self.state_dir, "managed")
        if journal is not None:
            self._sinks.append(lambda event: _journal_event(journal, event))

    # -- on the loop ------------------------------------------------------------

    def subscribe(self, sink: EventSink) -> None:
        """Receive every backend's events (on the loop), including backends made later."""
        self._sinks.append(sink)
        for backend in self._backends.values():
            backend.subscribe(sink)

    def backends(self) -> dict[str, Backend]:
        """The backends made so far, by name."""
        return dict(self._backends)

    async def backend(self, kind: str) -> Backend:
        """The backend named ``kind``, made on first use."""
        made = self._backends.get(kind)
        if made is not None:
            return made
        pending = self._creating.get(kind)
        if pending is None:
            pending = self._creating[kind] = self.loop.create_future()
            try:
                made = await self._make(kind)
            except BaseException as exc:
                pending.set_exception(exc)
                pending.exception()  # retrieved: the waiters, if any, see it too
                del self._creating[kind]
                raise
            for sink in self._sinks:
                made.subscribe(sink)
            self._backends[kind] = made
            pending.set_result(made)
            del self._creating[kind]
            return made
        return await pending

    async def _make(self, kind: str) -> Backend:
        if kind == "builtin":
            return BuiltinBackend(os.path.join(self.state_dir, "builtin"), start_hook=self._hook)
        if kind == "s6":
            from undistro.supervisor._s6 import S6Backend

            top = os.path.join(self.state_dir, "s6")
            return S6Backend(os.path.join(top, "scan"), top)
        if kind == "systemd":
            from undistro.supervisor._systemd import SystemdBackend

            unit_dir = os.path.join(self.root, "etc/systemd/system")
            address = os.environ.get("UNDISTRO_SYSTEMD_BUS", SYSTEMD_BUS)
            return await SystemdBackend.connect(address, unit_dir)
        raise ApplyError(f"unknown service backend {kind!r} (known: {', '.join(BACKENDS)})")

    async def _hook(self, spec: ServiceSpec) -> None:
        with self._starting_lock:
            ours = spec.name in self._starting
        if not ours and self._converge is not None:
            await self._converge(spec)
        # The process about to be spawned reads its config files as they are
        # now: remember their content, so that a later repair back to it
        # owes no reload (and one that differs does).
        self._stamp_inputs(spec.name)

    async def close(self) -> None:
        """Let go of every backend; the services keep running, to be re-adopted."""
        for backend in self._backends.values():
            await backend.close()
        self._backends.clear()

    async def command(self, action: str, kind: str, spec: ServiceSpec) -> ServiceStatus | None:
        """``undistro service ACTION NAME``, on the loop: a start or restart goes
        through the start hook (requirements converged first)."""
        if action in ("start", "restart"):
            self._record(spec, kind)
        backend = await self.backend(kind)
        if action == "stop":
            return await self._stop(kind, spec.name, (spec, kind))
        if backend.status(spec.name) is None:
            await _adopt(backend, spec)
        if action == "start":
            return await self._spawning(kind, backend, spec.name, backend.start(spec))
        if action == "restart":
            return await self._spawning(kind, backend, spec.name, backend.restart(spec))
        return await self._reload(kind, spec.name)

    def stats(self) -> dict[str, Any]:
        """Every service started here, by name (no I/O but the records): for
        ``undistro services``."""
        out: dict[str, Any] = {}
        for name, spec, kind in self.recorded():
            backend = self._backends.get(kind)
            status = backend.status(name) if backend is not None else None
            out[name] = describe(status, spec, kind)
            if isinstance(backend, BuiltinBackend) and status is not None:
                out[name]["uptime"] = backend.stats()["services"][name]["uptime"]
        return out

    # -- from a worker thread ---------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None) -> T:
        try:
            on_loop = asyncio.get_running_loop() is self.loop
        except RuntimeError:
            on_loop = False
        if on_loop:  # waiting here would block the loop that must answer
            coro.close()
            raise RuntimeError("Supervisors must be called from a worker thread, not the loop")
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except TimeoutError:
            future.cancel()
            raise ApplyError(f"no answer from the supervisor within {timeout:g}s") from None

    def status(self, kind: str, spec: ServiceSpec) -> ServiceStatus | None:
        """What the backend knows of the service, adopting it if a previous
        supervisor left it running; None if it is not supervised at all."""
        return self._call(self._status(kind, spec), 30)

    async def _status(self, kind: str, spec: ServiceSpec) -> ServiceStatus | None:
        if self.read_only:
            if kind != "builtin":
                return None
            return recorded_status(os.path.join(self.state_dir, "builtin"), spec.name)
        backend = await self.backend(kind)
        known = backend.status(spec.name)
        if known is not None:
            return known
        return await _adopt(backend, spec)

    def start(
        self, kind: str, spec: ServiceSpec, timeout: float, inputs: Iterable[str] = ()
    ) -> ServiceStatus:
        """Start (or adopt) the service and wait until it is ready or failed.

        ``inputs`` are the (rebased) files whose repair notifies it: their
        content is remembered at each spawn (see :meth:`started_with`)."""
        return self._own(spec, kind, lambda b: b.start(spec), timeout, inputs)

    def restart(
        self, kind: str, spec: ServiceSpec, timeout: float, inputs: Iterable[str] = ()
    ) -> ServiceStatus:
        return self._own(spec, kind, lambda b: b.restart(spec), timeout, inputs)

    def _own(
        self,
        spec: ServiceSpec,
        kind: str,
        call: Callable[[Backend], Coroutine[Any, Any, ServiceStatus]],
        timeout: float,
        inputs: Iterable[str],
    ) -> ServiceStatus:
        with self._starting_lock:
            self._starting.add(spec.name)
        try:
            self._record(spec, kind, tuple(inputs))
            return self._call(self._with_backend(kind, spec.name, call), timeout)
        finally:
            with self._starting_lock:
                self._starting.discard(spec.name)

    async def _with_backend(
        self, kind: str, name: str, call: Callable[[Backend], Coroutine[Any, Any, ServiceStatus]]
    ) -> ServiceStatus:
        backend = await self.backend(kind)
        return await self._spawning(kind, backend, name, call(backend))

    async def _spawning(
        self, kind: str, backend: Backend, name: str, call: Awaitable[ServiceStatus]
    ) -> ServiceStatus:
        """Await a start or restart; for backends without a start hook (s6,
        systemd) remember the inputs' content when it made a new process."""
        before = backend.status(name)
        status = await call
        if kind != "builtin" and status.pid != (before.pid if before else None):
            self._stamp_inputs(name)
        return status

    def stop(self, kind: str, name: str, timeout: float = 120) -> ServiceStatus | None:
        """Stop the service (adopting it first if need be); None if it was not supervised."""
        recorded = self._load(name)
        return self._call(self._stop(kind, name, recorded), timeout)

    async def _stop(
        self, kind: str, name: str, recorded: tuple[ServiceSpec, str] | None
    ) -> ServiceStatus | None:
        backend = await self.backend(kind)
        if backend.status(name) is None and (
            recorded is None or await _adopt(backend, recorded[0]) is None
        ):
            return None
        return await backend.stop(name)

    def reload(self, kind: str, name: str, timeout: float = 120) -> ServiceStatus:
        return self._call(self._reload(kind, name), timeout)

    async def _reload(self, kind: str, name: str) -> ServiceStatus:
        backend = await self.backend(kind)
        try:
            status = await backend.reload(name)
        except ApplyError as exc:
            if backend.name != "builtin":  # the builtin backend says so itself
                self._note(backend, name, f"reload failed: {exc}")
            raise
        self._stamp_inputs(name)  # it has read its files again
        return status

    def _note(self, backend: Backend, name: str, cause: str) -> None:
        status = backend.status(name)
        if status is not None:
            for sink in self._sinks:
                sink(ServiceEvent(status, cause))

    def applied(self, name: str) -> tuple[ServiceSpec, str] | None:
        """The spec the service was last started with, and on which backend."""
        return self._load(name)

    def started_with(self, name: str) -> dict[str, str | None] | None:
        """SHA-256 of each notifying file as the running process last read it
        (at its spawn, or its last successful reload); None if unknown."""
        raw = _read_json(os.path.join(self._records, f"{name}.json"))
        inputs = raw.get("inputs") if raw is not None else None
        if not isinstance(inputs, dict):
            return None
        return {str(k): v if isinstance(v, str) else None for k, v in inputs.items()}

    def retire(self, keep: Iterable[str], timeout: float = 120) -> list[str]:
        """Stop every recorded service not in ``keep`` (it left the policy) and
        forget it; return their names."""
        wanted = set(keep)
        gone = []
        for name, spec, kind in self.recorded():
            if name in wanted:
                continue
            self._call(self._stop(kind, name, (spec, kind)), timeout)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(self._records, f"{name}.json"))
            gone.append(name)
        return gone

    # -- the records --------------------------------------------------------------

    def recorded(self) -> list[tuple[str, ServiceSpec, str]]:
        """(name, spec, backend) of every service started here and not retired."""
        try:
            names = sorted(n[:-5] for n in os.listdir(self._records) if n.endswith(".json"))
        except FileNotFoundError:
            return []
        out = []
        for name in names:
            found = self._load(name)
            if found is not None:
                out.append((name, *found))
        return out

    def _record(self, spec: ServiceSpec, kind: str, inputs: tuple[str, ...] | None = None) -> None:
        """Write ``managed/NAME.json``; ``inputs`` (paths) keep the content
        already known for them, None keeps the recorded inputs as they are."""
        known = self.started_with(spec.name) or {}
        kept = known if inputs is None else {p: known.get(p) for p in inputs}
        self._write_record(spec.name, {"backend": kind, "spec": spec_fields(spec), "inputs": kept})

    def _write_record(self, name: str, raw: dict[str, Any]) -> None:
        os.makedirs(self._records, mode=0o700, exist_ok=True)
        path = os.path.join(self._records, f"{name}.json")
        with open(f"{path}.tmp", "w", encoding="utf-8") as f:
            f.write(json.dumps(raw, sort_keys=True))
        os.rename(f"{path}.tmp", path)

    def _stamp_inputs(self, name: str) -> None:
        """Hash the service's notifying files now, into its record."""
        if self.read_only:
            return
        raw = _read_json(os.path.join(self._records, f"{name}.json"))
        if raw is None or not isinstance(raw.get("inputs"), dict) or not raw["inputs"]:
            return
        raw["inputs"] = {p: _content_hash(p) for p in raw["inputs"]}
        self._write_record(name, raw)

    def _load(self, name: str) -> tuple[ServiceSpec, str] | None:
        return load_record(os.path.join(self._records, f"{name}.json"))


def _read_json(path: str) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (FileNotFoundError, ValueError):
        return None
    return raw if isinstance(raw, dict) else None


def _content_hash(path: str) -> str | None:
    """SHA-256 of a regular file's content; None if it is not one (or is huge)."""
    from undistro._hash import sha256_hex

    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > _INPUT_LIMIT:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            return sha256_hex(f.read(_INPUT_LIMIT + 1))
    except OSError:
        return None
    finally:
        os.close(fd)


def _journal_event(journal: Journal, event: ServiceEvent) -> None:
    status = event.status
    cause = event.cause
    if status.pid is not None and cause in ("spawned", "adopted", "ready"):
        cause += f", pid {status.pid}"
    journal(f"service:{status.name}", status.phase.value, cause, time.time())


def recorded_status(builtin_dir: str, name: str) -> ServiceStatus | None:
    """What the builtin backend's record says of a service, checked against
    ``/proc`` (pid and start time), without adopting it."""
    record = RecordStore(builtin_dir).load(name)
    if record is None or proc_start_time(record.pid) != record.start_time:
        return None
    return ServiceStatus(
        name,
        Phase.RUNNING if record.ready else Phase.STARTING,
        pid=record.pid,
        since=record.started_at,
        restarts=record.restarts,
        ready=record.ready,
    )


def run_hosted(
    work: Callable[[Supervisors], T],
    state_dir: str,
    *,
    root: str = "/",
    read_only: bool = False,
    journal: Journal | None = None,
) -> T:
    """Run ``work`` in a worker thread while this thread's event loop hosts
    the backends; let go of them (the services keep running) when it returns.

    For one-shot commands: the builtin backend's records let a later agent
    re-adopt what was started here.
    """

    async def main() -> T:
        loop = asyncio.get_running_loop()
        services = Supervisors(loop, state_dir, root=root, read_only=read_only, journal=journal)
        try:
            return await loop.run_in_executor(None, work, services)
        finally:
            await services.close()

    return asyncio.run(main())


def spec_fields(spec: ServiceSpec) -> dict[str, Any]:
    fields = dataclasses.asdict(spec)
    fields["environment"] = dict(spec.environment)
    return fields


def load_record(path: str) -> tuple[ServiceSpec, str] | None:
    """A ``managed/NAME.json`` record: (spec, backend); None if absent or unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        fields = dict(raw["spec"])
        fields["argv"] = tuple(fields["argv"])
        if fields.get("reload_command") is not None:
            fields["reload_command"] = tuple(fields["reload_command"])
        return ServiceSpec(**fields), str(raw["backend"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None


async def _adopt(backend: Backend, spec: ServiceSpec) -> ServiceStatus | None:
    """Take the service over from a previous supervisor without starting it."""
    if isinstance(backend, BuiltinBackend):
        return await backend.adopt(spec)
    # s6 and systemd keep supervising while undistro is away: attaching
    # (writing the service directory or unit, listening) reads their state.
    attach = getattr(backend, "_attach", None)
    if attach is None:
        return None
    await attach(spec)
    return backend.status(spec.name)


def describe(status: ServiceStatus | None, spec: ServiceSpec, kind: str) -> dict[str, Any]:
    """One service's line for ``undistro services``, as JSON-ready values."""
    if status is None:
        return {"backend": kind, "phase": "unknown", "readiness": spec.readiness}
    running = status.pid is not None
    return {
        "backend": kind,
        "phase": status.phase.value,
        "pid": status.pid,
        "uptime": round(time.time() - status.since, 3) if running else None,
        "restarts": status.restarts,
        "ready": status.ready,
        "readiness": spec.readiness,
        "status": status.status_text,
    }
