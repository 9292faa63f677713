"""Debian's nginx as a ``[[service]]`` of a real agent: crash→serving and reload latency.

On a temp root, nginx on a free loopback port (pid, logs, temp files in the
temp dir), its config a validated ``[[file]]`` that notifies it
(``on_notify = "reload"``). Measures, ``--samples`` times each:

* **crash → serving**: ``kill -9`` of the master's group until ``GET /``
  answers again from a new master (the supervisor sees the pidfd, backs off
  ``restart_delay`` = 0.1 s, converges the config, spawns; nginx binds;
  each crash is the first of its ``crash_loop_window``, so no doubled backoff);
* **policy change → new config served**: a new body in the policy until
  nginx serves it, master pid unchanged (policy reload in a forked child,
  ``nginx -t`` on the candidate, write + rename, SIGHUP, nginx's reload);
* **reload request → answered**: ``undistro service reload`` over the
  control socket (the agent's share of a reload);
* ``nginx -t`` of the config alone (what ``validate`` adds to a repair).

Every process started (agent, nginx, s6) is killed by pid at the end.

    PYTHONPATH=src:. .venv/bin/python bench/services_nginx.py --backend builtin --samples 10
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from tests._services import Nginx, short_tmp

from bench._agent import Agent
from undistro.agent.client import try_agent


def wait(check: Callable[[], object], timeout: float = 30) -> float:
    """Seconds until ``check()`` is truthy (polled every millisecond)."""
    began = time.perf_counter()
    while not check():
        if time.perf_counter() - began > timeout:
            raise SystemExit(f"timed out waiting for {check}")
        time.sleep(0.001)
    return time.perf_counter() - began


def service_pid(state_dir: str) -> int | None:
    reply = try_agent(state_dir, {"op": "services"}, timeout=30)
    assert reply is not None
    pid = reply["services"].get("nginx", {}).get("pid")
    return pid if isinstance(pid, int) else None


def write(policy: Path, text: str) -> None:
    target = policy / "policy" / "main.toml"
    tmp = policy / "main.toml.new"  # outside policy/: one event, at the rename
    tmp.write_text(text)
    os.rename(tmp, target)


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("builtin", "s6"), default="builtin")
    parser.add_argument("--samples", type=int, default=10)
    args = parser.parse_args()
    # Each crash the first of its window: the delay is restart_delay (0.1 s), not a backoff.
    extra = f'backend = "{args.backend}"\ncrash_loop_window = 1\n'
    results: dict[str, list[float]] = {"crash": [], "change": [], "request": [], "check": []}
    with short_tmp() as tmp:
        root = tmp / "root"
        policy = tmp / "policy"
        (policy / "policy").mkdir(parents=True)
        (policy / "undistro.toml").write_text('name = "nginx-bench"\n')
        nginx = Nginx(tmp, root)
        write(policy, nginx.tables("v0", service_extra=extra))
        agent = Agent(policy, root)
        try:
            wait(lambda: nginx.get(0.2) == "v0")
            agent.settle()
            for _ in range(args.samples):
                master = service_pid(agent.state_dir)
                assert master is not None
                os.killpg(master, signal.SIGKILL)
                results["crash"].append(
                    wait(lambda m=master: nginx.get(0.2) == "v0" and nginx.master() != m)  # type: ignore[misc]
                )
                wait(lambda m=master: service_pid(agent.state_dir) not in (None, m))  # type: ignore[misc]
                time.sleep(1.2)  # past crash_loop_window: the next crash starts afresh
            master = service_pid(agent.state_dir)
            for i in range(1, args.samples + 1):
                began = time.perf_counter()
                write(policy, nginx.tables(f"v{i}", service_extra=extra))
                wait(lambda body=f"v{i}": nginx.get(0.2) == body)  # type: ignore[misc]
                results["change"].append(time.perf_counter() - began)
                time.sleep(0.3)
            assert service_pid(agent.state_dir) == master, "a change restarted nginx"
            request = {"op": "service", "action": "reload", "name": "nginx"}
            for _ in range(args.samples):
                began = time.perf_counter()
                reply = try_agent(agent.state_dir, request, timeout=30)
                results["request"].append(time.perf_counter() - began)
                assert reply is not None and reply["ok"], reply
                time.sleep(0.2)
            conf = str(root) + nginx.conf
            for _ in range(args.samples):
                argv = [a.replace("{path}", conf) for a in nginx.validate()]
                began = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                results["check"].append(time.perf_counter() - began)
        finally:
            agent.stop()
            nginx.kill()
    print(f"nginx under the {args.backend} backend, {args.samples} samples each")
    print(f"  crash (kill -9 master) -> serving again: {ms(results['crash'])}")
    print(f"  policy change -> new config served:      {ms(results['change'])}")
    print(f"  reload request -> answered:              {ms(results['request'])}")
    print(f"  nginx -t of the config (validate):       {ms(results['check'])}")
    print(json.dumps({k: [round(v, 4) for v in vals] for k, vals in results.items()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
