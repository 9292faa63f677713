"""The agent supervising N ``[[service]]`` resources: apply time, adoption, idle RSS.

Measures, on a temp root with N services (``sleep``, readiness none, builtin):

* one-shot ``undistro apply`` that starts all N, then one that finds all N
  kept (each adopted from its record, then let go);
* ``undistro agent`` start-up to "ready" with all N adopted (no duplicate);
* the agent's VmRSS once settled (the budget: ≤ 40 MB with 50 services).

Every service and the agent are killed by pid at the end.

    PYTHONPATH=src .venv/bin/python bench/services_agent.py --services 50 --runs 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = str(Path(__file__).resolve().parents[1] / "src")


def cli(*args: str) -> float:
    env = {**os.environ, "PYTHONPATH": SRC}
    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "undistro.cli", *args],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - began


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def one_run(n: int) -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="usb-", dir="/tmp"))
    root, policy = tmp / "root", tmp / "policy"
    (policy / "policy").mkdir(parents=True)
    root.mkdir()
    (policy / "undistro.toml").write_text('name = "bench"\n')
    (policy / "policy" / "main.toml").write_text(
        "\n".join(f'[[service]]\nname = "s{i}"\ncommand = ["sleep", "100000"]\n' for i in range(n))
    )
    records = root / "var/lib/undistro/services/builtin"
    agent = None
    try:
        first = cli("apply", str(policy), "--root", str(root), "-q")
        kept = cli("apply", str(policy), "--root", str(root), "-q")
        pids = {json.loads((records / f"s{i}.json").read_text())["pid"] for i in range(n)}
        env = {**os.environ, "PYTHONPATH": SRC}
        log = open(tmp / "agent.log", "w+")  # noqa: SIM115 - closed below
        began = time.perf_counter()
        agent = subprocess.Popen(
            [sys.executable, "-m", "undistro.cli", "agent", str(policy), "--root", str(root)],
            stderr=log,
            env=env,
        )
        while "ready:" not in (tmp / "agent.log").read_text():
            assert agent.poll() is None, (tmp / "agent.log").read_text()
            time.sleep(0.005)
        ready = time.perf_counter() - began
        time.sleep(2)
        rss = rss_mb(agent.pid)
        after = {json.loads((records / f"s{i}.json").read_text())["pid"] for i in range(n)}
        assert after == pids, "the agent started duplicates"
        return {"apply_start": first, "apply_kept": kept, "agent_ready": ready, "rss": rss}
    finally:
        if agent is not None:
            agent.kill()
            agent.wait()
        for rec in records.glob("*.json"):
            with contextlib.suppress(ValueError, KeyError, ProcessLookupError):
                os.killpg(json.loads(rec.read_text())["pid"], signal.SIGKILL)
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--services", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.services) for _ in range(args.runs)]
    for key, unit, scale in (
        ("apply_start", "ms", 1000),
        ("apply_kept", "ms", 1000),
        ("agent_ready", "ms", 1000),
        ("rss", "MB", 1),
    ):
        values = [r[key] * scale for r in runs]
        print(
            f"{key:<12} median {statistics.median(values):8.1f} {unit}  "
            f"(min {min(values):.1f}, max {max(values):.1f})"
        )


if __name__ == "__main__":
    main()
