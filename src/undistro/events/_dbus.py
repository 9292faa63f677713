"""A D-Bus connection on the agent's loop: method calls, and signals as callbacks.

Built on jeepney (pure Python, ~1 MB imported, no libdbus/libsystemd): its
asyncio router reads the socket in one task that sleeps in the loop's wait,
so an idle connection makes no system calls. Signals are handed to a
callback as they are parsed; the bus daemon filters them first through the
match rules added here, so only the signals asked for ever cross the socket.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from jeepney import DBusAddress, HeaderFields, MatchRule, Message, MessageType, new_method_call
from jeepney.bus_messages import message_bus
from jeepney.io.asyncio import DBusRouter, open_dbus_connection
from jeepney.io.common import FilterHandle
from jeepney.wrappers import DBusErrorResponse, unwrap_msg

from undistro.errors import ApplyError

SignalHandler = Callable[[str, str, tuple[Any, ...]], None]
"""Called with (object path, member, body) of each matching signal."""


class _Deliver:
    """Stands in for the asyncio.Queue jeepney puts matching messages in."""

    def __init__(self, handler: SignalHandler) -> None:
        self.handler = handler

    def put_nowait(self, msg: Message) -> None:
        fields = msg.header.fields
        self.handler(fields[HeaderFields.path], fields[HeaderFields.member], msg.body)


def _consume(task: asyncio.Task[None]) -> None:
    # The receiver ends with EOFError when the bus goes away; on_lost() reports
    # that, so the exception is taken here rather than logged as "never retrieved".
    if not task.cancelled():
        task.exception()


class DBusConnection:
    """One connection to one bus.

    Example::

        bus = await DBusConnection.open("unix:path=/run/dbus/system_bus_socket")
        (names,) = await bus.call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                  "org.freedesktop.DBus", "ListNames")
        await bus.close()
    """

    def __init__(self, router: DBusRouter, address: str) -> None:
        self._router = router
        self.address = address
        self._handles: list[FilterHandle] = []
        self._closing = False
        router._rcv_task.add_done_callback(_consume)

    @classmethod
    async def open(cls, address: str) -> DBusConnection:
        try:
            conn = await open_dbus_connection(address)
        except (OSError, EOFError) as e:
            raise ApplyError(f"cannot connect to D-Bus at {address}: {e}") from None
        return cls(DBusRouter(conn), address)

    async def call(
        self,
        destination: str,
        path: str,
        interface: str,
        method: str,
        signature: str | None = None,
        body: tuple[Any, ...] = (),
    ) -> tuple[Any, ...]:
        """Call a method and return the reply body; D-Bus errors become ApplyError."""
        msg = new_method_call(DBusAddress(path, destination, interface), method, signature, body)
        try:
            reply = await self._router.send_and_get_reply(msg)
            result: tuple[Any, ...] = unwrap_msg(reply)
        except DBusErrorResponse as e:
            raise ApplyError(f"D-Bus {interface}.{method}: {e.name}: {e.data}") from None
        return result

    async def on_signal(
        self,
        handler: SignalHandler,
        *,
        sender: str,
        interface: str,
        member: str | None = None,
        path: str | None = None,
    ) -> None:
        """Ask the bus for these signals and deliver each one to ``handler``."""
        server = MatchRule(
            type="signal", sender=sender, interface=interface, member=member, path=path
        )
        await self._router.send_and_get_reply(message_bus.AddMatch(server))
        # Locally, match without the sender: signals carry the unique name, not the well-known one.
        local = MatchRule(type=MessageType.signal, interface=interface, member=member, path=path)
        self._handles.append(self._router.filter(local, queue=_Deliver(handler)))

    def on_lost(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once if the bus goes away under us (not on close())."""

        def done(task: asyncio.Task[None]) -> None:
            if not self._closing:
                callback()

        self._router._rcv_task.add_done_callback(done)

    async def close(self) -> None:
        self._closing = True
        for handle in self._handles:
            handle.close()
        self._handles.clear()
        if not self.closed:
            await self._router.__aexit__(None, None, None)
        with contextlib.suppress(OSError):  # the bus may be gone already
            await self._router._conn.close()

    @property
    def closed(self) -> bool:
        task: asyncio.Task[None] = self._router._rcv_task
        return task.done()
