"""What the fleet page knows of each node, and how a node tells the fleet.

A node whose summary changes (a promise failed or was repaired, a service
changed state, a new revision) gossips its *card* — the agent's fleet
summary, squeezed under Serf's user-event limit — as the user event
``undistro-state``. Bursts are coalesced: the first change after a quiet
``window`` goes out at once, later ones within it wait for its end and go
as one event (a timer armed by a change, never a poll).

Every node that serves the page keeps a :class:`FleetView`: Serf's member
events and the cards heard (events, and answers to the ``undistro-status``
query asked when a page is opened) update it, and each change wakes the
page's server-sent-event streams. What arrives is untrusted: a card is
parsed into known fields of known types and bounded sizes, or dropped.
Serf gives no sender identity, so a card is what a member *says* of
itself; the page is a view, never a decision.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from undistro.fleet._serf import Event, SerfClient

STATE_EVENT = "undistro-state"
EVENT_LIMIT = 482 - len(STATE_EVENT)  # Serf counts the name and the payload together
WINDOW = 0.25  # seconds: at most one card per node per window
REPEAT = 2.0  # seconds: each card goes once more, unless a newer one went meanwhile
MAX_NODES = 10_000  # a view of a fleet larger than this drops names it never saw alive
MAX_TEXT = 200
MAX_SERVICES = 64
MAX_ITEMS = 5  # failing promises, recent repairs
MAX_STREAMS = 32  # pages open at once on one node; a new one ends the oldest

_INTS = ("revision", "generation", "kept", "repaired", "failed", "services_up", "services_failed")


def compact(data: Any) -> bytes:
    return json.dumps(data, sort_keys=False, separators=(",", ":"), ensure_ascii=False).encode()


def encode_card(node: str, summary: Mapping[str, Any], limit: int = EVENT_LIMIT) -> bytes:
    """``summary`` as one JSON object of at most ``limit`` bytes, ``node`` first.

    What does not fit is cut in stages, each only if still needed: long
    texts keep their head and tail (an error's cause is at its end), down
    to 120 characters; lists lose items from the end, the last list first
    (the summary orders its fields most important first), down to one item
    each; texts shorten further; then the rest of the lists and the last
    fields go.
    """
    fields = {"node": node[:128], **_capped(dict(summary), MAX_TEXT)}
    data = compact(fields)

    def fits() -> bool:
        nonlocal data
        data = compact(fields)
        return len(data) <= limit

    if fits():
        return data
    fields = {"node": fields["node"], **_capped(fields, 120)}
    while not fits() and _pop_item(fields, keep=1):
        pass
    for cap in (80, 48, 24):
        if fits():
            return data
        fields = {"node": fields["node"], **_capped(fields, cap)}
    while not fits() and _pop_item(fields, keep=0):
        pass
    while not fits():
        del fields[next(k for k in reversed(list(fields)) if k != "node" or len(fields) == 1)]
        if not fields:
            return compact({"node": node[:32]})
    return data


def _capped(value: Any, cap: int) -> Any:
    """A copy of ``value`` with every text at most ``cap`` characters (the
    node's name excepted: it is the card's identity)."""
    if isinstance(value, str):
        return value if len(value) <= cap else value[: cap // 2 - 1] + "…" + value[-(cap // 2) :]
    if isinstance(value, list | tuple):
        return [_capped(v, cap) for v in value]
    if isinstance(value, dict):
        return {
            (k[:cap] if isinstance(k, str) else k): (v if k == "node" else _capped(v, cap))
            for k, v in value.items()
        }
    return value


def _pop_item(fields: dict[str, Any], *, keep: int) -> bool:
    """Remove the last item of the last list or table longer than ``keep``."""
    for key in reversed(list(fields)):
        value = fields[key]
        if isinstance(value, list) and len(value) > keep:
            value.pop()
            return True
        if isinstance(value, dict) and len(value) > keep:
            value.pop(next(reversed(value)))
            return True
    return False


def parse_card(payload: bytes) -> dict[str, Any] | None:
    """The card in ``payload`` with only known, well-typed, bounded fields;
    None if it is not a card at all (no JSON object, no node name)."""
    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(raw, dict):
        return None
    node = raw.get("node")
    if not isinstance(node, str) or not node or len(node) > 128:
        return None
    card: dict[str, Any] = {"node": node}
    for key in _INTS:
        value = raw.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) < 2**53:
            card[key] = value
    for key in ("rss_mb", "at"):
        value = raw.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            card[key] = float(value)
    for key in ("last_error", "policy"):
        value = raw.get(key)
        if isinstance(value, str):
            card[key] = value[:MAX_TEXT]
    services = raw.get("services")
    if isinstance(services, dict):
        card["services"] = {
            k[:128]: v[:32]
            for k, v in list(services.items())[:MAX_SERVICES]
            if isinstance(k, str) and isinstance(v, str)
        }
    for key in ("failing", "repairs"):
        items = raw.get(key)
        if isinstance(items, list):
            card[key] = [p for p in (_pair(i) for i in items[:MAX_ITEMS]) if p is not None]
    return card


def _pair(item: Any) -> list[Any] | None:
    """``[resource id, error text or unix time]``."""
    if not isinstance(item, list) or len(item) != 2 or not isinstance(item[0], str):
        return None
    what = item[1]
    if isinstance(what, str):
        return [item[0][:MAX_TEXT], what[:MAX_TEXT]]
    if isinstance(what, int | float) and not isinstance(what, bool) and math.isfinite(what):
        return [item[0][:MAX_TEXT], float(what)]
    return None


class Announcer:
    """Sends this node's card when it changed, at most once per ``window``.

    ``changed()`` is cheap and may be called on every state change: the
    card is built and compared only when it is due to go. Each card is sent
    once more ``repeat`` seconds later unless a newer one went meanwhile:
    gossip is best-effort, and on a loaded machine a lost packet was seen
    to leave a page 14 s behind (until Serf's anti-entropy) — the repeat
    bounds that at ``repeat``, for one more small event per change.
    """

    def __init__(
        self,
        node: str,
        summary: Callable[[], Mapping[str, Any]],
        send: Callable[[bytes], Any],
        *,
        window: float = WINDOW,
        repeat: float | None = REPEAT,
    ) -> None:
        self.node = node
        self._summary = summary
        self._send = send  # a coroutine function (the Serf user event), or plain
        self._window = window
        self._repeat_after = repeat
        self._repeat: asyncio.TimerHandle | None = None
        self._last_sent = -math.inf
        self._last_card = b""
        self._due: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.counts = {"changes": 0, "sent": 0, "unchanged": 0, "failed": 0, "repeated": 0}

    def changed(self) -> None:
        self.counts["changes"] += 1
        if self._due is not None:
            return  # already going out at the window's end, with this change in it
        loop = asyncio.get_running_loop()
        wait = self._last_sent + self._window - loop.time()
        if wait <= 0:
            self._go()
        else:
            self._due = loop.call_later(wait, self._go)

    def close(self) -> None:
        for timer in (self._due, self._repeat):
            if timer is not None:
                timer.cancel()
        self._due = self._repeat = None

    def _go(self) -> None:
        self._due = None
        try:
            summary = dict(self._summary())
            state = encode_card(self.node, summary)
        except Exception:  # a summary that cannot be read is no news
            self.counts["failed"] += 1
            return
        if state == self._last_card:
            self.counts["unchanged"] += 1  # the same state at another moment is no news
            return
        loop = asyncio.get_running_loop()
        self._last_sent, self._last_card = loop.time(), state
        card = encode_card(self.node, {"at": round(time.time(), 3), **summary})
        if self._repeat is not None:
            self._repeat.cancel()  # the newer card carries the news
            self._repeat = None
        if self._repeat_after is not None:
            self._repeat = loop.call_later(self._repeat_after, self._again, card)
        self._deliver(card)

    def _again(self, card: bytes) -> None:
        self._repeat = None
        self.counts["repeated"] += 1
        self._deliver(card)

    def _deliver(self, card: bytes) -> None:
        loop = asyncio.get_running_loop()
        result = self._send(card)
        if asyncio.iscoroutine(result):
            task = loop.create_task(result)
            self._tasks.add(task)
            task.add_done_callback(self._sent)
        else:
            self.counts["sent"] += 1

    def _sent(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.counts["failed"] += 1
            self._last_card = b""  # not heard: the next change sends it again
        else:
            self.counts["sent"] += 1


class FleetView:
    """The fleet as one page server knows it: members and their cards.

    ``subscribe()`` gives a :class:`Subscription` woken with the names of
    the nodes that changed; the page's event stream sends their records.
    At most ``max_streams`` at once: a new one ends the oldest, because a
    client that went away is noticed only when its stream is next written
    to, and on a quiet fleet that may be never — the oldest is the likeliest
    gone, and a live browser reconnects by itself.
    """

    def __init__(
        self,
        *,
        max_nodes: int = MAX_NODES,
        max_streams: int = MAX_STREAMS,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.nodes: dict[str, dict[str, Any]] = {}
        self._subs: dict[Subscription, None] = {}  # oldest first
        self._max_nodes = max_nodes
        self._max_streams = max_streams
        self.on_open = on_open  # a page opened: ask the fleet (a status query)
        self.counts = {"cards": 0, "refused": 0, "stale": 0, "member_events": 0, "pushes": 0}
        self.counts["evicted"] = 0

    def record(self, name: str) -> dict[str, Any] | None:
        return self.nodes.get(name)

    def snapshot(self) -> list[dict[str, Any]]:
        return [self.nodes[n] for n in sorted(self.nodes)]

    def member(self, name: str, status: str, addr: str, tags: Mapping[str, str]) -> None:
        """Serf's word on a member (a member event, or the list at start)."""
        self.counts["member_events"] += 1
        rec = self._record(name)
        if rec is None:
            return
        rec.update(status=status[:16], addr=addr[:64])
        rec["http"] = str(tags.get("http", ""))[:5]
        rec["tag_revision"] = str(tags.get("revision", ""))[:20]
        self._changed(name)

    def card(self, payload: bytes, *, via: str) -> bool:
        """A card heard (``via`` ``event`` or ``query``); False if refused."""
        card = parse_card(payload)
        if card is None:
            self.counts["refused"] += 1
            return False
        name = card.pop("node")
        rec = self._record(name)
        if rec is None:
            self.counts["refused"] += 1
            return False
        old = rec.get("card")
        if old is not None and card.get("at", math.inf) < old.get("at", -math.inf):
            self.counts["stale"] += 1  # gossip reordered: an older card changes nothing
            return True
        if card == old:
            return True  # a repeat (or a query's answer) of what is shown: no news
        self.counts["cards"] += 1
        rec["card"], rec["via"], rec["heard"] = card, via, round(time.time(), 3)
        self._changed(name)
        return True

    def subscribe(self) -> Subscription:
        while len(self._subs) >= self._max_streams:
            oldest = next(iter(self._subs))
            oldest.close()
            self.counts["evicted"] += 1
        sub = Subscription(self)
        self._subs[sub] = None
        if self.on_open is not None:
            self.on_open()
        return sub

    def stats(self) -> dict[str, Any]:
        return {"nodes": len(self.nodes), "subscribers": len(self._subs), **self.counts}

    def _record(self, name: str) -> dict[str, Any] | None:
        rec = self.nodes.get(name)
        if rec is None:
            if len(self.nodes) >= self._max_nodes:
                return None
            rec = self.nodes[name] = {"name": name, "status": "unknown", "addr": "", "http": ""}
        return rec

    def _changed(self, name: str) -> None:
        self.counts["pushes"] += 1
        for sub in self._subs:
            sub.dirty.add(name)
            sub.wake.set()


class Subscription:
    """One event stream's view: the names changed since it last looked.

    A set, not a queue: a slow reader costs one entry per node, however
    many changes it missed, and then sends each node's newest record.
    """

    def __init__(self, view: FleetView) -> None:
        self._view = view
        self.dirty: set[str] = set()
        self.wake = asyncio.Event()
        self.closed = False

    async def changes(self) -> list[dict[str, Any]] | None:
        """Wait for a change; the records of every node changed since, or
        None once this subscription was closed (the stream ends)."""
        await self.wake.wait()
        self.wake.clear()
        if self.closed:
            return None
        names, self.dirty = sorted(self.dirty), set()
        return [r for r in (self._view.record(n) for n in names) if r is not None]

    def close(self) -> None:
        self.closed = True
        self.wake.set()
        self._view._subs.pop(self, None)


class PageFeed:
    """Serf's stream into a :class:`FleetView`: the members, the cards
    gossiped, and a status query when a page opens (rate-limited: a flood of
    page loads asks the fleet at most once per ``min_interval``).

    The fleet member calls ``serf_session`` with each new RPC client (None
    when it is lost) and ``serf_event`` with every event of its stream.
    """

    def __init__(
        self, view: FleetView, *, query_timeout: float = 2.0, min_interval: float = 2.0
    ) -> None:
        self.view = view
        view.on_open = self.ask
        self._client: SerfClient | None = None
        self._timeout = query_timeout
        self._min_interval = min_interval
        self._asked = -math.inf
        self._task: asyncio.Task[None] | None = None
        self.counts = {"queries": 0, "answers": 0}

    def serf_session(self, client: SerfClient | None) -> None:
        self._client = client
        if client is not None:
            self._asked = -math.inf
            self._start(members=True)

    def serf_event(self, event: Event) -> None:
        if event.kind.startswith("member-"):
            status = {"member-leave": "left", "member-reap": "reaped"}.get(event.kind)
            for m in event.members:
                self.view.member(m.name, status or m.status, m.addr, m.tags)
        elif event.kind == "user" and event.name == STATE_EVENT:
            self.view.card(event.payload, via="event")

    def ask(self) -> None:
        """Ask every node for its card, unless asked just now or asking."""
        if self._task is None and time.monotonic() - self._asked >= self._min_interval:
            self._start(members=False)

    def close(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def _start(self, *, members: bool) -> None:
        if self._client is None:
            return
        if self._task is not None:
            if not members:
                return
            self._task.cancel()  # a new session: the old client's query is moot
        self._asked = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._query(self._client, members))
        self._task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        if self._task is task:
            self._task = None
        if not task.cancelled():
            task.exception()  # a lost client ends the query; the next session asks again

    async def _query(self, client: SerfClient, members: bool) -> None:
        from undistro.fleet._member import STATUS_QUERY

        if members:
            for m in await client.members():
                self.view.member(m.name, m.status, m.addr, m.tags)
        self.counts["queries"] += 1
        async for reply in client.query(STATUS_QUERY, timeout=self._timeout):
            if not reply.ack and self.view.card(reply.payload, via="query"):
                self.counts["answers"] += 1
