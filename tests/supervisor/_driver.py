"""A small process hosting one backend with N services, for the idle-strace test.

Usage: python _driver.py s6 SCANDIR STATEDIR N
       python _driver.py systemd BUS_ADDRESS UNIT_DIR N
Prints "ready" once every service is running, then waits for SIGTERM and
tears down: s6 stops its scanner, systemd stops its units. A SIGKILL leaves
everything running, as an agent crash would.
"""

from __future__ import annotations

import asyncio
import signal
import sys

from undistro.supervisor import S6Backend, ServiceSpec, SystemdBackend


def idle_spec(i: int) -> ServiceSpec:
    return ServiceSpec(f"idle{i}", ("sleep", "1000"))


async def main(kind: str, a: str, b: str, n: int) -> None:
    backend: S6Backend | SystemdBackend
    backend = S6Backend(a, b) if kind == "s6" else await SystemdBackend.connect(a, unit_dir=b)
    try:
        for i in range(n):
            await backend.start(idle_spec(i))
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
    finally:
        if isinstance(backend, S6Backend):
            await backend.shutdown()
        else:
            for i in range(n):
                await backend.stop(f"idle{i}")
            await backend.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
