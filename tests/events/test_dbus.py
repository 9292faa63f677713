"""The D-Bus plumbing against a private dbus-daemon: calls, signals, errors."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from undistro.errors import ApplyError
from undistro.events._dbus import DBusConnection

BUS = "org.freedesktop.DBus"
BUS_PATH = "/org/freedesktop/DBus"


@dataclass
class PrivateBus:
    address: str
    daemon: subprocess.Popen[str]


@pytest.fixture
def session_bus(tmp_path: Path) -> Iterator[PrivateBus]:
    if shutil.which("dbus-daemon") is None:
        pytest.skip("dbus-daemon is not installed (Debian dbus)")
    address = f"unix:path={tmp_path}/bus"
    proc = subprocess.Popen(
        ["dbus-daemon", "--session", "--nofork", "--print-address=1", f"--address={address}"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().startswith("unix:path=")
        yield PrivateBus(address, proc)
    finally:
        proc.terminate()
        proc.wait(10)


def test_call_and_signal_delivery(session_bus: PrivateBus) -> None:
    async def scenario() -> None:
        bus = await DBusConnection.open(session_bus.address)
        seen: list[tuple[str, str, tuple[Any, ...]]] = []
        got = asyncio.Event()

        def handler(path: str, member: str, body: tuple[Any, ...]) -> None:
            seen.append((path, member, body))
            got.set()

        try:
            await bus.on_signal(handler, sender=BUS, interface=BUS, member="NameOwnerChanged")
            other = await DBusConnection.open(session_bus.address)  # its arrival is a signal
            await asyncio.wait_for(got.wait(), 5)
            (names,) = await bus.call(BUS, BUS_PATH, BUS, "ListNames")
            await other.close()
            assert seen[0][1] == "NameOwnerChanged" and seen[0][2][0] in names
        finally:
            await bus.close()

    asyncio.run(scenario())


def test_dbus_errors_become_one_line_apply_errors(session_bus: PrivateBus, tmp_path: Path) -> None:
    async def scenario() -> None:
        bus = await DBusConnection.open(session_bus.address)
        try:
            with pytest.raises(
                ApplyError, match=r"GetNameOwner: org\.freedesktop\.DBus\.Error\.NameHasNoOwner"
            ):
                await bus.call(BUS, BUS_PATH, BUS, "GetNameOwner", "s", ("org.example.Nobody",))
        finally:
            await bus.close()
        with pytest.raises(ApplyError, match="cannot connect to D-Bus"):
            await DBusConnection.open(f"unix:path={tmp_path}/no-such-bus")

    asyncio.run(scenario())


def test_losing_the_bus_is_reported(session_bus: PrivateBus) -> None:
    async def scenario() -> None:
        bus = await DBusConnection.open(session_bus.address)
        lost = asyncio.Event()
        bus.on_lost(lost.set)
        session_bus.daemon.terminate()
        await asyncio.wait_for(lost.wait(), 5)
        assert bus.closed
        await bus.close()

    asyncio.run(scenario())
