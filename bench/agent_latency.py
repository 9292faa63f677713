"""Repair latency: from a write that drifts a managed file to the agent's
rename of the repaired file over it, over 200 drifts; and CPU seconds the
agent spends per 1,000 drift events.

    PYTHONPATH=src /work/main/.venv/bin/python bench/agent_latency.py [--files 1000] [--drifts 200]

The repair is observed through inotify on the file's directory (the agent
replaces the file with rename, so IN_MOVED_TO on its name is the moment the
promise holds again): nothing polls, and the clock stops within microseconds.
"""

from __future__ import annotations

import argparse
import os
import random
import select
import statistics
import tempfile
import time
from pathlib import Path

from _agent import Agent, make_policy, percentile, rss_mb

from undistro.events import Inotify
from undistro.events._binding import IN_MOVED_TO


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--drifts", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ubench-") as tmp:
        root = Path(tmp) / "root"
        root.mkdir()
        paths = make_policy(Path(tmp) / "p", args.files)
        agent = Agent(Path(tmp) / "p", root)
        try:
            agent.settle()
            latencies = measure(agent, root, paths, args.drifts)
            idle = rss_mb(agent.proc.pid)
            agent.reset_peak()
            cpu, took = cpu_per_1000(agent, root, paths)
            peak = agent.peak_rss_mb()
            status = agent.status()
        finally:
            agent.stop()
    ms = [x * 1000 for x in latencies]
    print(f"files managed: {args.files}; drifts: {len(ms)}")
    print(
        f"repair latency: median {statistics.median(ms):.2f} ms, p99 {percentile(ms, 99):.2f} ms,"
        f" max {max(ms):.2f} ms"
    )
    print(f"CPU per 1,000 drift events: {cpu:.2f} s (agent and its forked checks)")
    print(f"1,000 single writes: all repaired {took:.2f} s after the last one")
    print(f"RSS: {idle:.1f} MB before them, peak {peak:.1f} MB during")
    print(f"agent checks {status['events']['checks']}, repairs {status['events']['repairs']}")


def measure(agent: Agent, root: Path, paths: list[str], drifts: int) -> list[float]:
    ino = Inotify()
    watched: dict[str, int] = {}
    rng = random.Random(42)
    out = []
    try:
        for _ in range(drifts):
            target = root / rng.choice(paths).lstrip("/")
            directory = str(target.parent)
            if directory not in watched:
                watched[directory] = ino.add_watch(directory, IN_MOVED_TO)
            ino.read()
            start = time.perf_counter()
            with open(target, "w") as f:
                f.write("drift\n")
            while not any(e.name == target.name for e in _wait(ino)):
                pass
            out.append(time.perf_counter() - start)
            time.sleep(0.02)  # let the paired check of our repair pass
    finally:
        ino.close()
    return out


def cpu_per_1000(agent: Agent, root: Path, paths: list[str]) -> tuple[float, float]:
    """CPU seconds of the agent while it repairs 1,000 separate drifts, and
    the seconds from the last write until all of them were repaired."""
    agent.settle()
    before_cpu, before = agent.cpu_seconds(), agent.status()["events"]["repairs"]
    targets = [root / p.lstrip("/") for p in paths]
    for i in range(1000):
        targets[i % len(targets)].write_text("drift\n")
        time.sleep(0.002)
    last = time.monotonic()
    deadline = last + 120
    while agent.status()["events"]["repairs"] - before < 1000 and time.monotonic() < deadline:
        time.sleep(0.02)
    took = time.monotonic() - last
    agent.settle()
    return agent.cpu_seconds() - before_cpu, took


def _wait(ino: Inotify) -> list:
    select.select([ino.fileno()], [], [], 5)
    return ino.read()


if __name__ == "__main__":
    os.nice(0)
    main()
