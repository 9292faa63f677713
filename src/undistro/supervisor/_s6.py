"""The s6 backend: s6-supervise keeps the services alive, undistro listens.

Each service becomes an s6 service directory (see :mod:`._s6_dir`) linked
into a scan directory watched by ``s6-svscan``. Commands are letters written
to ``SVC/supervise/control`` (what ``s6-svc`` does); state changes arrive as
bytes in a fifo of ``SVC/event/`` (see :mod:`undistro.events._s6_fifodir`),
and only then is ``SVC/supervise/status`` read. Nothing is polled, and the
services and their supervision outlive the agent: a new backend instance
re-attaches to what is running without restarting it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from undistro.errors import ApplyError, ValidationError
from undistro.events._s6_fifodir import FifodirListener
from undistro.supervisor._files import write_if_changed
from undistro.supervisor._policy import validate_spec
from undistro.supervisor._s6_cause import event_cause
from undistro.supervisor._s6_dir import SPEC_FILE, render, spec_digest
from undistro.supervisor._s6_status import DTALLY_ENTRY, S6Status, death_stamps, read_status
from undistro.supervisor._service import describe, reap
from undistro.supervisor._spawn import child_environment, resolve_identity, spawn
from undistro.supervisor._spec import EventSink, Phase, ServiceEvent, ServiceSpec, ServiceStatus

# Signals s6-supervise 2.11 relays by letter; others go straight to the pid.
_SIGNAL_LETTERS = {
    "SIGALRM": "a",
    "SIGABRT": "b",
    "SIGQUIT": "q",
    "SIGHUP": "h",
    "SIGKILL": "k",
    "SIGTERM": "t",
    "SIGINT": "i",
    "SIGUSR1": "1",
    "SIGUSR2": "2",
    "SIGCONT": "c",
    "SIGWINCH": "y",
}
_FINAL = frozenset({Phase.RUNNING, Phase.FAILED, Phase.STOPPED})

Predicate = Callable[[ServiceStatus, str], bool]
"""Called with the status after each event and every event letter seen since the wait began."""


@dataclass
class _Waiter:
    until: Predicate
    future: asyncio.Future[ServiceStatus]
    seen: str = ""


@dataclass
class _Service:
    spec: ServiceSpec
    path: str
    listener: FifodirListener
    want_up: bool = False
    raw: S6Status | None = None
    status: ServiceStatus | None = None
    waiters: list[_Waiter] = field(default_factory=list)


def _settle(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def phase_of(raw: S6Status | None, spec: ServiceSpec, want_up: bool) -> Phase:
    """What an s6 snapshot means under undistro's phases (pure; see the docs table)."""
    if raw is None:
        return Phase.STOPPED
    if raw.up:
        if not want_up:
            return Phase.STOPPING
        if spec.readiness == "notify" and not raw.ready:
            return Phase.STARTING
        return Phase.RUNNING
    if raw.want_up and want_up:
        return Phase.BACKOFF  # in ./finish (the backoff sleep) or in s6's 1 s respawn throttle
    if raw.finishing:
        return Phase.STOPPING
    if not want_up:
        return Phase.STOPPED
    if raw.exit_code == 0:
        return Phase.STOPPED  # a clean exit under on-failure, or a one-shot that is done
    return Phase.FAILED  # restart = never, or s6-permafailon declared the crash loop


