"""Large and small blobs: the fleet's swarm beside plain HTTP, in namespaces.

    PYTHONPATH=src:. .venv/bin/python bench/content_swarm.py [--nodes 20] [--mb 100] [--runs 3]

One origin and N receivers, each in its own network namespace on one bridge
(tests/fleet/netns.py). For the large blob, per run: the swarm (one
libtorrent child per node, peers from the member list) and then plain HTTP
(python's http.server in the origin's namespace, every receiver fetching at
once and verifying the SHA-256): bytes the origin's interface sent and the
time until the last receiver stored it. For small blobs (10 kB .. 10 MB):
one receiver, HTTP from one peer vs the swarm with children already running.
Prints a markdown table and the load (``uptime``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.content._swarm_nodes import peers_of, put_blob, store_path, swarm_for
from tests.fleet.netns import Host, namespace_hosts

from undistro.content import Swarm, SwarmRef

HTTP_PORT = 7948
# A receiver over plain HTTP: fetch, verify the SHA-256, rename into the store.
FETCH = r"""
import hashlib, os, sys, urllib.request
url, dest, want = sys.argv[1:4]
tmp = dest + ".part"
h = hashlib.sha256()
with urllib.request.urlopen(url) as r, open(tmp, "wb") as f:
    while chunk := r.read(1 << 20):
        h.update(chunk); f.write(chunk)
    f.flush(); os.fsync(f.fileno())
assert h.hexdigest() == want, "sha256 mismatch"
os.rename(tmp, dest)
"""


def tx_bytes(host: Host) -> int:
    out = subprocess.run(host.argv("cat", "/sys/class/net/eth0/statistics/tx_bytes"),
                         capture_output=True, text=True, check=True).stdout  # fmt: skip
    return int(out)


def http_server(origin: Host, root: Path) -> subprocess.Popen[bytes]:
    argv = origin.argv(sys.executable, "-m", "http.server", str(HTTP_PORT),
                       "--bind", origin.address, "--directory", str(root))  # fmt: skip
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        probe = origin.argv("python3", "-c", "import socket,sys; socket.create_connection("
                            f"('{origin.address}', {HTTP_PORT}), 1)")  # fmt: skip
        if subprocess.run(probe, capture_output=True).returncode == 0:
            return proc
        time.sleep(0.1)
    proc.kill()
    raise RuntimeError("http.server did not come up")


def http_to(origin: Host, receivers: list[Host], root: Path, ref: SwarmRef) -> float:
    url = f"http://{origin.address}:{HTTP_PORT}/{ref.sha256}"
    start = time.monotonic()
    procs = []
    for h in receivers:
        dest = root / h.name / "http" / ref.sha256
        dest.parent.mkdir(parents=True, exist_ok=True)
        procs.append(subprocess.Popen(h.argv(sys.executable, "-c", FETCH, url, str(dest),
                                             ref.sha256)))  # fmt: skip
    for p in procs:
        if p.wait(600) != 0:
            raise RuntimeError("an HTTP receiver failed")
    return time.monotonic() - start


async def swarm_to(swarms: list[Swarm], hosts: list[Host], ref: SwarmRef) -> float:
    start = time.monotonic()
    await asyncio.gather(
        *(
            s.fetch(ref, peers_of(hosts, h), timeout=600)
            for s, h in zip(swarms[1:], hosts[1:], strict=True)
        )
    )
    return time.monotonic() - start


async def large(hosts: list[Host], root: Path, mb: int, runs: int) -> dict[str, list[float]]:
    origin, receivers = hosts[0], hosts[1:]
    out: dict[str, list[float]] = {k: [] for k in ("sw_s", "sw_up", "sw_tx", "http_s", "http_tx")}
    for run in range(runs):
        state = root / f"run{run}"
        ref = put_blob(state / origin.name, os.urandom(mb << 20))
        swarms = [swarm_for(h, state) for h in hosts]
        try:
            await asyncio.gather(*(s.start() for s in swarms))
            await swarms[0].seed(ref.sha256, receivers=len(hosts) - 1)
            tx = tx_bytes(origin)
            out["sw_s"].append(await swarm_to(swarms, hosts, ref))
            out["sw_tx"].append((tx_bytes(origin) - tx) / ref.size)
            out["sw_up"].append((await swarms[0].stats())[ref.sha256]["uploaded"] / ref.size)
        finally:
            await asyncio.gather(*(s.close() for s in swarms))
        for h in receivers:
            assert store_path(state / h.name, ref.sha256).stat().st_size == ref.size
        server = http_server(origin, state / origin.name / "content" / "sha256")
        try:
            tx = tx_bytes(origin)
            out["http_s"].append(http_to(origin, receivers, state, ref))
            out["http_tx"].append((tx_bytes(origin) - tx) / ref.size)
        finally:
            server.kill()
            server.wait()
        print(f"run {run}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in out.items()), flush=True)
    return out


async def small(hosts: list[Host], root: Path, runs: int) -> dict[int, tuple[float, float]]:
    origin, receiver = hosts[0], hosts[1]
    sizes = [10_000, 100_000, 1_000_000, 10_000_000]
    out = {}
    state = root / "small"
    seed, fetch = swarm_for(origin, state), swarm_for(receiver, state)
    server = http_server(origin, state / origin.name / "content" / "sha256")
    try:
        await asyncio.gather(seed.start(), fetch.start())
        for size in sizes:
            sw, http = [], []
            for _ in range(runs):
                ref = put_blob(state / origin.name, os.urandom(size))
                http.append(http_to(origin, [receiver], state, ref))
                await seed.seed(ref.sha256, receivers=1)
                sw.append(await swarm_to([seed, fetch], [origin, receiver], ref))
            out[size] = (statistics.median(http), statistics.median(sw))
            print(f"{size} B: http {out[size][0]:.3f} s, swarm {out[size][1]:.3f} s", flush=True)
    finally:
        server.kill()
        server.wait()
        await asyncio.gather(seed.close(), fetch.close())
    return out


async def child_start(host: Host, root: Path, runs: int) -> float:
    times = []
    for i in range(runs):
        s = Swarm(root / f"start{i}", host.address, launcher=host.argv())
        t = time.monotonic()
        await s.start()
        times.append(time.monotonic() - t)
        await s.close()
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--nodes", type=int, default=20, help="receivers")
    p.add_argument("--mb", type=int, default=100)
    p.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory() as d, namespace_hosts(args.nodes + 1, net=40) as hosts:
        root = Path(d)
        start = asyncio.run(child_start(hosts[0], root, 5))
        big = asyncio.run(large(hosts, root, args.mb, args.runs))
        tiny = asyncio.run(small(hosts, root, 5))
    med = {k: statistics.median(v) for k, v in big.items()}
    print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"\n{args.mb} MB to {args.nodes} receivers, median of {args.runs}:\n")
    print("| method | last node has it | origin sent (eth0, x size) | origin payload (x size) |")
    print("|---|---|---|---|")
    print(f"| swarm | {med['sw_s']:.1f} s | {med['sw_tx']:.2f} | {med['sw_up']:.2f} |")
    print(f"| HTTP from the origin | {med['http_s']:.1f} s | {med['http_tx']:.2f} | - |")
    print("\nOne blob to one receiver (children already running), median of 5:\n")
    print("| size | HTTP from a peer | swarm |")
    print("|---|---|---|")
    for size, (http, sw) in tiny.items():
        print(f"| {size:,} B | {http * 1000:.0f} ms | {sw * 1000:.0f} ms |")
    print(f"\nswarm child start (import libtorrent + session + listen): {start * 1000:.0f} ms")


if __name__ == "__main__":
    main()
