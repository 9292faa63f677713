"""An asyncio client of the Serf agent's RPC protocol (msgpack over TCP).

Serf ships no Python client worth using, and the protocol is small: every
request is a header ``{"Command", "Seq"}`` then, for some commands, a body;
every response is a header ``{"Seq", "Error"}`` then, for some commands, a
body. ``stream`` and ``query`` keep answering on their ``Seq``: one header
with no body to say the subscription took, then a header and a record per
event. One reader task pairs what arrives with what was asked, so a
subscription costs no polling and no thread.

Reference: the protocol notes in hashicorp/serf docs/agent/rpc.html.markdown
and its Go client (client/rpc_client.go), whose pairing rules this follows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from undistro.errors import FleetError

IPC_VERSION = 1

# Commands whose response header is followed by a body.
_WITH_BODY = frozenset(
    {"members", "members-filtered", "join", "stats", "get-coordinate", "list-keys"}
    | {"install-key", "use-key", "remove-key"}
)
# Commands that keep answering on their Seq until stopped (or "done").
_SUBSCRIPTIONS = frozenset({"stream", "query"})

# One record is small (a member list of a few thousand nodes is ~1 MB); a
# peer that sends more is not a Serf agent we should trust with memory.
_MAX_BUFFER = 16 * 1024 * 1024
_SUBSCRIPTION_BACKLOG = 10_000


class SerfError(FleetError):
    """The Serf agent refused a request, or the connection to it broke."""


@dataclass(frozen=True)
class Member:
    """One member of the fleet as Serf sees it."""

    name: str
    addr: str
    port: int
    status: str  # alive | leaving | left | failed
    tags: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Member:
        raw = rec.get("Addr") or b""
        try:
            addr = str(ipaddress.ip_address(bytes(raw))) if raw else ""
        except ValueError:
            addr = repr(raw)
        if addr.startswith("::ffff:"):  # Go's net.IP is 16 bytes even for IPv4
            addr = addr.removeprefix("::ffff:")
        return cls(
            name=str(rec.get("Name", "")),
            addr=addr,
            port=int(rec.get("Port", 0)),
            status=str(rec.get("Status", "")),
            tags=dict(rec.get("Tags") or {}),
        )


@dataclass(frozen=True)
class Event:
    """One record of a ``stream``: a user event, a query or a member change.

    ``kind`` is Serf's event name: ``user``, ``query``, ``member-join``,
    ``member-leave``, ``member-failed``, ``member-update``, ``member-reap``.
    """

    kind: str
    name: str = ""
    payload: bytes = b""
    ltime: int = 0
    query_id: int | None = None  # queries: pass to respond()
    members: tuple[Member, ...] = ()

    @classmethod
    def from_record(cls, rec: Mapping[str, Any]) -> Event:
        return cls(
            kind=str(rec.get("Event", "")),
            name=str(rec.get("Name", "")),
            payload=bytes(rec.get("Payload") or b""),
            ltime=int(rec.get("LTime", 0)),
            query_id=int(rec["ID"]) if "ID" in rec else None,
            members=tuple(Member.from_record(m) for m in rec.get("Members") or ()),
        )


@dataclass(frozen=True)
class QueryResponse:
    """One node's answer to a query (or, with ``ack``, its receipt)."""

    node: str
    payload: bytes = b""
    ack: bool = False


