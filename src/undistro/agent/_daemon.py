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

Events never queue work. They mark ids dirty, or ask for a full check or a
reload, in one :class:`~undistro.agent._pending.Pending` (as large as the
policy, however fast events come); one runner task makes *passes*: each
takes everything pending, reloads the policy if asked, runs the engine once
(in a worker thread, or a forked child for big runs) and answers the callers
that were waiting when it started. Whatever happens during a pass is
pending for the next one. So a storm costs a pass per pass-duration, not a
run per event; an ``apply`` through the socket never races a repair (it is
a pass), and two applies at once share one.

The loop itself never blocks: it reads inotify, answers the control socket
and supervises services while a pass runs, and SIGTERM stops the pass in
progress (the child is killed, a run in chunks stops between chunks) so the
agent exits within a second.
"""

from __future__ import annotations

import asyncio
import functools
import os
import signal
import sys
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from undistro.agent import _zygote
from undistro.agent._control import ControlServer
from undistro.agent._converge import Candidate, Checked, Converger, Outcome, trim_memory
from undistro.agent._pending import Pending, Waiter
from undistro.agent._promises import Promises
from undistro.errors import PolicyError, UndistroError
from undistro.events import ENTRY_MASK, SETTLED_MASK, Batch, PathWatcher
from undistro.events._binding import IN_CREATE, IN_DELETE, IN_MOVED_FROM, IN_MOVED_TO
from undistro.resources import Watch

if TYPE_CHECKING:
    from undistro.content._http import HttpFace
    from undistro.fleet import FleetMember
    from undistro.supervisor import ServiceEvent, ServiceSpec, Supervisors

POLICY_KEY = "@policy"
"""Watch key of the policy's files (no ':' so it never collides with an id)."""
POLICY_DIRS_KEY = "@policy-dirs"
"""Watch key of the policy's directory structure (a new sub-directory)."""
REJECTED, UNCHANGED, SWAPPED = "rejected", "unchanged", "swapped"
_DIR_MASK = IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO
_LOGGED_PER_PASS = 20  # repairs logged one by one; the journal has them all


