"""The engine: probe → plan → execute, level by level, with notifications.

It knows the resource protocol and nothing about what a file or a user is.
It owns what is hard to get right once: ordering, concurrency where it is
safe, durable batched writes, turning any crash into a failed promise,
skipping only what depends on a failure, and refresh along notify edges.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from undistro.engine._context import RunContext
from undistro.engine._reserved import check_reserved
from undistro.errors import StateError, UndistroError, UnrecordedRunError
from undistro.resources._base import Action, Fingerprint, Resource, ServiceControl
from undistro.state import JournalEntry, StateStore, new_run_id

if TYPE_CHECKING:
    from undistro.policy._model import Policy

KEPT, REPAIRED, FAILED, SKIPPED = "kept", "repaired", "failed", "skipped"


class Result:
    """How one promise ended, and what was (or would be) done for it."""

    __slots__ = (
        "actions",
        "after",
        "before",
        "error",
        "id",
        "output",
        "owed",
        "planned",
        "refreshed",
        "status",
    )

    def __init__(
        self,
        id: str,
        status: str,
        *,
        planned: list[Action] | None = None,
        error: str | None = None,
        before: str | None = None,
        refreshed: bool = False,
    ) -> None:
        self.id = id
        self.status = status
        self.planned = planned or []
        self.actions = [a.summary for a in self.planned]
        self.error = error
        self.before = before
        self.after: str | None = None
        self.output: str | None = None
        self.refreshed = refreshed
        self.owed = False  # refreshed because an earlier run's refresh is still owed

    def __repr__(self) -> str:
        return f"<Result {self.id} {self.status}>"

    def diffs(self) -> list[str]:
        """Diffs of the planned actions (computed on demand: they cost)."""
        return [d for d in (a.diff() for a in self.planned) if d]


class RunSummary:
    """Every promise checked by one run, in the order they were checked."""

    def __init__(
        self, policy: str, run: str, cause: str, dry_run: bool, results: dict[str, Result]
    ):
        self.policy = policy
        self.run = run
        self.cause = cause
        self.dry_run = dry_run
        self.results = results
        self.causes: dict[str, str] = {}  # per resource, where not ``cause``
        self.seconds = 0.0

    def count(self, status: str) -> int:
        return sum(1 for r in self.results.values() if r.status == status)

    @property
    def ok(self) -> bool:
        return self.count(FAILED) == 0 and self.count(SKIPPED) == 0

    def changed(self) -> list[Result]:
        return [r for r in self.results.values() if r.status != KEPT]


class _Work(NamedTuple):
    resource: Resource
    state: Any
    actions: list[Action]
    refreshed: bool


class Engine:
    """Converges one policy under one root.

    ``workers`` bounds how many resources execute at once; resources that
    share a ``lock`` (the account databases) never run concurrently.
    ``services`` is handed to resources through the context; a run that
    drives services must not be on the thread of the loop hosting them.
    Each run that may change something holds the state directory's run
    lock (``undistro._runlock``), so runs of two processes never interleave;
    ``take_run_lock=False`` when the caller holds it already (a one-shot
    apply takes it first, to wait or refuse in its own words).

    Raises PolicyError if the policy manages undistro's own state or store.
    """

    def __init__(
        self,
        policy: Policy,
        *,
        root: str,
        state: StateStore,
        facts: Mapping[str, Any],
        workers: int | None = None,
        services: ServiceControl | None = None,
        take_run_lock: bool = True,
    ) -> None:
        check_reserved(policy, root, state.state_dir)
        self.take_run_lock = take_run_lock
        self._stop_waiting = threading.Event()
        self.policy = policy
        self.services = services
        self.root = root
        self.state = state
        self.facts = facts
        self.workers = workers or min(8, (os.cpu_count() or 1) * 2)
        self._levels = _levels(policy)
        self._position = {rid: i for i, rid in enumerate(policy.graph.order)}

    def run(
        self,
        only: Iterable[str] | None = None,
        *,
        cause: str = "apply",
        causes: Mapping[str, str] | None = None,
        dry_run: bool = False,
        notified: Iterable[str] = (),
    ) -> RunSummary:
        """Check ``only`` these ids (all when None); ``notified`` ids get
        their refresh actions as if a dependency had been repaired.

        ``cause`` is journalled for every change, unless ``causes`` names a
        resource's own (the agent: which event, which path). A resource
        repaired because it was notified is journalled with the id that
        notified it."""
        if dry_run or not self.take_run_lock:
            return self._run(only, cause, causes, dry_run, notified)
        from undistro._runlock import run_lock

        with run_lock(self.state.state_dir, cancel=self._stop_waiting):
            return self._run(only, cause, causes, dry_run, notified)

    def stop_waiting(self) -> None:
        """Make a run waiting for the run lock (another process's apply)
        give up with RunLockedError, now and from now on: for a daemon
        that must honour SIGTERM without waiting for someone else's run.
        Thread-safe; a run already holding the lock is not interrupted."""
        self._stop_waiting.set()

    def _run(
        self,
        only: Iterable[str] | None,
        cause: str,
        causes: Mapping[str, str] | None,
        dry_run: bool,
        notified: Iterable[str],
    ) -> RunSummary:
        started = time.perf_counter()
        graph, resources = self.policy.graph, self.policy.resources
        selected = None if only is None else set(only)
        owed = self._owed(selected)
        refresh = set(notified) | owed.keys()
        notifier: dict[str, str] = {}
        owing: dict[str, tuple[float, str]] = {}  # refreshes this run made owed
        ctx = RunContext(self.root, self.facts, self._fingerprints(selected), self.services)
        results: dict[str, Result] = {}
        marker = os.path.join(self.state.state_dir, "apply.unfinished")
        if not dry_run and os.path.exists(marker):
            self._sweep_temp_files(ctx)
        marked = False

        for level in self._walk(selected, refresh):
            work: list[_Work] = []
            for rid in level:
                res = resources[rid]
                blocker = next(
                    (
                        d
                        for d in graph.deps[rid]
                        if d in results and results[d].status in (FAILED, SKIPPED)
                    ),
                    None,
                )
                if blocker is not None:
                    results[rid] = Result(
                        rid, SKIPPED, error=f"skipped: {blocker} did not converge"
                    )
                    continue
                try:
                    state = res.probe(ctx)
                    actions = res.plan(state)
                    refreshed = rid in refresh
                    if refreshed:
                        actions = actions + res.refresh(state)
                except Exception as exc:  # a crashing resource is a failed promise
                    results[rid] = Result(rid, FAILED, error=f"probe failed: {_say(exc)}")
                    continue
                if not actions:
                    results[rid] = Result(rid, KEPT, refreshed=refreshed)
                    results[rid].owed = rid in owed
                    continue
                results[rid] = Result(
                    rid,
                    REPAIRED,
                    planned=actions,
                    before=_describe(res, state),
                    refreshed=refreshed,
                )
                results[rid].owed = rid in owed
                work.append(_Work(res, state, actions, refreshed))
            if not work:
                continue
            if not dry_run:
                if not marked:
                    _touch(marker)
                    marked = True
                self._execute(ctx, work, results)
            fresh: dict[str, tuple[float, str]] = {}
            for item in work:
                rid = item.resource.id
                if results[rid].status == REPAIRED:
                    for target in graph.notifies.get(rid, ()):
                        refresh.add(target)
                        notifier.setdefault(target, rid)
                        if target not in owed and target not in owing:
                            fresh[target] = (time.time(), f"notified by {rid}")
            if fresh and not dry_run:
                # Owed before it is attempted: an agent killed between the
                # repair and the refresh still owes it at its next start.
                self.state.settle_refreshes(owe=fresh)
                owing.update(fresh)

        summary = RunSummary(self.policy.name, new_run_id(), cause, dry_run, results)
        summary.causes = dict(causes or {})
        for rid, by in notifier.items():
            summary.causes.setdefault(rid, f"notified by {by}")
        for rid in owed.keys() & results.keys():
            summary.causes.setdefault(rid, f"refresh owed ({owed[rid][1]})")
        summary.seconds = time.perf_counter() - started
        if not dry_run:
            self._settle(results, refresh, owed, owing)
            self._commit(ctx, summary)
            if marked or os.path.exists(marker):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(marker)
        return summary

    def _owed(self, selected: set[str] | None) -> dict[str, tuple[float, str]]:
        """Refreshes still owed to the resources this run checks."""
        resources = self.policy.resources
        return {
            rid: why
            for rid, why in self.state.owed_refreshes().items()
            if rid in resources and (selected is None or rid in selected)
        }

    def _settle(
        self,
        results: dict[str, Result],
        refresh: set[str],
        owed: dict[str, tuple[float, str]],
        owing: dict[str, tuple[float, str]],
    ) -> None:
        """A refresh is paid once its resource converged with it; one that
        failed (or was skipped) stays owed, and the error says so."""
        owe: dict[str, tuple[float, str]] = {}
        paid = []
        for rid in refresh & results.keys():
            result = results[rid]
            if result.status in (FAILED, SKIPPED):
                if rid not in owed and rid not in owing:
                    owe[rid] = (time.time(), "notified")
                result.error = f"{result.error} (refresh owed: retried at the next check)"
            elif rid in owed or rid in owing:
                paid.append(rid)
        self.state.settle_refreshes(owe=owe, paid=paid)

    def _walk(self, selected: set[str] | None, refresh: set[str]) -> Iterable[list[str]]:
        """The levels to check, in order: all of them for a full run; for a
        run of a few ids (an agent's event) only theirs, so that re-checking
        one file does not walk 10,000. ``refresh`` may grow while walking:
        a notify target always sits on a later level than its source."""
        if selected is None:
            yield from self._levels
            return
        level, position = self.policy.graph.level, self._position
        wanted = {rid for rid in selected | refresh if rid in level}
        done: set[str] = set()
        current = 0
        while True:
            wanted |= {rid for rid in refresh if rid in level} - done
            todo = [rid for rid in wanted - done if level[rid] >= current]
            if not todo:
                return
            current = min(level[rid] for rid in todo)
            batch = sorted((rid for rid in todo if level[rid] == current), key=position.__getitem__)
            done.update(batch)
            yield batch
            current += 1

    def _fingerprints(self, selected: set[str] | None) -> Mapping[str, Fingerprint]:
        if selected is None or len(selected) > 1000:
            return self.state.fingerprints()
        prefix = "" if self.root == "/" else self.root.rstrip("/")
        resources = self.policy.resources
        paths = [
            prefix + p
            for rid in selected
            if rid in resources
            for p in resources[rid].managed_paths()
        ]
        return self.state.fingerprints(paths)

    def _sweep_temp_files(self, ctx: RunContext) -> None:
        """A run was killed while writing: remove the temp files it may have
        left beside managed paths. Costs one listdir per directory holding
        managed paths, only then."""
        from undistro._rootfs import sweep_temp_files

        sweep_temp_files(ctx.fs, self.policy.managed)

    # -- execution -----------------------------------------------------------

    def _execute(self, ctx: RunContext, work: list[_Work], results: dict[str, Result]) -> None:
        # Resources sharing a lock form one sequential task. Concurrent ones
        # (commands that wait) go to worker threads; the rest run inline,
        # since handing file-system calls between threads only adds waits.
        inline: list[list[_Work]] = []
        threaded: list[list[_Work]] = []
        locked: dict[str, list[_Work]] = {}
        for item in work:
            res = item.resource
            if res.lock is not None:
                if res.lock not in locked:
                    locked[res.lock] = []
                    (threaded if res.concurrent else inline).append(locked[res.lock])
                locked[res.lock].append(item)
            else:
                (threaded if res.concurrent else inline).append([item])
        if len(threaded) > 1 and self.workers > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(self.workers, len(threaded))) as pool:
                futures = [pool.submit(self._run_task, ctx, t, results) for t in threaded]
                for task in inline:
                    self._run_task(ctx, task, results)
                for future in futures:
                    future.result()
        else:
            for task in threaded + inline:
                self._run_task(ctx, task, results)
        for path, exc in ctx.flush().items():
            for item in work:
                if path in {ctx.path(p) for p in item.resource.managed_paths()}:
                    results[item.resource.id].status = FAILED
                    results[item.resource.id].error = f"rename into place failed: {_say(exc)}"
        for item in work:
            result = results[item.resource.id]
            if result.status == REPAIRED and item.resource.reprobe_after:
                try:
                    result.after = _describe(item.resource, item.resource.probe(ctx))
                except Exception:
                    result.after = None

    def _run_task(self, ctx: RunContext, task: list[_Work], results: dict[str, Result]) -> None:
        for item in task:
            result = results[item.resource.id]
            outputs = []
            for action in item.actions:
                try:
                    out = action.execute(ctx)
                except Exception as exc:
                    result.status = FAILED
                    said = _say(exc)
                    # A refusal's summary already says why: say it once.
                    done = action.summary.endswith(said)
                    result.error = action.summary if done else f"{action.summary}: {said}"
                    break
                if out:
                    outputs.append(out)
            result.output = "\n".join(outputs) or None

    def _commit(self, ctx: RunContext, summary: RunSummary) -> None:
        now = time.time()
        entries = [
            JournalEntry(
                time=now,
                run=summary.run,
                resource=r.id,
                outcome=r.status,
                cause=summary.causes.get(r.id, summary.cause),
                actions=tuple(r.actions),
                before=r.before,
                after=r.after,
                output=r.output,
                error=r.error,
            )
            for r in summary.changed()
        ]
        digest = self.policy.digest or "uncached"
        managed = None
        if self.state.meta("policy_digest") != digest:
            index = self.policy.managed.items()
            rows = [(ctx.path(p), rid, self.policy.resources[rid].source) for p, rid in index]
            managed = (digest, rows)
        try:
            self.state.commit(fingerprints=ctx.recorded, journal=entries, managed=managed)
        except StateError as exc:
            # What was renamed into place stays (each file whole, old or
            # new); the stored fingerprints are the old ones, so the next
            # run reads those files again and records them.
            repaired = summary.count(REPAIRED)
            if not repaired:
                raise
            raise UnrecordedRunError(
                f"{exc}; this run's {repaired} repair{'s stay' if repaired > 1 else ' stays'}"
                " on disk, unrecorded until a later run checks them again",
                summary,
            ) from None


def _touch(path: str) -> None:
    try:
        if not os.path.isdir(os.path.dirname(path)):
            os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
    except OSError as exc:
        from undistro.state import fs_trouble

        trouble = fs_trouble(os.path.dirname(path))
        raise StateError(
            f"cannot mark the run as started ({path}): {exc.strerror or exc}"
            + (f" ({trouble})" if trouble else "")
            + "; nothing was changed"
        ) from None


def _levels(policy: Policy) -> list[list[str]]:
    levels: list[list[str]] = []
    for rid in policy.graph.order:
        n = policy.graph.level[rid]
        while len(levels) <= n:
            levels.append([])
        levels[n].append(rid)
    return levels


def _describe(res: Resource, state: Any) -> str | None:
    try:
        return res.describe(state)
    except Exception:
        return None


def _say(exc: BaseException) -> str:
    """One line for a person: OSErrors as the C library says them, our own
    errors as written, anything else with its type (it is a bug)."""
    if isinstance(exc, OSError) and exc.strerror:
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    if isinstance(exc, UndistroError | OSError | KeyError):
        return str(exc.args[0]) if exc.args else type(exc).__name__
    import traceback

    last = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    where = f" at {os.path.basename(last[0].filename)}:{last[0].lineno}" if last else ""
    return f"{type(exc).__name__}: {exc}{where}"
