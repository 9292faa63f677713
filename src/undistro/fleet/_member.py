"""This node in its fleet: Serf supervised, its events turned into work.

The agent owns one FleetMember. It runs Serf as a service of the agent's
own builtin supervisor (restarted when it dies), holds one RPC stream to it
for revision announcements and status queries — pushed by Serf, never
polled — and hands verified revisions to the agent, which switches policy
the way it reloads a changed policy directory. When Serf (re)starts, the
member first pulls from the configured plain sources: announcements gossiped
while it was away are not replayed by Serf, so it catches up by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from undistro.content._page_state import STATE_EVENT, Announcer
from undistro.errors import FleetError
from undistro.fleet._actions import ACTION_EVENT, Action, ActionRefused, verify_action
from undistro.fleet._config import FleetConfig
from undistro.fleet._receive import (
    Revision,
    RevisionRefused,
    is_known,
    mark_applied,
    trust_dir,
)
from undistro.fleet._serf import Event, SerfClient, SerfError
from undistro.supervisor._spec import Backend, ServiceEvent, ServiceSpec

REVISION_EVENT = "undistro-revision"
STATUS_QUERY = "undistro-status"
SERVICE = "undistro-serf"
MAX_RESPONSE = 1024  # Serf's query response limit
FETCH_TIMEOUT = 120.0  # a revision from plain sources; peers will be faster
_CONNECT_TRIES = 40  # Serf opens its RPC port ~0.1 s after spawn; bounded, start-up only

ApplyRevision = Callable[[Revision], Awaitable[bool]]
RunAction = Callable[[Action], Awaitable[str]]  # returns the outcome, one line
Journal = Callable[[str, str, "str | None"], None]  # (outcome, what, error)


class SerfWatcher(Protocol):
    """Someone else on this node who reads the fleet's events (the page)."""

    def serf_session(self, client: SerfClient | None) -> None:
        """A new RPC session to Serf (None: it was lost)."""

    def serf_event(self, event: Event) -> None: ...