class _Pending:
    """A request waiting for its response (and body, if it has one)."""

    __slots__ = ("body", "future", "subscription", "with_body")

    def __init__(self, command: str, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[Any] = loop.create_future()
        self.with_body = command in _WITH_BODY
        self.subscription: asyncio.Queue[Any] | None = (
            asyncio.Queue(_SUBSCRIPTION_BACKLOG) if command in _SUBSCRIPTIONS else None
        )
        self.body = False  # the next object is this request's body


_CLOSED = object()


def _is_header(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.keys() == {"Seq", "Error"}


class SerfClient:
    """One RPC connection to a Serf agent.

    Use ``await SerfClient.connect("127.0.0.1:7373")``; every method is a
    coroutine; ``stream()`` and ``query()`` are async iterators. ``close()``
    ends every subscription (their iterators stop) and fails pending calls.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._seq = 0
        self._pending: dict[int, _Pending] = {}
        self._closed: SerfError | None = None
        self._closing = False  # close() was ours: iterators end quietly
        self._task = asyncio.get_running_loop().create_task(self._listen())

    @classmethod
    async def connect(cls, address: str, *, timeout: float = 5.0) -> SerfClient:
        host, _, port = address.rpartition(":")
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]") or "127.0.0.1", int(port)), timeout
            )
        except (TimeoutError, OSError, ValueError) as exc:
            raise SerfError(f"serf RPC {address}: cannot connect: {_why(exc)}") from None
        client = cls(reader, writer)
        try:
            await asyncio.wait_for(client._call("handshake", {"Version": IPC_VERSION}), timeout)
        except BaseException:
            await client.close()
            raise
        return client

    # -- commands -------------------------------------------------------

    async def members(self, tags: Mapping[str, str] | None = None) -> list[Member]:
        """Every member, or those whose tags match (values are anchored regexes)."""
        if tags:
            body = await self._call("members-filtered", {"Tags": dict(tags)})
        else:
            body = await self._call("members")
        return [Member.from_record(m) for m in body.get("Members") or ()]

    async def join(self, addresses: list[str], *, replay: bool = False) -> int:
        body = await self._call("join", {"Existing": addresses, "Replay": replay})
        return int(body.get("Num", 0))

    async def user_event(self, name: str, payload: bytes, *, coalesce: bool = False) -> None:
        """Gossip a user event. Coalescing is off: it delays by ~1 s and
        drops all but the last of a burst, and fleet events are each meant."""
        await self._call("event", {"Name": name, "Payload": payload, "Coalesce": coalesce})

    async def set_tags(
        self, tags: Mapping[str, str], delete: tuple[str, ...] | list[str] = ()
    ) -> None:
        await self._call("tags", {"Tags": dict(tags), "DeleteTags": list(delete)})

    async def respond(self, query_id: int, payload: bytes) -> None:
        await self._call("respond", {"ID": query_id, "Payload": payload})

    async def leave(self) -> None:
        await self._call("leave")

    async def stream(self, types: str = "*") -> AsyncIterator[Event]:
        """Events matching ``types`` (Serf's handler filter: ``user:NAME``,
        ``query``, ``member-join``, ..., comma-separated; ``*`` is all)."""
        seq, pending = await self._subscribe("stream", {"Type": types})
        assert pending.subscription is not None
        try:
            while True:
                rec = await pending.subscription.get()
                if rec is _CLOSED:
                    self._raise_unless_closing()
                    return
                yield Event.from_record(rec)
        finally:
            await self._stop(seq)

    async def query(
        self,
        name: str,
        payload: bytes = b"",
        *,
        timeout: float = 0.0,
        tags: Mapping[str, str] | None = None,
        nodes: list[str] | None = None,
        ack: bool = False,
    ) -> AsyncIterator[QueryResponse]:
        """Ask the fleet; yields answers as they come, ends when Serf says done.

        ``timeout`` 0 lets Serf pick its default (scaled to the fleet size).
        """
        body: dict[str, Any] = {"Name": name, "Payload": payload, "RequestAck": ack}
        if timeout:
            body["Timeout"] = int(timeout * 1e9)  # nanoseconds
        if tags:
            body["FilterTags"] = dict(tags)
        if nodes:
            body["FilterNodes"] = list(nodes)
        seq, pending = await self._subscribe("query", body)
        assert pending.subscription is not None
        try:
            while True:
                rec = await pending.subscription.get()
                if rec is _CLOSED:
                    self._raise_unless_closing()
                    return
                if rec.get("Type") == "done":
                    return
                yield QueryResponse(
                    node=str(rec.get("From", "")),
                    payload=bytes(rec.get("Payload") or b""),
                    ack=rec.get("Type") == "ack",
                )
        finally:
            self._pending.pop(seq, None)

    async def close(self) -> None:
        self._closing = True
        self._shutdown(SerfError("serf RPC connection closed"))
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self._task
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> SerfClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def stats(self) -> dict[str, int]:
        return {
            "pending": len(self._pending),
            "subscriptions": sum(1 for p in self._pending.values() if p.subscription),
        }

    # -- the wire -------------------------------------------------------

    def _raise_unless_closing(self) -> None:
        # A subscription that ends because the agent died must say so: the
        # caller restarts Serf and subscribes again.
        if not self._closing and self._closed is not None:
            raise self._closed

    async def _call(self, command: str, body: Mapping[str, Any] | None = None) -> Any:
        _, pending = self._send(command, body)
        return await pending.future

    async def _subscribe(self, command: str, body: Mapping[str, Any]) -> tuple[int, _Pending]:
        seq, pending = self._send(command, body)
        try:
            await pending.future
        except BaseException:
            self._pending.pop(seq, None)
            raise
        return seq, pending

    async def _stop(self, seq: int) -> None:
        if self._pending.pop(seq, None) is None or self._closed is not None:
            return
        # Records already in flight on this Seq are skipped by shape.
        with contextlib.suppress(SerfError):
            await self._call("stop", {"Stop": seq})

    def _send(self, command: str, body: Mapping[str, Any] | None) -> tuple[int, _Pending]:
        if self._closed is not None:
            raise self._closed
        seq = self._seq
        self._seq += 1
        pending = _Pending(command, asyncio.get_running_loop())
        self._pending[seq] = pending
        data = msgpack.packb({"Command": command, "Seq": seq})
        if body is not None:
            data += msgpack.packb(body, use_bin_type=True)
        self._writer.write(data)
        return seq, pending

    async def _listen(self) -> None:
        unpacker = msgpack.Unpacker(raw=False, max_buffer_size=_MAX_BUFFER)
        current: _Pending | None = None  # whose body comes next, if any
        orphan = False  # a header for a Seq nobody waits on: skip its body
        try:
            while True:
                chunk = await self._reader.read(65536)
                if not chunk:
                    raise SerfError("serf RPC: the agent closed the connection")
                unpacker.feed(chunk)
                for obj in unpacker:
                    if _is_header(obj):
                        current, orphan = self._on_header(obj)
                    elif current is not None:
                        self._on_body(current, obj)
                        current = None
                    elif not orphan:
                        raise SerfError("serf RPC: a record arrived with no header")
                    else:
                        orphan = False
        except asyncio.CancelledError:
            raise
        except SerfError as exc:
            self._shutdown(exc)
        except (OSError, ValueError, msgpack.UnpackException) as exc:
            self._shutdown(SerfError(f"serf RPC: {_why(exc)}"))

    def _on_header(self, header: dict[str, Any]) -> tuple[_Pending | None, bool]:
        pending = self._pending.get(header["Seq"])
        if pending is None:
            return None, True
        error = str(header.get("Error") or "")
        if pending.subscription is not None:
            if not pending.future.done():
                if error:
                    pending.future.set_exception(SerfError(f"serf: {error}"))
                    return None, False
                pending.future.set_result(None)
                return None, False
            return pending, False  # a record follows
        self._pending.pop(header["Seq"], None)
        if error:
            pending.future.set_exception(SerfError(f"serf: {error}"))
            # The Go agent sends the body even with an error (except auth).
            return (pending, False) if pending.with_body else (None, False)
        if pending.with_body:
            return pending, False
        pending.future.set_result(None)
        return None, False

    def _on_body(self, pending: _Pending, body: Any) -> None:
        if pending.subscription is not None:
            try:
                pending.subscription.put_nowait(body)
            except asyncio.QueueFull:
                # A consumer this far behind has lost the thread anyway; the
                # caller re-reads members or state rather than replaying.
                self._shutdown(SerfError("serf RPC: subscriber fell behind"))
            return
        if not pending.future.done():
            pending.future.set_result(body if isinstance(body, dict) else {})

    def _shutdown(self, error: SerfError) -> None:
        if self._closed is not None:
            return
        self._closed = error
        for pending in self._pending.values():
            if not pending.future.done():
                pending.future.set_exception(error)
                pending.future.exception()  # retrieved: no "never retrieved" noise
            if pending.subscription is not None:
                with contextlib.suppress(asyncio.QueueFull):
                    pending.subscription.put_nowait(_CLOSED)
        self._pending.clear()
        self._writer.close()


def _why(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
