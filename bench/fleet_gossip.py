"""Dissemination of one revision announcement alone: N Serf agents on
127.0.0.1, one RPC stream each, one user event of announcement size sent
from one agent; the time until every agent's stream delivered it.

    PYTHONPATH=src .venv/bin/python bench/fleet_gossip.py --agents 200 [--events 5]

Serf's LAN profile gossips every 200 ms to 3 random members (its docs give
convergence in O(log N) gossip rounds: ~4-5 rounds, about 1 s, at 200).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from undistro.fleet import SerfClient


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_agents(n: int, top: Path, profile: str) -> list[tuple[subprocess.Popen[bytes], str]]:
    agents = []
    seed = None
    for i in range(n):
        bind, rpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
        conf = top / f"a{i}.json"
        conf.write_text(json.dumps({"node_name": f"a{i}", "bind": bind, "rpc_addr": rpc,
                                    "profile": profile, "log_level": "warn"}))  # fmt: skip
        argv = ["serf", "agent", f"-config-file={conf}"] + ([f"-retry-join={seed}"] if seed else [])
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        agents.append((proc, rpc))
        seed = seed or bind
    return agents


async def connect(rpc: str) -> SerfClient:
    for _ in range(200):
        try:
            return await SerfClient.connect(rpc, timeout=1)
        except Exception:
            await asyncio.sleep(0.05)
    raise SystemExit(f"serf {rpc} never answered")


async def _listen(
    client: SerfClient, name: str, got: list[float], want: int, done: asyncio.Event
) -> None:
    async for _event in client.stream(f"user:{name}"):
        got.append(time.monotonic())
        if len(got) == want:
            done.set()
        return


async def run(n: int, events: int, profile: str) -> dict[str, object]:
    top = Path(tempfile.mkdtemp(prefix="ufg", dir="/tmp"))
    agents = start_agents(n, top, profile)
    clients: list[SerfClient] = []
    try:
        clients = [await connect(rpc) for _, rpc in agents]
        deadline = time.monotonic() + 120
        while len([m for m in await clients[0].members() if m.status == "alive"]) < n:
            if time.monotonic() > deadline:
                raise SystemExit("the fleet never formed")
            await asyncio.sleep(0.5)
        await asyncio.sleep(2)
        payload = os.urandom(369)  # a compact signed timestamp's size
        spreads, p50s = [], []
        for e in range(events):
            got: list[float] = []
            done = asyncio.Event()
            name = f"bench{e}"
            tasks = [asyncio.ensure_future(_listen(c, name, got, n - 1, done)) for c in clients[1:]]
            await asyncio.sleep(1.0)  # every subscription taken
            start = time.monotonic()
            await clients[0].user_event(name, payload)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), 60)
            for t in tasks:
                t.cancel()
            delays = sorted(g - start for g in got)
            spreads.append(delays[-1] if len(delays) == n - 1 else float("inf"))
            p50s.append(statistics.median(delays) if delays else float("inf"))
        rss = []
        for proc, _ in agents:
            try:
                status = Path(f"/proc/{proc.pid}/status").read_text()
                rss.append(int(status.split("VmRSS:")[1].split()[0]))
            except OSError:
                pass
        return {
            "agents": n,
            "profile": profile,
            "all_received_s": [round(s, 3) for s in spreads],
            "median_all_s": round(statistics.median(spreads), 3),
            "median_of_medians_s": round(statistics.median(p50s), 3),
            "serf_rss_mb_median": round(statistics.median(rss) / 1024, 1) if rss else None,
        }
    finally:
        for c in clients:
            await c.close()
        for proc, _ in agents:
            proc.kill()
            proc.wait()
        shutil.rmtree(top, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", type=int, default=200)
    parser.add_argument("--events", type=int, default=5)
    parser.add_argument("--profile", default="lan", choices=("lan", "local", "wan"))
    args = parser.parse_args()
    if shutil.which("serf") is None:
        raise SystemExit("serf is not installed (apt-get install serf)")
    print(json.dumps(asyncio.run(run(args.agents, args.events, args.profile))))


if __name__ == "__main__":
    main()
