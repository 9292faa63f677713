"""The builtin backend: the agent itself is the supervisor.

Everything is a file descriptor on the agent's asyncio loop: a pidfd per
service (readable when it exits), its notify socket, its log fifo, and
SIGCHLD through the loop's wakeup fd for orphans. There is no thread per
child and no timer while services run: the loop sleeps in one
``epoll_wait`` until something happens. Timers exist only while something
is pending: a backoff before a restart, a stop timeout, a watchdog deadline.

Lifecycle of a service (``Phase``)::

    start ─► STARTING ──READY=1──► RUNNING ──exit──► BACKOFF ──delay──► STARTING …
                 │                                      │
                 └──exit 0 (readiness="exit")─► STOPPED └─crash-loop limit─► FAILED
    stop  ─► STOPPING ──exit──► STOPPED   (stop_timeout → SIGKILL to the group)

Services outlive the supervisor: :meth:`BuiltinBackend.close` lets go of
them, and a new instance's :meth:`~BuiltinBackend.start` re-adopts a running
one from its record (pid + start time + spec hash) instead of starting a
duplicate.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from undistro.errors import ApplyError
from undistro.supervisor._adopt import Record, RecordStore, proc_start_time, reopen, spec_hash
from undistro.supervisor._logs import LogPipe, RotatingLog
from undistro.supervisor._notify import NotifySocket
from undistro.supervisor._policy import after_exit, validate_spec
from undistro.supervisor._reaper import reap_orphans, set_child_subreaper
from undistro.supervisor._service import Service, describe, reap
from undistro.supervisor._spawn import (
    child_environment,
    resolve_identity,
    signal_number,
    spawn,
)
from undistro.supervisor._spec import (
    EventSink,
    Phase,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
    StartHook,
)

_SETTLED = (Phase.RUNNING, Phase.STOPPED, Phase.FAILED)


class BuiltinBackend:
    """Supervise services from the calling process's asyncio loop.

    Args:
        state_dir: records, notify sockets and log fifos (one of each per
            service); the same directory lets a later instance re-adopt.
        log_dir: ``<name>.log`` files; defaults to ``state_dir``.
        start_hook: awaited before every start and restart, so that what a
            service requires is converged first.
        subreaper: become the child subreaper (process-wide) and reap the
            orphans of double-forking daemons.

    Example::

        backend = BuiltinBackend("/var/lib/undistro/services")
        backend.subscribe(print)
        await backend.start(ServiceSpec("web", ("/usr/sbin/nginx", "-g", "daemon off;")))
    """

    name = "builtin"

    def __init__(
        self,
        state_dir: str | os.PathLike[str],
        log_dir: str | os.PathLike[str] | None = None,
        *,
        start_hook: StartHook | None = None,
        subreaper: bool = True,
    ) -> None:
        self.state_dir = os.fspath(state_dir)
        self.log_dir = os.fspath(log_dir) if log_dir is not None else self.state_dir
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        os.makedirs(self.log_dir, mode=0o755, exist_ok=True)
        self._records = RecordStore(self.state_dir)
        self._start_hook = start_hook
        self._services: dict[str, Service] = {}
        self._sinks: list[EventSink] = []
        self._exit_handlers: dict[int, Callable[[], None]] = {}
        self._orphans_reaped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._subreaper = subreaper
        if subreaper:
            set_child_subreaper()

    # -- the Backend protocol -------------------------------------------------

    async def start(self, spec: ServiceSpec) -> ServiceStatus:
        """Start the service, or adopt it if a previous supervisor left it running.

        Returns once it is ready (RUNNING), done (a ``readiness="exit"``
        oneshot that exited 0: STOPPED) or FAILED; a start that crashes is
        retried with backoff meanwhile. The caller bounds the wait (the
        engine owns timeouts).
        """
        validate_spec(spec)
        identity = resolve_identity(spec)
        svc = self._services.get(spec.name)
        if svc is None:
            svc = Service(spec, identity)
            self._open_channels(svc)
            self._services[spec.name] = svc
            self._adopt(svc, spec)
        elif svc.notify is None:
            svc.spec, svc.hash, svc.identity = spec, spec_hash(spec), identity
            self._open_channels(svc)
        if svc.pid is not None and svc.hash != spec_hash(spec):
            await self._stop_process(svc, "spec changed")
        in_place = svc.pid is not None and svc.spec != spec
        svc.spec, svc.hash, svc.identity = spec, spec_hash(spec), identity
        if in_place:  # reload, restart policy, timeouts: the process stays
            self._emit(svc, "spec updated in place")
        svc.want_up = True
        if svc.pid is None and svc.task is None and svc.restart_timer is None:
            svc.failures = ()
            await self._spawn(svc)
        return await self._settle(svc)

    async def adopt(self, spec: ServiceSpec) -> ServiceStatus | None:
        """Take over the service if a previous supervisor left it running; never spawn.

        Returns its status, or None (and forgets it) if it is not running:
        how a one-shot run probes a service, or stops one that left the policy.
        """
        validate_spec(spec)
        known = self._services.get(spec.name)
        if known is not None:
            return known.snapshot()
        if self._records.load(spec.name) is None:
            return None
        svc = Service(spec, resolve_identity(spec))
        self._open_channels(svc)
        self._services[spec.name] = svc
        self._adopt(svc, spec)
        if svc.pid is None:
            self._close_channels(svc)
            del self._services[spec.name]
            return None
        return svc.snapshot()

    async def stop(self, name: str) -> ServiceStatus:
        """Stop the service and its whole process group; it stays known, in STOPPED."""
        svc = self._get(name)
        await self._stop_process(svc, "stop requested")
        self._close_channels(svc)
        return svc.snapshot()

    async def restart(self, spec: ServiceSpec) -> ServiceStatus:
        """Stop (if running), then start with ``spec``; counts as a restart."""
        validate_spec(spec)
        svc = self._services.get(spec.name)
        if svc is not None and svc.notify is not None:
            await self._stop_process(svc, "restart requested")
            svc.restarts += 1
        return await self.start(spec)

    async def reload(self, name: str) -> ServiceStatus:
        """Run the reload command (waiting for it), or send the reload signal to the main pid."""
        svc = self._get(name)
        if svc.phase is Phase.STARTING:
            await self._settle(svc)  # a signal before its handlers are set could kill it
        if svc.pid is None and (svc.restart_timer is not None or svc.task is not None):
            # Its next start comes after this call, so it reads the files as
            # they are now: that start is the reload.
            self._emit(svc, "reload satisfied by the pending restart")
            return svc.snapshot()
        if svc.pidfd is None or svc.pid is None:
            self._emit(svc, f"reload failed: not running ({svc.phase.value})")
            raise ApplyError(f"service {name!r} is not running ({svc.phase.value})")
        spec = svc.spec
        if spec.reload_command:
            info = await self._run_helper(svc, spec.reload_command)
            code, cause = describe(info)
            if code not in (0, None):
                self._emit(svc, f"reload failed: command {cause}")
                raise ApplyError(f"service {name!r}: reload command {cause}")
            self._emit(svc, f"reloaded (command {cause})")
        elif spec.reload_signal is not None:
            signal.pidfd_send_signal(svc.pidfd, signal_number(spec.reload_signal, "reload_signal"))
            self._emit(svc, f"reloaded ({spec.reload_signal})")
        else:
            raise ApplyError(f"service {name!r} has no reload signal or command")
        return svc.snapshot()

    def status(self, name: str) -> ServiceStatus | None:
        svc = self._services.get(name)
        return svc.snapshot() if svc is not None else None

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    async def close(self) -> None:
        """Let go of every service without stopping it; records stay for the next supervisor."""
        for svc in self._services.values():
            for handle in (svc.restart_timer, svc.kill_timer, svc.watchdog_timer):
                if handle is not None:
                    handle.cancel()
            svc.restart_timer = svc.kill_timer = svc.watchdog_timer = None
            if svc.task is not None:
                svc.task.cancel()
            if svc.pidfd is not None:
                self._forget_pid(svc)
            if svc.popen is not None:
                # Detach: whoever supervises next reaps it by pidfd. Left "running",
                # Popen.__del__ would queue it for a waitpid that steals its status.
                svc.popen.returncode = 0
                svc.popen = None
            self._close_channels(svc)
        self._services.clear()
        if self._loop is not None and self._subreaper:
            self._loop.remove_signal_handler(signal.SIGCHLD)
        self._loop = None

    def stats(self) -> dict[str, Any]:
        """A cheap snapshot for ``undistro services``: no I/O, JSON-serialisable."""
        now = time.time()
        services = {}
        for name, svc in sorted(self._services.items()):
            services[name] = {
                "phase": svc.phase.value,
                "pid": svc.pid,
                "uptime": round(now - svc.started_at, 3) if svc.pid is not None else None,
                "restarts": svc.restarts,
                "ready": svc.ready,
                "readiness": svc.spec.readiness,
                "status": svc.status_text,
                "exit_status": svc.exit_status,
            }
        return {"backend": self.name, "orphans_reaped": self._orphans_reaped, "services": services}

    # -- plumbing -------------------------------------------------------------

    def _get(self, name: str) -> Service:
        svc = self._services.get(name)
        if svc is None:
            raise ApplyError(f"service {name!r} is not supervised here")
        return svc

    def _loop_ready(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
            if self._subreaper:
                self._loop.add_signal_handler(signal.SIGCHLD, self._on_sigchld)
        return self._loop

    def _open_channels(self, svc: Service) -> None:
        """Bind the notify socket and open the log fifo; all or nothing."""
        try:
            self._open_channels_or_raise(svc)
        except BaseException:
            self._close_channels(svc)
            raise

    def _open_channels_or_raise(self, svc: Service) -> None:
        loop = self._loop_ready()
        name = svc.spec.name
        uid, gid = svc.identity.owner
        svc.notify = NotifySocket(
            loop,
            os.path.join(self.state_dir, f"{name}.notify"),
            uid,
            gid,
            lambda fields: self._on_notify(svc, fields),
        )
        log = RotatingLog(
            os.path.join(self.log_dir, f"{name}.log"), svc.spec.log_max_bytes, svc.spec.log_keep
        )
        try:
            svc.logs = LogPipe(loop, os.path.join(self.state_dir, f"{name}.out"), log)
        except BaseException:
            log.close()
            raise

    def _close_channels(self, svc: Service) -> None:
        if svc.notify is not None:
            svc.notify.close()
            svc.notify = None
        if svc.logs is not None:
            svc.logs.flush()
            svc.logs.close()
            svc.logs = None

    def _emit(self, svc: Service, cause: str) -> None:
        event = ServiceEvent(svc.snapshot(), cause)
        for sink in list(self._sinks):
            try:
                sink(event)
            except Exception as exc:  # a broken sink must not break supervision
                self._loop_ready().call_exception_handler(
                    {"message": "service event sink failed", "exception": exc}
                )

    def _set_phase(self, svc: Service, phase: Phase, cause: str) -> None:
        svc.phase = phase
        svc.since = time.time()
        self._emit(svc, cause)
        waiters, svc.changed = svc.changed, []
        for fut in waiters:
            if not fut.done():
                fut.set_result(None)

    async def _settle(self, svc: Service) -> ServiceStatus:
        while svc.phase not in _SETTLED:
            fut = self._loop_ready().create_future()
            svc.changed.append(fut)
            await fut
        return svc.snapshot()

    def _save_record(self, svc: Service) -> None:
        if svc.pid is None:
            return
        start_time = proc_start_time(svc.pid)
        if start_time is None:
            return
        self._records.save(
            svc.spec.name,
            Record(svc.pid, start_time, svc.hash, svc.started_at, svc.ready, svc.restarts),
        )

    def _track(self, svc: Service, pid: int, pidfd: int) -> None:
        svc.pid, svc.pidfd = pid, pidfd
        self._exit_handlers[pid] = lambda: self._on_exit(svc, pidfd)
        self._loop_ready().add_reader(pidfd, self._on_exit, svc, pidfd)

    def _forget_pid(self, svc: Service) -> None:
        assert svc.pidfd is not None
        self._loop_ready().remove_reader(svc.pidfd)
        os.close(svc.pidfd)
        if svc.pid is not None:
            self._exit_handlers.pop(svc.pid, None)
        svc.pidfd = None

    @staticmethod
    def _group_of(pid: int) -> int | None:
        """The main pid's own group: while the main pid lives (or is an unreaped
        zombie) it is a member, so the group id cannot be reused under us."""
        try:
            return os.getpgid(pid)
        except ProcessLookupError:
            return None

    # -- adoption -------------------------------------------------------------

    def _adopt(self, svc: Service, spec: ServiceSpec) -> None:
        record = self._records.load(spec.name)
        if record is None:
            return
        pidfd = reopen(record)
        if pidfd is None:
            self._records.remove(spec.name)
            return
        svc.started_at, svc.restarts = record.started_at, record.restarts
        svc.pgid = self._group_of(record.pid)
        svc.ready = record.ready or spec.readiness == "none"
        svc.hash = record.spec_hash
        svc.want_up = True
        self._track(svc, record.pid, pidfd)
        self._arm_watchdog(svc)
        self._set_phase(svc, Phase.RUNNING if svc.ready else Phase.STARTING, "adopted")

    # -- spawning -------------------------------------------------------------

    async def _spawn(self, svc: Service) -> None:
        spec = svc.spec
        if self._start_hook is not None:
            try:
                await self._start_hook(spec)
            except Exception as exc:
                svc.want_up = False
                self._set_phase(svc, Phase.FAILED, f"requirements failed: {exc}")
                return
        if not svc.want_up or svc.pid is not None or svc.notify is None or svc.logs is None:
            return
        extra = {"NOTIFY_SOCKET": svc.notify.path}
        if spec.watchdog_sec is not None:
            extra["WATCHDOG_USEC"] = str(int(spec.watchdog_sec * 1_000_000))
        env = child_environment(spec, svc.identity, extra)
        out = svc.logs.child_fd()
        try:
            popen = spawn(spec.argv, spec, svc.identity, env, out)
        except OSError as exc:
            svc.want_up = False
            self._set_phase(svc, Phase.FAILED, f"spawn failed: {exc.strerror or exc}")
            return
        finally:
            os.close(out)
        svc.popen = popen
        svc.pgid = popen.pid
        svc.started_at = time.time()
        svc.ready = spec.readiness == "none"
        svc.status_text = ""
        svc.exit_status = None
        svc.watchdog_fired = False
        self._track(svc, popen.pid, os.pidfd_open(popen.pid))
        self._save_record(svc)
        self._arm_watchdog(svc)
        self._set_phase(svc, Phase.RUNNING if svc.ready else Phase.STARTING, "spawned")

    async def _run_helper(self, svc: Service, argv: tuple[str, ...]) -> os.waitid_result | None:
        """Run a command as the service would run (user, env, cwd, log) and wait for its exit."""
        assert svc.logs is not None
        env = child_environment(svc.spec, svc.identity, {"MAINPID": str(svc.pid)})
        out = svc.logs.child_fd()
        try:
            popen = spawn(argv, svc.spec, svc.identity, env, out)
        except OSError as exc:
            raise ApplyError(f"service {svc.spec.name!r}: cannot run {argv[0]!r}: {exc}") from exc
        finally:
            os.close(out)
        loop = self._loop_ready()
        pidfd = os.pidfd_open(popen.pid)
        done: asyncio.Future[os.waitid_result | None] = loop.create_future()

        def exited() -> None:
            self._exit_handlers.pop(popen.pid, None)
            loop.remove_reader(pidfd)
            info = reap(pidfd, popen)
            if not done.done():
                done.set_result(info)

        self._exit_handlers[popen.pid] = exited
        loop.add_reader(pidfd, exited)
        return await done

    def _restart_due(self, svc: Service) -> None:
        svc.restart_timer = None
        svc.restarts += 1
        svc.task = self._loop_ready().create_task(self._spawn(svc))
        svc.task.add_done_callback(lambda _t: setattr(svc, "task", None))

    # -- exits ----------------------------------------------------------------

    def _on_exit(self, svc: Service, pidfd: int) -> None:
        if svc.notify is not None:
            svc.notify.drain()  # a MAINPID= or READY=1 sent just before exiting counts
        if pidfd != svc.pidfd:
            return  # handed over by MAINPID=; _on_handover reaps the old one
        # The main pid is a zombie until reaped, so its group id cannot be reused yet:
        # kill what is left of the group now, race-free.
        if svc.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(svc.pgid, signal.SIGKILL)
        loop = self._loop_ready()
        loop.remove_reader(pidfd)
        if svc.pid is not None:
            self._exit_handlers.pop(svc.pid, None)
        code, cause = describe(reap(pidfd, svc.popen))
        svc.popen = None
        svc.pid = svc.pidfd = None
        svc.exit_status = code
        self._records.remove(svc.spec.name)
        for handle in (svc.watchdog_timer, svc.kill_timer):
            if handle is not None:
                handle.cancel()
        svc.watchdog_timer = svc.kill_timer = None
        self._after_exit(svc, code, cause)

    def _after_exit(self, svc: Service, code: int | None, cause: str) -> None:
        decision = after_exit(
            svc.spec,
            wanted=svc.want_up,
            exit_status=code,
            cause=cause,
            watchdog_fired=svc.watchdog_fired,
            failures=svc.failures,
            now=time.monotonic(),
        )
        svc.failures = decision.failures
        svc.ready = decision.ready
        if decision.delay is None:
            svc.want_up = False
        else:
            loop = self._loop_ready()
            svc.restart_timer = loop.call_later(decision.delay, self._restart_due, svc)
        self._set_phase(svc, decision.phase, decision.cause)

    def _on_sigchld(self) -> None:
        def tracked(pid: int) -> bool:
            handler = self._exit_handlers.get(pid)
            if handler is None:
                return False
            handler()
            return True

        self._orphans_reaped += len(reap_orphans(tracked))

    # -- stopping -------------------------------------------------------------

    async def _stop_process(self, svc: Service, cause: str) -> None:
        svc.want_up = False
        if svc.restart_timer is not None:
            svc.restart_timer.cancel()
            svc.restart_timer = None
        if svc.task is not None:
            svc.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await svc.task
        if svc.pid is None:
            if svc.phase is not Phase.STOPPED:
                svc.ready = False
                self._set_phase(svc, Phase.STOPPED, cause)
            return
        self._set_phase(svc, Phase.STOPPING, cause)
        self._signal_all(svc, signal_number(svc.spec.stop_signal, "stop_signal"))
        self._signal_all(svc, signal.SIGCONT)  # a stopped process must wake to die
        svc.kill_timer = self._loop_ready().call_later(svc.spec.stop_timeout, self._kill_group, svc)
        while svc.pid is not None:
            fut = self._loop_ready().create_future()
            svc.changed.append(fut)
            await fut

    def _kill_group(self, svc: Service) -> None:
        svc.kill_timer = None
        self._signal_all(svc, signal.SIGKILL)

    @staticmethod
    def _signal_all(svc: Service, sig: signal.Signals) -> None:
        """Signal the process group and the main pid (which MAINPID= may have moved out of it)."""
        if svc.pidfd is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                signal.pidfd_send_signal(svc.pidfd, sig)
        if svc.pgid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(svc.pgid, sig)

    # -- notifications ----------------------------------------------------------

    def _on_notify(self, svc: Service, fields: dict[str, str]) -> None:
        if "MAINPID" in fields:
            self._on_handover(svc, fields["MAINPID"])
        if "STATUS" in fields:
            svc.status_text = fields["STATUS"]
        if "WATCHDOG_USEC" in fields and fields["WATCHDOG_USEC"].isdigit():
            svc.watchdog_usec = int(fields["WATCHDOG_USEC"])
            self._arm_watchdog(svc)
        if fields.get("WATCHDOG") == "1" and svc.watchdog_usec > 0:
            svc.watchdog_deadline = self._loop_ready().time() + svc.watchdog_usec / 1e6
        elif fields.get("WATCHDOG") == "trigger":
            self._watchdog_fire(svc)
        if fields.get("STOPPING") == "1" and svc.phase in (Phase.STARTING, Phase.RUNNING):
            self._set_phase(svc, Phase.STOPPING, "service is stopping")
        if fields.get("READY") == "1" and svc.phase is Phase.STARTING and svc.pid is not None:
            svc.ready = True
            if svc.spec.readiness == "notify":
                self._save_record(svc)
                self._set_phase(svc, Phase.RUNNING, "ready")

    def _on_handover(self, svc: Service, value: str) -> None:
        """``MAINPID=``: the daemon's real main process is another pid (a forking daemon)."""
        if not value.isdigit() or svc.pid is None or svc.pidfd is None or int(value) == svc.pid:
            return
        new_pid = int(value)
        try:
            new_fd = os.pidfd_open(new_pid)
        except OSError:
            return
        loop = self._loop_ready()
        old_pid, old_fd, old_popen = svc.pid, svc.pidfd, svc.popen
        loop.remove_reader(old_fd)
        svc.popen = None

        def reap_old() -> None:
            self._exit_handlers.pop(old_pid, None)
            loop.remove_reader(old_fd)
            reap(old_fd, old_popen)

        self._exit_handlers[old_pid] = reap_old
        loop.add_reader(old_fd, reap_old)
        svc.pgid = self._group_of(new_pid)
        self._track(svc, new_pid, new_fd)
        self._save_record(svc)
        self._emit(svc, f"main pid {old_pid} -> {new_pid}")

    # -- watchdog ---------------------------------------------------------------

    def _arm_watchdog(self, svc: Service) -> None:
        """One timer per watched service, re-armed lazily: a WATCHDOG=1 only moves the deadline."""
        if svc.spec.watchdog_sec is not None:
            svc.watchdog_usec = int(svc.spec.watchdog_sec * 1_000_000)
        if svc.watchdog_usec <= 0 or svc.pid is None:
            return
        loop = self._loop_ready()
        svc.watchdog_deadline = loop.time() + svc.watchdog_usec / 1e6
        if svc.watchdog_timer is None:
            svc.watchdog_timer = loop.call_at(svc.watchdog_deadline, self._watchdog_due, svc)

    def _watchdog_due(self, svc: Service) -> None:
        svc.watchdog_timer = None
        if svc.pid is None:
            return
        loop = self._loop_ready()
        if loop.time() < svc.watchdog_deadline:
            svc.watchdog_timer = loop.call_at(svc.watchdog_deadline, self._watchdog_due, svc)
            return
        self._watchdog_fire(svc)

    def _watchdog_fire(self, svc: Service) -> None:
        if svc.pid is None or svc.watchdog_fired:
            return
        svc.watchdog_fired = True
        self._emit(svc, "watchdog timeout: killing the process group")
        self._kill_group(svc)