class FleetMember:
    """Serf beside the agent, and what its events mean to this node.

    Args:
        config: the node's ``[fleet]`` table, parsed.
        state_dir: undistro's state directory (trust, revisions, Serf config).
        backend: the agent's builtin supervisor backend, which runs Serf.
        node_tags: this node's tags (a revision's ``to`` filter reads them).
        apply_revision: the agent's policy switch; True when it took.
        run_action: carries out a verified signed action (converge, ...).
        summary: this node's state in a few fields, for status queries.
        journal: records refusals and applied revisions.
        log: one line to the agent's log.
    """

    def __init__(
        self,
        config: FleetConfig,
        state_dir: str,
        backend: Backend,
        *,
        node_tags: Sequence[str],
        apply_revision: ApplyRevision,
        run_action: RunAction,
        summary: Callable[[], Mapping[str, Any]],
        journal: Journal,
        log: Callable[[str], None],
    ) -> None:
        self.config = config
        self.state_dir = state_dir
        self.backend = backend
        self.node_tags = tuple(node_tags)
        self._apply = apply_revision
        self._run_action = run_action
        self._summary = summary
        self._journal = journal
        self._log = log
        self._spawned = asyncio.Event()
        self._client: SerfClient | None = None
        self._task: asyncio.Task[None] | None = None
        self._work = asyncio.Lock()  # one revision at a time
        self._pulls: set[asyncio.Task[None]] = set()
        self._quiet: asyncio.TimerHandle | None = None
        self._lost: set[str] = set()  # members seen failed, not yet back
        self._catching_up = False
        self._counts = {"announcements": 0, "applied": 0, "refused": 0, "queries": 0}
        self._counts.update(actions=0, actions_refused=0, quiet_checks=0)
        self._counts["serf_sessions"] = 0
        self._watchers: list[SerfWatcher] = []
        self._advertised: dict[str, str] = {}
        # This node's card goes to the fleet when its state changes (the page).
        self._announcer = Announcer(config.name, summary, self._send_state)

    async def start(self) -> None:
        if self.config.bind is None:
            # No gossip at all: the sources are the only news.
            self._spawn_pull(None)
            self._rearm_quiet()
            return
        self.backend.subscribe(self._on_service_event)
        status = await self.backend.start(self._serf_spec())
        if status.pid is not None:
            self._spawned.set()  # adopted, or spawned before we subscribed
        self._task = asyncio.get_running_loop().create_task(self._sessions())
        self._rearm_quiet()

    def _rearm_quiet(self) -> None:
        """Heard nothing for ``check_sources_after``: pull on our own. Off
        unless configured (or gossip-less): news comes as events."""
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None
        after = self.config.check_sources_after
        if after is None or not self.config.sources:
            return

        def due() -> None:
            self._quiet = None
            self._counts["quiet_checks"] += 1
            self._spawn_pull(None)
            self._rearm_quiet()

        self._quiet = asyncio.get_running_loop().call_later(after, due)

    def watch(self, watcher: SerfWatcher) -> None:
        """Hand ``watcher`` every event of the stream and every new session."""
        self._watchers.append(watcher)
        if self._client is not None:
            watcher.serf_session(self._client)

    def advertise(self, key: str, value: str) -> None:
        """A tag of this node for the fleet (``http``: its face's port), kept
        across Serf restarts and set now if Serf is up."""
        self._advertised[key] = value
        if self._client is not None:
            self._set_tags(self._client, {key: value})

    def _set_tags(self, client: SerfClient, tags: dict[str, str]) -> None:
        async def set_tags() -> None:
            with contextlib.suppress(SerfError):  # lost: the next session sets them
                await client.set_tags(tags)

        task = asyncio.get_running_loop().create_task(set_tags())
        self._pulls.add(task)
        task.add_done_callback(self._pulls.discard)

    def state_changed(self) -> None:
        """The summary may have changed: gossip it (coalesced, see Announcer)."""
        if self.config.bind is not None:
            self._announcer.changed()

    async def _send_state(self, card: bytes) -> None:
        if self._client is None:
            raise SerfError("no Serf session")  # the next session sends it
        await self._client.user_event(STATE_EVENT, card)

    async def close(self, *, stop_serf: bool = True) -> None:
        self._announcer.close()
        if self._quiet is not None:
            self._quiet.cancel()
            self._quiet = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        # A pull runs in a thread that cannot be cancelled: let it finish, so
        # that the next start never finds ngclient's metadata half written.
        if self._pulls:
            await asyncio.wait(self._pulls)
        if self._client is not None:
            await self._client.close()
        if stop_serf and self.config.bind is not None:
            with contextlib.suppress(Exception):
                await self.backend.stop(SERVICE)

    def stats(self) -> dict[str, Any]:
        cards = {f"cards_{k}": v for k, v in self._announcer.counts.items()}
        return {**self._counts, **cards, "connected": self._client is not None}

    # -- Serf as a service ------------------------------------------------

    def _serf_spec(self) -> ServiceSpec:
        path = os.path.join(trust_dir(self.state_dir), "serf.json")
        os.makedirs(os.path.dirname(path), 0o700, exist_ok=True)
        assert self.config.bind is not None
        conf: dict[str, Any] = {
            "node_name": self.config.name,
            "bind": self.config.bind,
            "rpc_addr": self.config.rpc,
            "tags": {**self.config.tags, **self._own_tags()},
            "profile": self.config.profile,
            "retry_join": list(self.config.retry_join),
            "reconnect_interval": "10s",
            # A restarted Serf rejoins the members it knew (not only the
            # seeds): a node that was itself the seed is never left alone.
            "snapshot_path": os.path.join(os.path.dirname(path), "serf.snapshot"),
            "rejoin_after_leave": True,
        }
        if self.config.discover:
            conf["discover"] = self.config.discover
        if self.config.encrypt_key_file:
            conf["encrypt_key"] = _read_key(self.config.encrypt_key_file)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # holds the key
        with os.fdopen(fd, "w") as f:
            json.dump(conf, f, sort_keys=True)
        os.replace(tmp, path)
        return ServiceSpec(
            name=SERVICE,
            argv=(self.config.serf, "agent", f"-config-file={path}"),
            restart="always",
            restart_delay=0.2,
            restart_delay_max=10.0,
            crash_loop_limit=1_000_000,  # the fleet link is never given up
            crash_loop_window=60.0,
        )

    def _own_tags(self) -> dict[str, str]:
        from undistro.fleet._receive import current_revision

        try:
            revision = current_revision(self.state_dir)
        except FleetError:
            revision = None
        tags = dict(self._advertised)
        if revision is not None:
            tags["revision"] = str(revision)
        return tags

    def _on_service_event(self, event: ServiceEvent) -> None:
        if event.status.name != SERVICE:
            return
        if event.cause == "spawned":
            self._spawned.set()
        elif event.status.pid is None:
            self._log(f"fleet: serf {event.cause}; the supervisor restarts it")

    # -- one session per Serf process --------------------------------------

    async def _sessions(self) -> None:
        while True:
            await self._spawned.wait()
            self._spawned.clear()
            client = await self._connect()
            if client is None:
                continue  # it died again before answering: wait for the next spawn
            self._client = client
            self._counts["serf_sessions"] += 1
            if self._advertised:  # Serf's config file was written before them
                self._set_tags(client, dict(self._advertised))
            self._tell_watchers("serf_session", client)
            self._announcer.changed()  # a (re)started Serf: the fleet hears where we are
            try:
                events = client.stream(
                    f"user:{REVISION_EVENT},user:{ACTION_EVENT},query:{STATUS_QUERY},"
                    f"user:{STATE_EVENT},member-failed,member-join,member-leave,"
                    "member-update,member-reap"
                )
                self._spawn_pull(None)
                async for event in events:
                    await self._on_event(client, event)
            except SerfError as exc:
                self._log(f"fleet: lost serf ({exc}); waiting for its restart")
            finally:
                self._client = None
                self._tell_watchers("serf_session", None)
                await client.close()

    async def _connect(self) -> SerfClient | None:
        delay = 0.025
        for _ in range(_CONNECT_TRIES):
            try:
                return await SerfClient.connect(self.config.rpc, timeout=2.0)
            except SerfError:
                await asyncio.sleep(delay)
                delay = min(delay * 2, 0.5)
        self._log(f"fleet: serf RPC {self.config.rpc} never answered")
        return None

    def _tell_watchers(self, what: str, arg: Any) -> None:
        for watcher in self._watchers:
            try:
                getattr(watcher, what)(arg)
            except Exception as exc:  # a watcher's bug must not cut the fleet link
                self._log(f"fleet: {type(watcher).__name__}.{what}: {type(exc).__name__}: {exc}")

    async def _on_event(self, client: SerfClient, event: Event) -> None:
        self._tell_watchers("serf_event", event)
        if event.kind == "user":
            self._rearm_quiet()  # the fleet is talking: no need to check on our own
        if event.kind == "member-failed":
            # A member that dies right after announcing may have taken the
            # announcement with it (Serf sends at its next gossip tick), and
            # one that is gone may come back with news: catch up once now.
            self._lost.update(m.name for m in event.members)
            self._catch_up()
            return
        if event.kind == "member-join":
            back = self._lost & {m.name for m in event.members}
            if back:
                # A partition healed: whatever was announced meanwhile did
                # not reach one side. One catch-up, however many come back.
                self._lost -= back
                self._catch_up()
            return
        if event.kind == "user" and event.name == REVISION_EVENT:
            self._counts["announcements"] += 1
            self._spawn_pull(event.payload)
        elif event.kind == "user" and event.name == ACTION_EVENT:
            task = asyncio.get_running_loop().create_task(self._action(event.payload))
            self._pulls.add(task)
            task.add_done_callback(self._pulls.discard)
        elif event.kind == "query" and event.name == STATUS_QUERY and event.query_id is not None:
            self._counts["queries"] += 1
            with contextlib.suppress(SerfError):
                await client.respond(event.query_id, self._status_payload())

    def _catch_up(self) -> None:
        """One pull from the sources, however many events ask for it at once."""
        if not self._catching_up:
            self._catching_up = True
            self._spawn_pull(None)

    def _spawn_pull(self, announcement: bytes | None) -> None:
        task = asyncio.get_running_loop().create_task(self._revision(announcement))
        self._pulls.add(task)
        task.add_done_callback(self._pulls.discard)

    def _status_payload(self) -> bytes:
        fields = {"node": self.config.name, "at": round(time.time(), 3), **self._summary()}
        data = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        while len(data) > MAX_RESPONSE and len(fields) > 1:
            fields.popitem()  # least important last: the summary orders its fields
            data = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return data[:MAX_RESPONSE]

    async def _revision(self, announcement: bytes | None) -> None:
        """Verify, fetch and hand over one revision (None: catch up from sources)."""
        if announcement is None and not self.config.sources:
            return
        if announcement is None:
            self._catching_up = True
        try:
            await self._revision_locked(announcement)
        finally:
            if announcement is None:
                self._catching_up = False

    async def _revision_locked(self, announcement: bytes | None) -> None:
        async with self._work:
            if announcement is not None and is_known(self.state_dir, announcement):
                return  # the catch-up pull already took it from a source
            try:
                revision = await self._fetch(announcement)
            except RevisionRefused as exc:
                self._counts["refused"] += 1
                self._journal("refused", "announcement" if announcement else "catch-up", str(exc))
                self._log(f"fleet: revision refused: {exc}")
                return
            except FleetError as exc:
                self._log(f"fleet: cannot fetch the revision: {exc}")
                return
            if revision is None:
                return
            if not await self._apply(revision):
                self._journal("failed", f"revision {revision.number}", "the policy did not load")
                return
            mark_applied(self.state_dir, revision)
            self._counts["applied"] += 1
            self._journal("repaired", f"applied revision {revision.number}", None)
            if self._client is not None:
                with contextlib.suppress(SerfError):
                    await self._client.set_tags({"revision": str(revision.number)})

    async def _action(self, data: bytes) -> None:
        try:
            try:
                action = verify_action(self.state_dir, data, self.node_tags)
            except ActionRefused as exc:
                if "not an operator" not in str(exc) or not self.config.sources:
                    raise
                # Perhaps a new operator in a root we have not fetched yet.
                await self._revision(None)
                action = verify_action(self.state_dir, data, self.node_tags)
        except ActionRefused as exc:
            self._counts["actions_refused"] += 1
            self._journal("refused", "signed action", str(exc))
            self._log(f"fleet: action refused: {exc}")
            return
        except FleetError as exc:
            self._log(f"fleet: action not checked: {exc}")
            return
        if action is None:
            return  # genuine, for other nodes
        self._counts["actions"] += 1
        try:
            outcome = await self._run_action(action)
        except Exception as exc:  # the agent's failure is journalled, never lost
            self._journal("failed", action.describe(), f"{type(exc).__name__}: {exc}")
            return
        self._journal("repaired", f"{action.describe()}: {outcome}", None)

    async def _fetch(self, announcement: bytes | None) -> Revision | None:
        """Verify and fetch in a short-lived child (forked by the agent's
        zygote): TUF's client and cryptography never enter the resident
        agent's memory."""
        from undistro.agent import _zygote

        args = [self.state_dir, *(f"--source={s}" for s in self.config.sources)]
        args += [f"--tag={t}" for t in self.node_tags]
        if announcement is not None:
            args.append(f"--announcement={announcement.hex()}")
        try:
            done = await _zygote.run_module_async(
                "undistro.fleet._child", args, name="fleet-fetch", timeout=FETCH_TIMEOUT
            )
        except TimeoutError:
            raise FleetError(f"fetching the revision took over {FETCH_TIMEOUT:g} s") from None
        out, err = done.out, done.err
        try:
            result = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise FleetError(f"the fetch child failed: {tail[0][:200]}") from None
        if "refused" in result:
            raise RevisionRefused(str(result["refused"]))
        if "error" in result:
            raise FleetError(str(result["error"]))
        if result.get("none"):
            return None
        liars = tuple(str(x) for x in result.get("liars") or ())
        for liar in liars:
            self._journal("refused", f"source {liar}", "served a bundle that failed verification")
        return Revision(
            int(result["revision"]), str(result["sha256"]), str(result["policy_dir"]), liars
        )


def _read_key(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            key = f.read().strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise FleetError(f"[fleet] encrypt_key_file {path}: {exc}") from None
    import base64
    import binascii

    try:
        if len(base64.b64decode(key, validate=True)) not in (16, 24, 32):
            raise ValueError
    except (binascii.Error, ValueError):
        raise FleetError(f"[fleet] encrypt_key_file {path}: not a 'serf keygen' key") from None
    return key
