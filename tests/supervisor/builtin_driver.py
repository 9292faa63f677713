"""A small process that hosts a builtin supervisor, for tests that need a separate one.

    python builtin_driver.py STATE_DIR SPECS_JSON MODE

MODE is ``close`` (start or adopt every service, print their status, let go
and exit), ``watch`` (same, then print every event until each service is
down) or ``hold`` (start them, print ``held``, then idle until killed). Every
line on stdout is one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import sys

from undistro.supervisor import BuiltinBackend, Phase, ServiceEvent, ServiceSpec, ServiceStatus


def _line(status: ServiceStatus, cause: str) -> str:
    return json.dumps(
        {
            "name": status.name,
            "phase": status.phase.value,
            "pid": status.pid,
            "exit_status": status.exit_status,
            "cause": cause,
        }
    )


async def main(state_dir: str, specs_json: str, mode: str) -> None:
    specs = [ServiceSpec(**{**s, "argv": tuple(s["argv"])}) for s in json.loads(specs_json)]
    backend = BuiltinBackend(state_dir)
    down: asyncio.Queue[ServiceEvent] = asyncio.Queue()
    for spec in specs:
        print(_line(await backend.start(spec), "start returned"), flush=True)

    def on_event(event: ServiceEvent) -> None:
        print(_line(event.status, event.cause), flush=True)
        if event.status.phase in (Phase.STOPPED, Phase.FAILED):
            down.put_nowait(event)

    backend.subscribe(on_event)
    if mode == "hold":
        print(json.dumps({"held": len(specs)}), flush=True)
        await asyncio.Event().wait()
    if mode == "watch":
        for _ in specs:
            await down.get()
    await backend.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