class Agent:
    """One agent: a converger, the watches of its policy, a control socket."""

    def __init__(self, converger: Converger, *, audit_every: float | None = None) -> None:
        self.converger = converger
        self.audit_every = audit_every
        self.watcher = PathWatcher()
        self._control = ControlServer(converger.state_dir, self._request)
        self._stop: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._pending = Pending()
        self._busy = False
        self._compiling: asyncio.Task[None] | None = None
        self._compiled: tuple[str, Candidate | PolicyError | None, list[Waiter]] | None = None
        self._longest_pass = 0.0
        self._started = time.monotonic()
        self._policy_dirs: list[str] = []
        self._last_policy_error: str | None = None
        self.services: Supervisors | None = None
        self._fleet: FleetMember | None = None
        self._face: HttpFace | None = None
        self._counts = {
            "wakeups": 0,
            "passes": 0,
            "checks": 0,
            "repairs": 0,
            "failures": 0,
            "reloads": 0,
            "rejected_policies": 0,
            "rescans": 0,
        }
        self._promises = Promises(self._counts, self._log)

    # -- life cycle -----------------------------------------------------------

    async def run(self) -> int:
        """Serve until SIGTERM/SIGINT; return the exit status (0: clean)."""
        loop = asyncio.get_running_loop()
        self._stop, self._wake = asyncio.Event(), asyncio.Event()
        # Handlers first: a SIGTERM at any moment, the start-up converge
        # included, stops the work in progress and exits.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        self._control.claim()
        _zygote.start()  # while the agent has one thread (see _zygote)
        reading = False
        try:
            try:
                policy = await loop.run_in_executor(None, self.converger.load)
            except PolicyError:
                if self._stop.is_set():
                    return 0  # the compile was killed by SIGTERM, not refused
                raise
            if self._stop.is_set():
                return 0
            self._log(f"policy {policy.dir}: {len(policy.resources)} resources")
            trim_memory()  # the compile's and the unpickling's leftovers
            self._host_services(loop)
            # Watches first, converge second: a change made while converging
            # is still seen (and marked for the next pass).
            self._declare_all()
            self._sync_watches(recheck=False)
            loop.add_reader(self.watcher.fileno(), self._on_inotify)
            reading = True
            self._pending.check_all("agent start")
            # The converge created directories that watches now belong in:
            # its events are queued by the time a pass returns, so drain
            # them (placing those watches) and pass again until nothing is
            # left, then say "ready".
            while not self._stop.is_set():
                self._on_inotify()
                if not self._has_work():
                    break
                await self._pass()
            if self._stop.is_set():
                return 0
            await self._control.start()
            await self._join_fleet()
            loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
            if self.audit_every:
                loop.call_later(self.audit_every, self._audit)
            self._longest_pass = 0.0  # from now on: passes caused by events
            self._log(f"ready: watching {self.watcher.stats()['watched_dirs']} directories")
            runner = loop.create_task(self._runner())
            await self._stop.wait()
            self._wake.set()
            await runner
        finally:
            if self._compiling is not None:
                await self._compiling  # its child was killed by stop()
            if reading:
                loop.remove_reader(self.watcher.fileno())
            await self._control.close()
            if self._face is not None:
                await self._face.close()
            if self._fleet is not None:
                await self._fleet.close()  # Serf leaves: the fleet sees this node go
            self._answer_all({"ok": False, "error": "the agent is stopping"})
            await asyncio.sleep(0)  # let the control handlers send those answers
            if self.services is not None:
                await self.services.close()  # the services keep running
            self.watcher.close()
            self.converger.close()
            _zygote.stop()
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
        if self._fleet is not None:
            from undistro.content._page import open_face

            self._face = await open_face(self._fleet, self.converger.state_dir, log=self._log)

    async def switch_policy(self, policy_dir: str, cause: str) -> bool:
        """Enforce ``policy_dir`` (a verified fleet revision) the way a changed
        policy directory is reloaded; the old one stays if it is invalid."""
        old = self.converger.policy_dir
        self.converger.policy_dir = os.path.abspath(policy_dir)
        reply = await self._request_reload(cause, "reload")
        if not reply.get("ok"):
            self.converger.policy_dir = old
            self._declare_policy()
            self._sync_watches()
            return False
        self._policy_dirs = _walk_dirs(self.converger.policy_dir)
        return True

    async def converge_all(self, cause: str) -> str:
        self._pending.check_all(cause)
        done = self._pending.wait("converge")
        self._kick()
        await done
        failed = self.stats()["promises"].get("failed", 0)
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
        failing, repairs = self._promises.recent(3)
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
            # For the fleet page (content/_page_state.py cuts these first to fit).
            "generation": _generation(self.converger.root),
            "failing": failing,
            "services": {name: entry.get("phase") for name, entry in sorted(services.items())},
            "repairs": repairs,
        }

    def journal_fleet(self, outcome: str, what: str, error: str | None) -> None:
        from undistro.state import JournalEntry, new_run_id

        entry = JournalEntry(
            time.time(), new_run_id(), "fleet:revision", outcome, what, (), error=error
        )
        self.converger.store.commit(journal=[entry])

    def log(self, message: str) -> None:
        self._log(message)

    def stop(self) -> None:
        """Stop at once: the work in progress is abandoned (a forked child
        killed, a chunked run stopped before its next chunk)."""
        if self._stop is not None and not self._stop.is_set():
            self._stop.set()
            self.converger.cancel()
            if self._wake is not None:
                self._wake.set()

    def _kick(self) -> None:
        if self._wake is not None and self._has_work():
            self._wake.set()

    def _has_work(self) -> bool:
        return bool(self._pending) or self._compiled is not None

    async def _runner(self) -> None:
        """Make passes while anything is pending; sleep (no timer) otherwise."""
        assert self._wake is not None and self._stop is not None
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            while self._has_work() and not self._stop.is_set():
                await self._pass()

    # -- events (on the loop: they only mark what is pending) -----------------

    def _on_inotify(self) -> None:
        batch = self.watcher.read()
        if not batch:
            self._sync_watches()  # events for neighbours only; a dir may have appeared
            return
        self._counts["wakeups"] += 1
        pending = self._pending
        policy_cause = self._policy_event(batch)
        if batch.overflow:
            self._counts["rescans"] += 1
            cause = "inotify queue overflow: events were lost, full check"
            self._log(cause)
            self._journal_agent("rescan", cause)
            self._request_reload(cause)  # lost events may have been the policy's
            pending.check_all(cause)
        if policy_cause is not None:
            self._request_reload(policy_cause)
        if batch.rescan:
            self._counts["rescans"] += 1
            lost = [f"watch lost ({why}): {key}" for key, why in sorted(batch.rescan.items())]
            self._journal_agent("rescan", *lost)
            pending.mark(batch.rescan)
        pending.mark(batch.changed)
        self._sync_watches()
        self._kick()

    def _policy_event(self, batch: Batch) -> str | None:
        """Pop the policy's own keys from ``batch``; the cause if it changed."""
        cause = batch.changed.pop(POLICY_KEY, None) or batch.rescan.pop(POLICY_KEY, None)
        dirs = batch.changed.pop(POLICY_DIRS_KEY, None) or batch.rescan.pop(POLICY_DIRS_KEY, None)
        if dirs is not None and _walk_dirs(self.converger.policy_dir) != self._policy_dirs:
            cause = cause or dirs  # a new sub-directory: what it holds may matter
        return cause

    def _on_sighup(self) -> None:
        self._request_reload("SIGHUP")

    def _audit(self) -> None:
        self._pending.check_all("audit")
        self._kick()
        assert self.audit_every is not None
        asyncio.get_running_loop().call_later(self.audit_every, self._audit)

    # -- passes ---------------------------------------------------------------

    async def _pass(self) -> None:
        """Take everything pending and do it: journal, reload, one engine
        run, answers. Whatever arrives meanwhile waits for the next pass."""
        self._on_inotify()  # what the kernel queued until now belongs to this pass
        pending = self._pending
        self._counts["passes"] += 1
        self._busy = True
        began = time.monotonic()
        waiters: list[Waiter] = []
        try:
            self._flush_journal()
            waiters, pending.waiters = pending.waiters, []
            full, pending.full = pending.full, None
            compiled, self._compiled = self._compiled, None
            if compiled is not None:
                cause, result, reloaders = compiled
                verdict = await self._swap(cause, result)
                for w in reloaders:
                    if w.kind == "reload":
                        w.answer(self._reload_reply(verdict))
                    elif verdict == REJECTED:
                        w.answer({"ok": False, "error": self._last_policy_error})
                    else:
                        waiters.append(w)  # an apply: this pass's run is its run
                if verdict == SWAPPED and full is None:
                    full = f"policy reloaded: {cause}"
            reports = {w.kind for w in waiters if not w.future.done() and w.kind != "converge"}
            if reports:
                full = "apply (via agent)"
            dirty, pending.dirty = pending.dirty, {}
            only = None if full is not None else set(dirty) & self.converger.policy.resources.keys()
            if only is None or only:
                checked = await self._check(only, dirty, full or "inotify", reports)
                for w in waiters:
                    if w.kind in reports:
                        w.answer(self._apply_reply(checked, w.kind))
            for w in waiters:
                w.answer({"ok": True})
            self._sync_watches()
        except Exception as exc:  # the runner must outlive any bug
            self._counts["failures"] += 1
            self._log(f"pass failed: {type(exc).__name__}: {exc}")
            for w in waiters:
                w.answer({"ok": False, "error": f"the agent failed: {type(exc).__name__}: {exc}"})
        finally:
            self._busy = False
            self._longest_pass = max(self._longest_pass, time.monotonic() - began)
            if self._fleet is not None:
                self._fleet.state_changed()  # the fleet page hears of it (coalesced)

    async def _check(
        self, only: set[str] | None, causes: dict[str, str], label: str, reports: set[str]
    ) -> Checked | None:
        """One engine run off the loop; its outcomes noted. None if it failed."""
        loop = asyncio.get_running_loop()
        now = time.time()
        run = functools.partial(
            self.converger.run,
            only,
            causes,
            label,
            remembered=self._promises.remembered(),
            reports=tuple(reports),
        )
        try:
            checked = await loop.run_in_executor(None, run)
        except UndistroError as exc:
            if self.converger.cancelled:
                return None
            self._counts["failures"] += 1
            self._log(f"check failed ({label}): {exc}")
            self.converger.journal_agent("failed", label, error=str(exc))
            return None
        if checked.cancelled:
            return None
        self._counts["checks"] += checked.kept
        logged = 0
        for out in checked.outcomes:
            logged += self._promises.note(out, now, log=logged < _LOGGED_PER_PASS)
        if logged > _LOGGED_PER_PASS:
            self._log(
                f"... and {logged - _LOGGED_PER_PASS} more repairs or failures (undistro log)"
            )
        if only is None:
            self._promises.full_check = (now, label)
            await self._retire(loop)
        return checked

    def _apply_reply(self, checked: Checked | None, kind: str) -> dict[str, Any]:
        if checked is None:
            return {"ok": False, "error": "the run failed or was stopped (see the agent's log)"}
        return {"ok": True, "report": checked.reports.get(kind, ""), "exit": 0 if checked.ok else 1}

    def _reload_reply(self, verdict: str) -> dict[str, Any]:
        if verdict == REJECTED:
            return {"ok": False, "error": self._last_policy_error}
        return {"ok": True, "resources": len(self.converger.policy.resources)}

    def _answer_all(self, reply: dict[str, Any]) -> None:
        pending = self._pending
        waiters = pending.waiters + pending.reload_waiters
        pending.waiters, pending.reload_waiters = [], []
        if self._compiled is not None:
            waiters += self._compiled[2]
        for w in waiters:
            w.answer(reply)

    # -- policy ---------------------------------------------------------------

    def _request_reload(self, cause: str, kind: str | None = None) -> Any:
        """Re-validate the policy soon: compiled beside the passes (the old
        policy is enforced meanwhile), swapped in by the next pass. With
        ``kind``, the future of a caller answered after that pass."""
        done = self._pending.wait(kind, reload=True) if kind is not None else None
        self._pending.reload_policy(cause)
        self._start_compile()
        return done

    def _start_compile(self) -> None:
        pending = self._pending
        if self._compiling is not None or pending.reload is None:
            return
        if self._stop is not None and self._stop.is_set():
            return
        cause, pending.reload = pending.reload, None
        waiters, pending.reload_waiters = pending.reload_waiters, []
        self._compiling = asyncio.get_running_loop().create_task(self._compile(cause, waiters))

    async def _compile(self, cause: str, waiters: list[Waiter]) -> None:
        """Compile off the loop (a forked child with a deadline: neither a
        FIFO nor a runaway template can block the agent); hand the result,
        whatever it is, to the next pass. Never raises."""
        loop = asyncio.get_running_loop()
        result: Candidate | PolicyError | None
        try:
            result = await loop.run_in_executor(None, self.converger.compile)
        except PolicyError as exc:
            result = exc
        except Exception as exc:  # compile() wraps everything; this is the belt
            result = PolicyError([f"{type(exc).__name__}: {exc}"])
        finally:
            self._compiling = None
        if self._stop is not None and self._stop.is_set():
            for w in waiters:
                w.answer({"ok": False, "error": "the agent is stopping"})
            return
        if self._compiled is not None:  # not swapped yet: the newer result wins
            waiters = self._compiled[2] + waiters
        self._compiled = (cause, result, waiters)
        self._kick()
        self._start_compile()

    async def _swap(self, cause: str, result: Candidate | PolicyError | None) -> str:
        """In a pass: put a compiled policy in force, or say why not.
        Returns REJECTED, UNCHANGED or SWAPPED."""
        if isinstance(result, PolicyError):
            self._reject(result, cause)
            return REJECTED
        if result is None:
            self._last_policy_error = None
            return UNCHANGED
        loop = asyncio.get_running_loop()
        try:
            policy = await loop.run_in_executor(None, self.converger.swap, result)
        except PolicyError as exc:
            self._reject(exc, cause)
            return REJECTED
        self._last_policy_error = None
        self._counts["reloads"] += 1
        self._log(f"policy reloaded ({cause}): {len(policy.resources)} resources")
        self._declare_all()
        self._sync_watches(recheck=False)
        return SWAPPED

    def _reject(self, exc: PolicyError, cause: str) -> None:
        """Keep the policy in force; say why the new one was refused."""
        self._counts["rejected_policies"] += 1
        self._last_policy_error = str(exc)
        problems = exc.problems or [str(exc)]
        for line in problems[:20]:
            self._log(f"policy rejected, keeping the previous one: {line}")
        if len(problems) > 20:
            self._log(f"... and {len(problems) - 20} more problems")
        self._journal_agent("policy-error", cause, error=str(exc))
        self._declare_policy()  # the broken files must still be watched
        self._sync_watches()

    def _declare_all(self) -> None:
        policy = self.converger.policy
        for gone in self.watcher.keys() - policy.resources.keys() - {POLICY_KEY, POLICY_DIRS_KEY}:
            self.watcher.forget(gone)
            self._promises.drop(gone)
            self._pending.dirty.pop(gone, None)
        for rid, resource in policy.resources.items():
            self.watcher.declare(rid, self.converger.watches(resource), mask=ENTRY_MASK)
        self._declare_policy()

    def _declare_policy(self) -> None:
        self._policy_dirs = _walk_dirs(self.converger.policy_dir)
        trees = [Watch("tree", d) for d in self._policy_dirs]
        extra = [Watch("path", p) for p in self.converger.extra_inputs()]
        self.watcher.declare(POLICY_KEY, trees + extra, mask=SETTLED_MASK, scratch=False)
        self.watcher.declare(POLICY_DIRS_KEY, trees, mask=_DIR_MASK, scratch=False)

    def _sync_watches(self, *, recheck: bool = True) -> None:
        """Match the kernel's watches to the policy's paths. A directory
        watched anew (re-created by a repair, say) may have changed before
        its watch existed: its resources are marked for one more check,
        unless a full check follows anyway (``recheck=False``)."""
        failures = self.watcher.sync()
        placed = {k: v for k, v in self.watcher.placed.items() if k not in failures}
        placed.pop(POLICY_KEY, None)
        placed.pop(POLICY_DIRS_KEY, None)
        if recheck and placed:
            self._pending.mark(placed)
        if failures:
            self._counts["rescans"] += 1
            lines = [f"{reason}: {key}" for key, reason in sorted(failures.items())]
            for line in lines[:10]:
                self._log(f"{line} is checked now but not watched")
            if len(lines) > 10:
                self._log(f"... and {len(lines) - 10} more resources not watched")
            self._journal_agent("unwatched", *lines)
            failures.pop(POLICY_KEY, None)
            failures.pop(POLICY_DIRS_KEY, None)
            self._pending.mark(failures)
        self._kick()

    # -- journal ----------------------------------------------------------------

    def _journal_agent(self, outcome: str, *causes: str, error: str | None = None) -> None:
        """Journal what the agent did or refused at the next pass's start:
        never beside an engine run's own commit (one connection, one thread)."""
        from undistro.agent._converge import AGENT_RESOURCE
        from undistro.state import JournalEntry, new_run_id

        run, now = new_run_id(), time.time()
        self._pending.record(
            [JournalEntry(now, run, AGENT_RESOURCE, outcome, c, (), error=error) for c in causes]
        )
        self._kick()

    def _flush_journal(self) -> None:
        pending = self._pending
        entries, pending.journal = pending.journal, []
        if pending.dropped:
            self._log(f"{pending.dropped} agent journal entries dropped in a burst")
            pending.dropped = 0
        if entries:
            self.converger.store.commit(journal=entries)

    async def _retire(self, loop: asyncio.AbstractEventLoop) -> None:
        """After a full run: stop the services that left the policy."""
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
            self._promises.drop(f"service:{name}")
            self._log(f"stopped service {name}: it left the policy")
        if gone:
            self.converger.journal_agent(
                "repaired", *(f"stopped service:{n}: it left the policy" for n in gone)
            )

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
        self._pending.mark(dict.fromkeys(closure, f"before restarting {rid}"))
        done = self._pending.wait("converge")
        self._kick()
        await done
        bad = [r for r in closure if self._promises.get(r).state in ("failed", "skipped")]
        if bad:
            from undistro.errors import ApplyError

            raise ApplyError(f"requirement {bad[0]} did not converge")

    def _on_service_event(self, event: ServiceEvent) -> None:
        """A backend's report (on the loop). A crash loop or a failed start
        makes the promise failed and is journalled; restarts are logged."""
        status = event.status
        rid = f"service:{status.name}"
        if self._fleet is not None:
            self._fleet.state_changed()
        if status.phase.value == "failed":
            now = time.time()
            # The journal entry comes through _journal_event, like every
            # other state change of a service.
            self._promises.note(
                Outcome(rid, "failed", f"supervisor: {event.cause}", (), event.cause), now
            )
        elif status.phase.value == "backoff" or event.cause == "adopted":
            self._log(f"{rid}: {event.cause}")

    def _journal_event(self, rid: str, outcome: str, cause: str, when: float) -> None:
        """Every service state change goes to the journal (the supervisor's
        one callback into it), in order, written by the next pass — never
        beside a run's own commit."""
        from undistro.state import JournalEntry, new_run_id

        error = f"supervisor: {cause}" if outcome == "failed" else None
        self._pending.record(
            [JournalEntry(when, new_run_id(), rid, outcome, cause, (), error=error)]
        )
        self._kick()

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
                ids = self._promises.not_kept()
            resources = {rid: self._promises.get(rid).as_dict() for rid in ids}
            return {"ok": True, **self.stats(), "resources": resources}
        if op == "reload":
            reply: dict[str, Any] = await self._request_reload("reload requested", "reload")
            return reply
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
        ``undistro apply`` would have printed, and its exit status. Applies
        that arrive together share one pass; each is answered by a pass
        that started after it asked."""
        wanted = request.get("policy")
        if wanted is not None and os.path.abspath(wanted) != self.converger.policy_dir:
            return {
                "ok": False,
                "error": f"the agent runs policy {self.converger.policy_dir}, not {wanted}"
                " (stop it, or apply its policy)",
            }
        diff = request.get("diff", True)
        kind = "quiet" if request.get("quiet") else ("diff" if diff else "plain")
        reply: dict[str, Any] = await self._request_reload("apply via agent", kind)
        return reply

    # -- inspection -----------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """A cheap snapshot: counters and sizes, no I/O but one /proc read."""
        policy = self.converger.policy
        states = self._promises.states(len(policy.resources))
        return {
            "pid": os.getpid(),
            "uptime_s": round(time.monotonic() - self._started, 3),
            "rss_bytes": _rss_bytes(),
            "child_max_rss_bytes": _child_max_rss_bytes(),
            "policy": {
                "dir": policy.dir,
                "name": policy.name,
                "resources": len(policy.resources),
                "last_error": self._last_policy_error,
            },
            "promises": states,
            "events": {**self.watcher.stats(), **self._counts},
            "pending": {
                **self._pending.stats(),
                "busy": self._busy,
                "longest_pass_s": round(self._longest_pass, 3),
            },
            "control_requests": self._control.requests,
            "audit_every": self.audit_every,
            "forks": _zygote.stats(),
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


def _generation(root: str) -> int | None:
    """The default profile's current generation: one readlink, no kegs import."""
    try:
        target = os.readlink(os.path.join(root, "var/lib/undistro/profiles/default/current"))
    except OSError:
        return None
    return int(target[4:]) if target.startswith("gen-") and target[4:].isdigit() else None


def _child_max_rss_bytes() -> int:
    """The largest resident size any forked check or compile reached (the
    zygote's workers are the zygote's children, not ours)."""
    import resource

    ours = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return max(ours, _zygote.worker_max_rss())


def _rss_bytes() -> int:
    with open("/proc/self/statm", "rb") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