class S6Backend:
    """Supervise services through s6.

    Args:
        scandir: the directory ``s6-svscan`` watches; started here if no
            s6-svscan is running on it.
        state_dir: where service directories (``s6/NAME``) and logs
            (``logs/NAME``) are kept.

    Example::

        backend = S6Backend("/run/undistro/scan", "/var/lib/undistro")
        backend.subscribe(print)
        await backend.start(ServiceSpec("web", ("busybox", "httpd", "-f")))
        await backend.close()          # the services keep running
    """

    name = "s6"

    def __init__(self, scandir: str, state_dir: str) -> None:
        self.scandir = os.path.abspath(scandir)
        self.state_dir = os.path.abspath(state_dir)
        self._services: dict[str, _Service] = {}
        self._sinks: list[EventSink] = []
        self._scanner: subprocess.Popen[bytes] | None = None
        self._events = 0

    # -- the Backend protocol -------------------------------------------------

    def subscribe(self, sink: EventSink) -> None:
        self._sinks.append(sink)

    def status(self, name: str) -> ServiceStatus | None:
        svc = self._services.get(name)
        return svc.status if svc else None

    async def start(self, spec: ServiceSpec) -> ServiceStatus:
        svc, changed = await self._attach(spec)
        phase = phase_of(svc.raw, spec, svc.want_up)
        if not changed and svc.want_up and phase in (Phase.RUNNING, Phase.STARTING):
            if phase is Phase.RUNNING:
                return self._current(svc)
            return await self._command(svc, "", lambda st, _: st.phase in _FINAL)
        if changed and svc.raw is not None and (svc.raw.up or svc.raw.finishing):
            await self.stop(spec.name)
        self._clear_death_tally(svc)
        svc.want_up = True
        letter = "o" if spec.restart == "never" or spec.readiness == "exit" else "u"
        if spec.readiness == "exit":
            # A one-shot is done at its D, not at its spawn.
            return await self._command(svc, letter, lambda st, ev: "D" in ev)
        return await self._command(svc, letter, lambda st, ev: st.phase in _FINAL and "u" in ev)

    async def stop(self, name: str) -> ServiceStatus:
        svc = self._get(name)
        svc.want_up = False
        raw = svc.raw
        if raw is None or not (raw.up or raw.finishing):
            if raw is not None and raw.want_up:
                # Down, in s6's respawn throttle: "d" cancels the respawn and no event follows.
                self._write_control(svc, "d")
            return self._refresh(svc)
        fut = self._wait(
            svc, lambda st, ev: st.phase in (Phase.STOPPED, Phase.FAILED) and "D" in ev
        )
        self._write_control(svc, "d")
        if raw.finishing:
            self._cut_backoff(svc, raw.pid)
        return await fut

    def _cut_backoff(self, svc: _Service, pid: int) -> None:
        """End a finish script that is sleeping out its backoff, so a stop is prompt.

        Only once it is the ``sleep`` (finish execs into it after killing the
        group): killing it earlier could leave the group alive. s6 then reads
        the finish's death as an ordinary end, and the service stays down.
        """
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{pid}/comm") as f:
                comm = f.read().strip()
            if comm == "sleep" and os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(svc.path):
                signal.pidfd_send_signal(pidfd, signal.SIGTERM)
        except (FileNotFoundError, ProcessLookupError):
            pass
        finally:
            os.close(pidfd)

    async def restart(self, spec: ServiceSpec) -> ServiceStatus:
        if spec.name in self._services:
            await self.stop(spec.name)
        return await self.start(spec)

    async def reload(self, name: str) -> ServiceStatus:
        """Run the reload command, or send the reload signal, as the builtin backend does.

        The command runs as the service runs (its user, environment and
        working directory, with ``MAINPID``) and writes to the service's log;
        the backend waits for it and fails with its exit status. A service in
        BACKOFF needs none: s6 is about to start it on the current files.
        """
        svc = self._get(name)
        spec, raw = svc.spec, svc.raw
        if raw is None or not raw.up:
            if svc.status is not None and svc.status.phase is Phase.BACKOFF:
                # s6-supervise respawns it by itself and the new process reads
                # what is on disk then: that start is the reload.
                self._emit(svc, "reload: satisfied by the restart under way")
                return svc.status
            phase = svc.status.phase.value if svc.status else "unknown"
            raise ApplyError(f"service {name!r} is not running ({phase})")
        if spec.reload_command:
            code, cause = await self._run_helper(svc, raw.pid, spec.reload_command)
            if code not in (0, None):
                raise ApplyError(f"service {name!r}: reload command {cause}")
            self._emit(svc, f"reloaded (command {cause})")
        elif spec.reload_signal:
            letter = _SIGNAL_LETTERS.get(spec.reload_signal)
            if letter:
                self._write_control(svc, letter)
            else:
                os.kill(raw.pid, signal.Signals[spec.reload_signal])
            self._emit(svc, f"reloaded ({spec.reload_signal})")
        else:
            raise ApplyError(f"service {name}: no reload_signal or reload_command")
        return self._current(svc)

    async def _run_helper(
        self, svc: _Service, mainpid: int, argv: tuple[str, ...]
    ) -> tuple[int | None, str]:
        """Run ``argv`` as the service runs, output into its log; (exit status, cause)."""
        spec = svc.spec
        if spec.working_directory is None:  # ./run starts in the service directory
            spec = dataclasses.replace(spec, working_directory=svc.path)
        identity = resolve_identity(spec)
        env = child_environment(spec, identity, {"MAINPID": str(mainpid)})
        out = self._log_pipe(svc, mainpid)
        try:
            # In the caller's process group: a builtin backend in this process
            # reaps orphans outside it, and would steal this exit status.
            popen = spawn(argv, spec, identity, env, out, new_session=False)
        except OSError as exc:
            raise ApplyError(f"service {spec.name!r}: cannot run {argv[0]!r}: {exc}") from exc
        finally:
            if out != 2:
                os.close(out)
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(popen.pid)
        done: asyncio.Future[None] = loop.create_future()
        loop.add_reader(pidfd, _settle, done)
        try:
            await done
        except BaseException:
            # Cancelled (the engine's timeout): leave neither a process nor a zombie.
            loop.remove_reader(pidfd)
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            reap(pidfd, popen)
            raise
        loop.remove_reader(pidfd)
        return describe(reap(pidfd, popen))

    @staticmethod
    def _log_pipe(svc: _Service, mainpid: int) -> int:
        """A write end of the pipe into the service's s6-log.

        s6-svscan gives s6-supervise that pipe as its stdout, and ./run
        inherits it; s6-supervise never changes it (the service may), so it
        is opened through ``/proc/<s6-supervise>/fd/1`` — s6-supervise being
        the parent of the main pid, checked by name and directory. Falls back
        to the agent's stderr where it cannot be found.
        """
        try:
            with open(f"/proc/{mainpid}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{ppid}/comm") as f:
                ours = f.read().strip() == "s6-supervise"
            if ours and os.readlink(f"/proc/{ppid}/cwd") == os.path.realpath(svc.path):
                fd = os.open(f"/proc/{ppid}/fd/1", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                os.set_blocking(fd, True)
                return fd
        except (OSError, ValueError, IndexError):
            pass
        return 2

    async def close(self) -> None:
        """Stop listening; s6-svscan, the supervisors and the services keep running."""
        for svc in self._services.values():
            svc.listener.close()
            for waiter in svc.waiters:
                waiter.future.cancel()
        self._services.clear()

    async def shutdown(self) -> None:
        """Close, then stop the s6-svscan undistro started on this scan directory
        (by this instance or an earlier one: its pid is recorded) and with it
        every service under it. For tests and for tearing a scan directory down."""
        await self.close()
        proc, self._scanner = self._scanner, None
        pid = proc.pid if proc is not None else self._recorded_scanner()
        if pid is not None:
            try:
                pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                pidfd = -1
            if pidfd >= 0:
                loop = asyncio.get_running_loop()
                done: asyncio.Future[None] = loop.create_future()
                loop.add_reader(pidfd, _settle, done)
                try:
                    signal.pidfd_send_signal(pidfd, signal.SIGTERM)
                    await done  # s6-svscan exits once every s6-supervise under it has
                finally:
                    loop.remove_reader(pidfd)
                    os.close(pidfd)
        if proc is not None:
            proc.wait()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._scanner_pidfile)

    @property
    def _scanner_pidfile(self) -> str:
        return os.path.join(self.state_dir, "s6-svscan.pid")

    def _recorded_scanner(self) -> int | None:
        """The recorded s6-svscan pid, if that process is still s6-svscan on our scandir."""
        try:
            with open(self._scanner_pidfile) as f:
                pid = int(f.read())
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        if os.path.basename(argv[0]) == b"s6-svscan" and self.scandir.encode() in argv:
            return pid
        return None

    def log_file(self, name: str) -> str:
        """The service's current log (stdout and stderr, timestamped by s6-log,
        rotated by size into the same directory), for ``undistro logs``."""
        return os.path.join(self.state_dir, "logs", name, "current")

    def stats(self) -> dict[str, int]:
        """A cheap snapshot for ``undistro status``."""
        return {"services": len(self._services), "events": self._events}

    # -- attaching ------------------------------------------------------------

    def _get(self, name: str) -> _Service:
        try:
            return self._services[name]
        except KeyError:
            raise ApplyError(f"service {name}: not known to the s6 backend") from None

    async def _attach(self, spec: ServiceSpec) -> tuple[_Service, bool]:
        """Write the service directory, make sure it is supervised and listened to.

        Returns the record and whether the directory's spec changed (which
        needs a restart for a running service to pick it up).
        """
        validate_spec(spec)
        if spec.watchdog_sec is not None:
            # s6-supervise has no watchdog; ignoring the setting would be a silent lie.
            raise ValidationError("watchdog_sec", "the s6 backend has no watchdog")
        path = os.path.join(self.state_dir, "s6", spec.name)
        logdir = os.path.join(self.state_dir, "logs", spec.name)
        files = render(spec, logdir)
        for d in (path, os.path.join(path, "log"), logdir):
            os.makedirs(d, exist_ok=True)
        try:
            with open(os.path.join(path, SPEC_FILE)) as f:
                changed = f.read().strip() != spec_digest(spec)
        except FileNotFoundError:
            changed = True
        for rel, (content, mode) in files.items():
            write_if_changed(os.path.join(path, rel), content, mode)
        if spec.readiness == "exit":
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(path, "notification-fd"))

        svc = self._services.get(spec.name)
        if svc is None:
            os.makedirs(os.path.join(path, "event"), mode=0o700, exist_ok=True)
            svc = _Service(spec, path, FifodirListener(os.path.join(path, "event")))
            svc.listener.open(asyncio.get_running_loop(), partial(self._on_events, svc))
            self._services[spec.name] = svc
            if not self._supervised(svc):
                await self._supervise(svc)
            svc.raw = read_status(path)
            svc.want_up = bool(svc.raw and (svc.raw.want_up or svc.raw.up))
            self._refresh(svc)
        svc.spec = spec
        return svc, changed

    def _supervised(self, svc: _Service) -> bool:
        try:
            os.close(
                os.open(os.path.join(svc.path, "supervise", "control"), os.O_WRONLY | os.O_NONBLOCK)
            )
        except OSError as e:
            if e.errno in (errno.ENXIO, errno.ENOENT):
                return False
            raise
        return True

    async def _supervise(self, svc: _Service) -> None:
        """Link the service into the scan directory and wait for s6-supervise's ``s``."""
        await self._ensure_scanner()
        link = os.path.join(self.scandir, svc.spec.name)
        if not os.path.islink(link):
            os.symlink(svc.path, link)
        fut = self._wait(svc, lambda st, ev: "s" in ev)
        self._scanner_control(b"a")
        await fut

    async def _ensure_scanner(self) -> None:
        os.makedirs(self.scandir, exist_ok=True)
        try:
            self._scanner_control(b"")
            return
        except ApplyError:
            pass
        loop = asyncio.get_running_loop()
        r, w = os.pipe()
        ready: asyncio.Future[None] = loop.create_future()
        loop.add_reader(r, _settle, ready)
        log = open(os.path.join(self.state_dir, "s6-svscan.log"), "ab")  # noqa: SIM115
        try:
            # A session of its own: the scanner and the services outlive the agent.
            self._scanner = subprocess.Popen(
                ["s6-svscan", "-d", str(w), self.scandir],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                pass_fds=(w,),
                start_new_session=True,
            )
            os.close(w)
            write_if_changed(self._scanner_pidfile, f"{self._scanner.pid}\n")
            await ready
        finally:
            loop.remove_reader(r)
            os.close(r)
            log.close()

    def _scanner_control(self, cmd: bytes) -> None:
        path = os.path.join(self.scandir, ".s6-svscan", "control")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise ApplyError(f"no s6-svscan running on {self.scandir}: {e.strerror}") from None
        try:
            if cmd:
                os.write(fd, cmd)
        finally:
            os.close(fd)

    # -- commands and events --------------------------------------------------

    def _write_control(self, svc: _Service, letters: str) -> None:
        path = os.path.join(svc.path, "supervise", "control")
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as e:
            raise ApplyError(
                f"service {svc.spec.name}: s6-supervise not running: {e.strerror}"
            ) from None
        try:
            os.write(fd, letters.encode())
        finally:
            os.close(fd)

    def _wait(self, svc: _Service, pred: Predicate) -> asyncio.Future[ServiceStatus]:
        fut: asyncio.Future[ServiceStatus] = asyncio.get_running_loop().create_future()
        svc.waiters.append(_Waiter(pred, fut))
        return fut

    async def _command(self, svc: _Service, letters: str, until: Predicate) -> ServiceStatus:
        """Send ``letters`` and wait for the event that satisfies ``until``.

        The waiter is registered before the write, and events are only
        handled when this coroutine awaits, so no event can slip between.
        """
        fut = self._wait(svc, until)
        if letters:
            self._write_control(svc, letters)
        return await fut

    def _clear_death_tally(self, svc: _Service) -> None:
        # The crash-loop count and the backoff step start afresh at each start.
        with contextlib.suppress(FileNotFoundError):
            os.truncate(os.path.join(svc.path, "supervise", "death_tally"), 0)

    def _on_events(self, svc: _Service, data: bytes) -> None:
        self._events += 1
        letters = data.decode("ascii", "replace")
        svc.raw = read_status(svc.path)
        status = self._refresh(svc)
        deaths = death_stamps(svc.path) if any(c in letters for c in "dDO") else []
        self._emit(svc, event_cause(letters, svc.raw, svc.spec, status.phase, deaths))
        for waiter in list(svc.waiters):
            waiter.seen += letters
            if waiter.future.done() or waiter.until(status, waiter.seen):
                svc.waiters.remove(waiter)
                if not waiter.future.done():
                    waiter.future.set_result(status)

    def _emit(self, svc: _Service, cause: str) -> None:
        event = ServiceEvent(self._current(svc), cause)
        for sink in self._sinks:
            sink(event)

    def _current(self, svc: _Service) -> ServiceStatus:
        assert svc.status is not None
        return svc.status

    @staticmethod
    def _oneshot_done(svc: _Service, phase: Phase) -> bool:
        """A one-shot that exited 0 is STOPPED and ready, as with the builtin backend."""
        raw = svc.raw
        return (
            svc.spec.readiness == "exit"
            and phase is Phase.STOPPED
            and svc.want_up
            and raw is not None
            and raw.exit_code == 0
        )

    def _refresh(self, svc: _Service) -> ServiceStatus:
        raw = svc.raw
        phase = phase_of(raw, svc.spec, svc.want_up)
        restarts = 0
        with contextlib.suppress(FileNotFoundError):
            deaths = os.stat(os.path.join(svc.path, "supervise", "death_tally")).st_size
            restarts = deaths // DTALLY_ENTRY
        old = svc.status
        now = time.time()
        if raw is not None and raw.stamp:
            # s6's own stamp of the last up/down: a service adopted by a new agent
            # keeps its true uptime. Never in the future (a clock set back).
            since = min(raw.stamp, now)
        else:
            since = old.since if old is not None and old.phase is phase else now
        status = ServiceStatus(
            name=svc.spec.name,
            phase=phase,
            pid=raw.pid if raw is not None and raw.up else None,
            since=since,
            restarts=restarts if phase is not Phase.STOPPED else 0,
            ready=phase is Phase.RUNNING or self._oneshot_done(svc, phase),
            exit_status=raw.exit_code if raw is not None and not raw.up else None,
            backend=self.name,
        )
        svc.status = status
        return status
