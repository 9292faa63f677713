"""The agent: converge once, then sleep until an event says something moved.

The loop is asyncio's default one with no timer armed (unless ``audit_every``
asks for one), so an idle agent blocks in ``epoll_wait`` and makes no system
call at all. What wakes it:

* the inotify fd — a managed path changed: only the resources concerned are
  checked (and repaired, with their ``notify`` targets, by the engine);
* the inotify fd on the policy directory — the policy is re-validated in
  full and swapped in only if valid;
* SIGHUP (reload), SIGTERM/SIGINT (clean exit, status 0);
* the control socket (``undistro status``, ``apply``, ``reload``,
  ``services``, ``service``);
* a supervised service's state change (a pidfd, a notify socket, an s6
  fifodir, a D-Bus signal), reported by its backend.

The engine runs in a worker thread, one run at a time under an asyncio
lock, so that the loop keeps supervising services while a run waits for
one to become ready, and so that ``[[service]]`` actions can reach the
backends living on this loop. Checks, socket requests and crash restarts'
requirement converges are serialised by that lock: an ``apply`` through the
socket never races a repair.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from undistro.agent._control import ControlServer
from undistro.agent._converge import Converger, Outcome
from undistro.errors import PolicyError, UndistroError
from undistro.events import ENTRY_MASK, SETTLED_MASK, Batch, PathWatcher
from undistro.events._binding import IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO
from undistro.resources import Watch

if TYPE_CHECKING:
    from undistro.fleet import FleetMember
    from undistro.supervisor import ServiceEvent, ServiceSpec, Supervisors

POLICY_KEY = "@policy"
"""Watch key of the policy's files (no ':' so it never collides with an id)."""
POLICY_DIRS_KEY = "@policy-dirs"
"""Watch key of the policy's directory structure (a new sub-directory)."""
REJECTED, UNCHANGED, SWAPPED = "rejected", "unchanged", "swapped"
_DIR_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO


class Promise:
    """The last word on one resource: what ``undistro status`` lists.

    Slotted, and kept only for resources with something to say (a repair,
    a failure): the agent's memory must not grow with what is merely kept.
    """

    __slots__ = ("cause", "error", "last_check", "last_repair", "state")

    def __init__(self) -> None:
        self.state = ""
        self.cause = ""
        self.error: str | None = None
        self.last_check = 0.0
        self.last_repair: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


