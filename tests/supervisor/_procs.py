"""Helpers shared by the backend tests: run a scenario, wait, look at processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path


def run(scenario: Callable[[], Awaitable[None]], timeout: float = 60) -> None:
    asyncio.run(asyncio.wait_for(scenario(), timeout))


async def until(check: Callable[[], bool]) -> None:
    while not check():
        await asyncio.sleep(0.05)


def alive(pid: int) -> bool:
    """True unless the process is gone or a zombie (nobody may reap it here)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start_driver(*args: str) -> subprocess.Popen[str]:
    """Start tests/supervisor/_driver.py and wait for its "ready" line."""
    driver = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("_driver.py")), *args],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert driver.stdout is not None
    if driver.stdout.readline().strip() != "ready":
        driver.kill()
        driver.wait()
        raise AssertionError("the driver did not get its services running")
    return driver