class Agent:
    """One agent: a converger, the watches of its policy, a control socket."""

    def __init__(self, converger: Converger, *, audit_every: float | None = None) -> None:
        self.converger = converger
        self.audit_every = audit_every
        self.watcher = PathWatcher()
        self._control = ControlServer(converger.state_dir, self._request)
        self._stop: asyncio.Event | None = None
        self._started = time.monotonic()
        self._promises: dict[str, Promise] = {}
        self._full_check: tuple[float, str] | None = None
        self._policy_dirs: list[str] = []
        self._last_policy_error: str | None = None
        self._lock: asyncio.Lock | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.services: Supervisors | None = None
        self._fleet: FleetMember | None = None
        self._counts = {
            "wakeups": 0,
            "checks": 0,
            "repairs": 0,
            "failures": 0,
            "reloads": 0,
            "rejected_policies": 0,
            "rescans": 0,
        }

    # -- life cycle -----------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit status (0: clean)."""
        loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        # Handlers first: a SIGTERM during a long start-up converge is then
        # a clean exit once that converge is done, not a kill in the middle.
        self._lock = asyncio.Lock()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        policy = self.converger.load()
        self._log(f"policy {policy.dir}: {len(policy.resources)} resources")
        self._host_services(loop)
        # Watches first, converge second: a change made while converging is
        # still seen (and the paired events of our own repairs find "kept").
        self._declare_all()
        await self._sync_watches(recheck=False)
        await self._converge(None, {}, "agent start")
        # The converge created directories that watches now belong in: take
        # its own events (and anything else already queued) before "ready".
        await self._take_inotify()
        await self._control.start()
        await self._join_fleet()
        loop.add_reader(self.watcher.fileno(), self._on_inotify)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload("SIGHUP")))
        if self.audit_every:
            loop.call_later(self.audit_every, self._audit)
        self._log(f"ready: watching {self.watcher.stats()['watched_dirs']} directories")
        try:
            await self._stop.wait()
        finally:
            loop.remove_reader(self.watcher.fileno())
            await self._control.close()
            if self._fleet is not None:
                await self._fleet.close()  # Serf leaves: the fleet sees this node go
            async with self._lock:  # let a run in progress finish
                for task in list(self._tasks):
                    task.cancel()
                if self.services is not None:
                    await self.services.close()  # the services keep running
            self.watcher.close()
            self.converger.close()
        self._log("stopped")
        return 0

    def _host_services(self, loop: asyncio.AbstractEventLoop) -> None:
        """Supervise ``[[service]]`` resources from this loop; backends are
        made on first use (a policy without services pays for none)."""
        from undistro.supervisor import Supervisors

        self.services = Supervisors(
            loop,
            self.converger.state_dir,
            root=self.converger.root,
            converge=self._before_start,
            journal=self._journal_event,
        )
        self.services.subscribe(self._on_service_event)
        self.converger.host_services(self.services)

    # -- the fleet: one more event source (undistro.fleet) -------------------

    async def _join_fleet(self) -> None:
        node = self.converger.node
        if not node.fleet or self.services is None:
            return
        from undistro.fleet import start_fleet

        self._fleet = await start_fleet(
            self,
            node_fleet=node.fleet,
            hostname=node.hostname,
            node_tags=node.tags,
            where=node.config_path or "node.toml",
            state_dir=self.converger.state_dir,
            backend=await self.services.backend("builtin"),
        )
        self._log(f"fleet: joining as {self._fleet.config.name}" if self._fleet else "fleet: off")

    async def switch_policy(self, policy_dir: str, cause: str) -> bool:
        """Enforce ``policy_dir`` (a verified fleet revision) the way a changed
        policy directory is reloaded; the old one stays if it is invalid."""
        old = self.converger.policy_dir
        self.converger.policy_dir = os.path.abspath(policy_dir)
        if await self._reload(cause) == REJECTED:
            self.converger.policy_dir = old
            self._declare_policy()
            await self._sync_watches()
            return False
        self._policy_dirs = _walk_dirs(self.converger.policy_dir)
        return True

    async def converge_all(self, cause: str) -> str:
        await self._converge(None, {}, cause)
        failed = sum(1 for p in self._promises.values() if p.state == "failed")
        return f"converged, {failed} failed"

    async def restart_service(self, name: str, cause: str) -> str:
        reply = await self._service_command({"action": "restart", "name": name})
        if not reply.get("ok"):
            raise RuntimeError(str(reply.get("error")))
        return f"restarted {name} (pid {reply.get('pid')})"

    def fleet_summary(self) -> dict[str, Any]:
        """This node in under 1 KB, most important first (the fleet drops
        fields from the end to fit Serf's response limit)."""
        from undistro.fleet._receive import in_force

        stats = self.stats()
        promises = stats["promises"]
        revision = in_force(self.converger.state_dir)
        services = self.services.stats() if self.services is not None else {}
        phases = [entry.get("phase") for entry in services.values()]
        return {
            "revision": revision.number if revision else None,
            "kept": promises.get("kept", 0),
            "repaired": promises.get("repaired", 0),
            "failed": promises.get("failed", 0),
            "services_up": phases.count("running"),
            "services_failed": phases.count("failed"),
            "last_error": (stats["policy"]["last_error"] or "")[:200] or None,
            "rss_mb": round(stats["rss_bytes"] / 1e6, 1),
            "policy": stats["policy"]["name"],
        }

    def journal_fleet(self, outcome: str, what: str, error: str | None) -> None:
        from undistro.state import JournalEntry, new_run_id

        entry = JournalEntry(
            time.time(), new_run_id(), "fleet:revision", outcome, what, (), error=error
        )
        self.converger.store.commit(journal=[entry])

    def log(self, message: str) -> None:
        self._log(message)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run ``coro`` as a task the agent keeps (and cancels on exit)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    # -- events ---------------------------------------------------------------

    def _on_inotify(self) -> None:
        self._spawn(self._take_inotify())

    async def _take_inotify(self) -> None:
        assert self._lock is not None
        async with self._lock:
            # Read under the lock: a batch waiting for a run in progress then
            # includes the paired events of that run's own repairs.
            batch = self.watcher.read()
        if not batch:
            await self._sync_watches()  # events for neighbours only; a dir may have appeared
            return
        self._counts["wakeups"] += 1
        policy_cause = self._policy_event(batch)
        if batch.overflow:
            self._counts["rescans"] += 1
            cause = "inotify queue overflow: events were lost, full check"
            self._log(cause)
            await self._journal_agent("rescan", cause)
            if await self._reload(cause) != SWAPPED:  # lost events may have been the policy's
                await self._converge(None, {}, cause)
            await self._sync_watches()
            return
        # A valid new policy is checked in full, which covers the batch; an
        # invalid one leaves the batch to be checked under the old policy.
        if policy_cause is not None and await self._reload(policy_cause) == SWAPPED:
            await self._sync_watches()
            return
        if batch.rescan:
            self._counts["rescans"] += 1
            lost = [f"watch lost ({why}): {key}" for key, why in sorted(batch.rescan.items())]
            await self._journal_agent("rescan", *lost)
        causes = {**batch.rescan, **batch.changed}
        await self._converge(set(causes), causes, "inotify")
        await self._sync_watches()

    def _policy_event(self, batch: Batch) -> str | None:
        """Pop the policy's own keys from ``batch``; the cause if it changed."""
        cause = batch.changed.pop(POLICY_KEY, None) or batch.rescan.pop(POLICY_KEY, None)
        dirs = batch.changed.pop(POLICY_DIRS_KEY, None) or batch.rescan.pop(POLICY_DIRS_KEY, None)
        if dirs is not None and _walk_dirs(self.converger.policy_dir) != self._policy_dirs:
            cause = cause or dirs  # a new sub-directory: what it holds may matter
        return cause

    def _audit(self) -> None:
        self._spawn(self._converge(None, {}, "audit"))
        assert self.audit_every is not None
        asyncio.get_running_loop().call_later(self.audit_every, self._audit)

    # -- policy ---------------------------------------------------------------

    async def _reload(self, cause: str) -> str:
        """Re-validate the policy; if valid and changed, swap it in and
        converge all of it. Returns REJECTED, UNCHANGED or SWAPPED."""
        assert self._lock is not None
        try:
            async with self._lock:  # a run in progress keeps the policy it started with
                policy, changed = self.converger.reload()
        except PolicyError as exc:
            await self._reject(exc, cause)
            return REJECTED
        self._last_policy_error = None
        if not changed:
            return UNCHANGED
        self._counts["reloads"] += 1
        self._log(f"policy reloaded ({cause}): {len(policy.resources)} resources")
        self._declare_all()
        await self._sync_watches(recheck=False)
        await self._converge(None, {}, f"policy reloaded: {cause}")
        return SWAPPED

    async def _reject(self, exc: PolicyError, cause: str) -> None:
        """Keep the policy in force; say why the new one was refused."""
        self._counts["rejected_policies"] += 1
        self._last_policy_error = str(exc)
        for line in exc.problems:
            self._log(f"policy rejected, keeping the previous one: {line}")
        await self._journal_agent("policy-error", cause, error=str(exc))
        self._declare_policy()  # the broken files must still be watched
        await self._sync_watches()

    def _declare_all(self) -> None:
        policy = self.converger.policy
        for gone in self.watcher.keys() - policy.resources.keys() - {POLICY_KEY, POLICY_DIRS_KEY}:
            self.watcher.forget(gone)
            self._promises.pop(gone, None)
        for rid, resource in policy.resources.items():
            self.watcher.declare(rid, self.converger.watches(resource), mask=ENTRY_MASK)
        self._declare_policy()

    def _declare_policy(self) -> None:
        self._policy_dirs = _walk_dirs(self.converger.policy_dir)
        trees = [Watch("tree", d) for d in self._policy_dirs]
        extra = [Watch("path", p) for p in self.converger.extra_inputs()]
        self.watcher.declare(POLICY_KEY, trees + extra, mask=SETTLED_MASK)
        self.watcher.declare(POLICY_DIRS_KEY, trees, mask=_DIR_MASK)

    async def _sync_watches(self, *, recheck: bool = True) -> None:
        """Match the kernel's watches to the policy's paths. A directory
        watched anew (re-created by a repair, say) may have changed before
        its watch existed: its resources are checked once more, unless a
        full check follows anyway (``recheck=False``)."""
        failures = self.watcher.sync()
        placed = {k: v for k, v in self.watcher.placed.items() if k not in failures}
        placed.pop(POLICY_KEY, None)
        placed.pop(POLICY_DIRS_KEY, None)
        if recheck and placed:
            await self._converge(set(placed), placed, "watch placed")
        if not failures:
            return
        self._counts["rescans"] += 1
        lines = [f"{reason}: {key}" for key, reason in sorted(failures.items())]
        for line in lines[:10]:
            self._log(f"{line} is checked now but not watched")
        if len(lines) > 10:
            self._log(f"... and {len(lines) - 10} more resources not watched")
        await self._journal_agent("unwatched", *lines)
        await self._converge(
            set(failures) - {POLICY_KEY, POLICY_DIRS_KEY}, failures, "watch failed"
        )

    # -- converging -----------------------------------------------------------

    async def _converge(self, only: set[str] | None, causes: dict[str, str], label: str) -> None:
        """One engine run, in a worker thread, under the lock."""
        assert self._lock is not None
        loop = asyncio.get_running_loop()
        async with self._lock:
            if only is not None:
                only &= self.converger.policy.resources.keys()
                if not only:
                    return
            now = time.time()
            try:
                outcomes = await loop.run_in_executor(
                    None, lambda: list(self.converger.run(only, causes, label))
                )
            except UndistroError as exc:
                self._counts["failures"] += 1
                self._log(f"check failed ({label}): {exc}")
                self.converger.journal_agent("failed", label, error=str(exc))
                return
            for out in outcomes:
                self._note(out, now)
            if only is None:
                self._full_check = (now, label)
                await self._retire(loop)

    async def _retire(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a full run (under the lock): stop the services that left the policy."""
        services = self.services
        if services is None or not services.recorded():
            return
        keep = self.converger.service_names()
        try:
            gone = await loop.run_in_executor(None, services.retire, keep)
        except UndistroError as exc:
            self._log(f"stopping services that left the policy failed: {exc}")
            self.converger.journal_agent("failed", "services left the policy", error=str(exc))
            return
        for name in gone:
            self._promises.pop(f"service:{name}", None)
            self._log(f"stopped service {name}: it left the policy")
        if gone:
            self.converger.journal_agent(
                "repaired", *(f"stopped service:{n}: it left the policy" for n in gone)
            )

    async def _journal_agent(self, outcome: str, *causes: str, error: str | None = None) -> None:
        """Journal from the loop, never beside an engine run's own commit."""
        assert self._lock is not None
        async with self._lock:
            self.converger.journal_agent(outcome, *causes, error=error)

    # -- services ---------------------------------------------------------------

    async def _before_start(self, spec: ServiceSpec) -> None:
        """Before a restart the supervisor initiates itself (a crash), converge
        everything the service requires: it never restarts on drifted
        configuration. Raises if a requirement failed (the backend then
        marks the service failed instead of starting it)."""
        rid = f"service:{spec.name}"
        if rid not in self.converger.policy.resources:
            return
        closure = self.converger.requirements(rid) - {rid}
        if not closure:
            return
        await self._converge(closure, {}, f"before restarting {rid}")
        bad = [r for r in closure if self._promise(r).state in ("failed", "skipped")]
        if bad:
            from undistro.errors import ApplyError

            raise ApplyError(f"requirement {bad[0]} did not converge")

    def _on_service_event(self, event: ServiceEvent) -> None:
        """A backend's report (on the loop). A crash loop or a failed start
        makes the promise failed and is journalled; restarts are logged."""
        status = event.status
        rid = f"service:{status.name}"
        if status.phase.value == "failed":
            now = time.time()
            self._note(Outcome(rid, "failed", f"supervisor: {event.cause}", (), event.cause), now)
        elif status.phase.value == "backoff" or event.cause == "adopted":
            self._log(f"{rid}: {event.cause}")

    def _journal_event(self, rid: str, outcome: str, cause: str, when: float) -> None:
        """Every service state change goes to the journal (the supervisor's
        one callback into it), in order, never beside a run's own commit."""
        error = f"supervisor: {cause}" if outcome == "failed" else None
        self._spawn(self._journal_service(rid, outcome, cause, error, when))

    async def _journal_service(
        self, rid: str, outcome: str, cause: str, error: str | None, when: float
    ) -> None:
        from undistro.state import JournalEntry, new_run_id

        assert self._lock is not None
        async with self._lock:
            entry = JournalEntry(when, new_run_id(), rid, outcome, cause, (), error=error)
            self.converger.store.commit(journal=[entry])

    def _note(self, out: Outcome, now: float) -> None:
        self._counts["checks"] += 1
        promise = self._promises.get(out.id)
        if promise is None:
            if out.outcome == "kept":
                return  # the common case needs no record: see _promise()
            promise = self._promises[out.id] = Promise()
        promise.state, promise.last_check, promise.cause = out.outcome, now, out.cause
        promise.error = out.error
        if out.outcome == "repaired":
            self._counts["repairs"] += 1
            promise.last_repair = now
            self._log(f"repaired {out.id} ({out.cause}): {'; '.join(out.actions)}")
        elif out.outcome == "failed":
            self._counts["failures"] += 1
            self._log(f"failed {out.id} ({out.cause}): {out.error}")

    def _promise(self, rid: str) -> Promise:
        """What is known of ``rid``. Only resources ever repaired or not kept
        have a record (10,000 records would cost ~1.5 MB of the budget);
        the rest were kept at the last full check."""
        promise = self._promises.get(rid)
        if promise is None:
            promise = Promise()
            if self._full_check is not None:
                promise.state = "kept"
                promise.last_check, promise.cause = self._full_check
            else:
                promise.state = "unchecked"
        return promise

    # -- control socket -------------------------------------------------------

    async def _request(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "status":
            # Kept promises are the bulk and say nothing; list them on request.
            if request.get("all"):
                ids: Iterable[str] = self.converger.policy.resources
            else:
                ids = [rid for rid, p in self._promises.items() if p.state != "kept"]
            resources = {rid: self._promise(rid).as_dict() for rid in ids}
            return {"ok": True, **self.stats(), "resources": resources}
        if op == "reload":
            if await self._reload("reload requested") == REJECTED:
                return {"ok": False, "error": self._last_policy_error}
            return {"ok": True, "resources": len(self.converger.policy.resources)}
        if op == "apply":
            return await self._apply(request)
        if op == "services":
            assert self.services is not None
            return {"ok": True, "services": self.services.stats()}
        if op == "service":
            return await self._service_command(request)
        return {
            "ok": False,
            "error": f"unknown op {op!r} (known: status, apply, reload, services, service)",
        }

    async def _service_command(self, request: dict[str, Any]) -> dict[str, Any]:
        """``undistro service start|stop|restart|reload NAME``: on the loop,
        not under the lock, so that a start converges the service's
        requirements first through the start hook, like a crash restart."""
        assert self.services is not None
        action, name = request.get("action"), request.get("name")
        if action not in ("start", "stop", "restart", "reload") or not isinstance(name, str):
            return {
                "ok": False,
                "error": "expected an action (start|stop|restart|reload) and a NAME",
            }
        resource = self.converger.policy.resources.get(f"service:{name}")
        found: tuple[ServiceSpec, str] | None
        if resource is not None:
            found = (resource.spec(self.converger.root), resource.values["backend"])  # type: ignore[attr-defined]
        else:
            found = self.services.applied(name)
            if found is None or action != "stop":
                return {"ok": False, "error": f"no service {name!r} in the policy"}
        try:
            status = await self.services.command(action, found[1], found[0])
        except (UndistroError, OSError) as exc:
            return {"ok": False, "error": f"service {name}: {exc}"}
        if status is None:
            return {"ok": True, "phase": "stopped", "pid": None}
        if status.phase.value == "failed":
            return {
                "ok": False,
                "error": f"service {name} failed ({status.status_text or 'undistro logs ' + name})",
            }
        return {"ok": True, "phase": status.phase.value, "pid": status.pid}

    async def _apply(self, request: dict[str, Any]) -> dict[str, Any]:
        """Re-read the policy and converge all of it; reply with the report
        ``undistro apply`` would have printed, and its exit status."""
        from io import StringIO

        from undistro.commands._report import print_run, summary_line

        assert self._lock is not None
        wanted = request.get("policy")
        if wanted is not None and os.path.abspath(wanted) != self.converger.policy_dir:
            return {
                "ok": False,
                "error": f"the agent runs policy {self.converger.policy_dir}, not {wanted}"
                " (stop it, or apply its policy)",
            }
        try:
            async with self._lock:
                self.converger.reload()
        except PolicyError as exc:
            await self._reject(exc, "apply via agent")
            return {"ok": False, "error": str(exc)}
        self._declare_all()
        await self._sync_watches(recheck=False)
        loop = asyncio.get_running_loop()
        async with self._lock:
            summary = await loop.run_in_executor(None, self.converger.apply, "apply (via agent)")
            await self._retire(loop)
        now = time.time()
        for result in summary.results.values():
            self._note(
                Outcome(
                    result.id, result.status, summary.cause, tuple(result.actions), result.error
                ),
                now,
            )
        out = StringIO()
        if request.get("quiet"):
            out.write(summary_line(summary) + "\n")
        else:
            print_run(summary, out, show_diffs=bool(request.get("diff", True)))
        return {"ok": True, "report": out.getvalue(), "exit": 0 if summary.ok else 1}

    # -- inspection -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A cheap snapshot: counters and sizes, no I/O but one /proc read."""
        policy = self.converger.policy
        states: dict[str, int] = {}
        for promise in self._promises.values():
            states[promise.state] = states.get(promise.state, 0) + 1
        plain = len(policy.resources) - len(self._promises)
        if plain:
            state = "kept" if self._full_check else "unchecked"
            states[state] = states.get(state, 0) + plain
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "rss_bytes": _rss_bytes(),
            "policy": {
                "dir": policy.dir,
                "name": policy.name,
                "resources": len(policy.resources),
                "last_error": self._last_policy_error,
            },
            "promises": states,
            "events": {**self.watcher.stats(), **self._counts},
            "control_requests": self._control.requests,
            "audit_every": self.audit_every,
        }

    @staticmethod
    def _log(message: str) -> None:
        print(f"undistro agent: {message}", file=sys.stderr, flush=True)


def _walk_dirs(top: str) -> list[str]:
    """The policy directory and its sub-directories (dot-directories such as
    ``.git`` excluded: their churn is not the policy)."""
    found = []
    for dirpath, dirnames, _files in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.append(dirpath)
    return found


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
