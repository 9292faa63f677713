"""Idle cost: resident memory and system calls per minute of an undistro
agent managing 10,000 files, beside `puppet agent` and `cf-execd` idling in
the same run (Debian packages puppet-agent and cfengine3).

    PYTHONPATH=src /work/main/.venv/bin/python bench/agent_idle.py [--files 10000] [--seconds 60]

Peers run without a server, in temp dirs: puppet agent has no certificate and
waits to retry (its idle state between attempts); cf-execd runs a minimal
policy with its default 5-minute schedule (it wakes every minute to look).
Each process is traced with `strace -c -f -p` over the same window.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from _agent import Agent, make_policy, rss_mb, start_strace, stop_strace

CF_POLICY = """\
body common control { bundlesequence => { "main" }; }
body executor control { splaytime => "0"; exec_command => "/bin/true"; }
bundle agent main { }
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ubench-") as tmp:
        top = Path(tmp)
        root = top / "root"
        root.mkdir()
        make_policy(top / "p", args.files)
        started = time.monotonic()
        first = Agent(top / "p", root)
        try:
            first.settle()
            converge_s = time.monotonic() - started
            first_rss = rss_mb(first.proc.pid)
        finally:
            first.stop()
        # The idle state that matters: an agent (re)started on a machine that
        # already holds its policy: what a reboot or an upgrade leaves.
        agent = Agent(top / "p", root)
        peers: dict[str, subprocess.Popen[bytes]] = {}
        try:
            status = agent.settle()
            peers = start_peers(top)
            time.sleep(20)  # puppet's first (failing) attempt, cf-execd's start
            pids = {"undistro agent": agent.proc.pid, **{k: p.pid for k, p in peers.items()}}
            rss = {name: rss_mb(pid) for name, pid in pids.items()}
            traces = {name: start_strace(pid) for name, pid in pids.items()}
            time.sleep(args.seconds)
            calls = {name: stop_strace(t) for name, t in traces.items()}
        finally:
            for proc in peers.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                    try:
                        proc.wait(20)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            agent.stop()
    print(
        f"undistro agent: {args.files} files in {status['events']['watched_dirs']} watched"
        f" directories, started and converged in {converge_s:.1f} s"
    )
    print(f"RSS right after that first converge (creating every file): {first_rss:.1f} MB")
    print(f"below: the agent restarted on the converged root; window {args.seconds:.0f} s\n")
    print("| process | idle RSS (MB) | syscalls/min | syscalls seen |")
    print("|---|---|---|---|")
    for name in pids:
        total = sum(calls[name].values())
        per_min = total * 60 / args.seconds
        seen = ", ".join(
            f"{k} {v}" for k, v in sorted(calls[name].items(), key=lambda kv: -kv[1])[:4]
        )
        print(f"| {name} | {rss[name]:.1f} | {per_min:.0f} | {seen or '-'} |")


def start_peers(top: Path) -> dict[str, subprocess.Popen[bytes]]:
    peers: dict[str, subprocess.Popen[bytes]] = {}
    log = open(top / "peers.log", "ab")  # noqa: SIM115
    if shutil.which("puppet"):
        pp = top / "puppet"
        dirs = {d: str(pp / d) for d in ("conf", "var", "log", "run", "code", "pub")}
        peers["puppet agent"] = subprocess.Popen(
            ["puppet", "agent", "--no-daemonize", "--server", "127.0.0.1", "--masterport", "9",
             "--confdir", dirs["conf"], "--vardir", dirs["var"], "--logdir", dirs["log"],
             "--rundir", dirs["run"], "--codedir", dirs["code"], "--publicdir", dirs["pub"]],
            stdout=log, stderr=log,
        )  # fmt: skip
    if shutil.which("cf-execd"):
        work = top / "cfengine"
        (work / "bin").mkdir(parents=True)
        for name in ("cf-promises", "cf-agent"):
            os.symlink(shutil.which(name) or f"/usr/bin/{name}", work / "bin" / name)
        (top / "promises.cf").write_text(CF_POLICY)
        peers["cf-execd"] = subprocess.Popen(
            ["cf-execd", "--no-fork", "-f", str(top / "promises.cf"),
             "--with-runagent-socket", "no"],
            stdout=log, stderr=log,
            env={**os.environ, "CFENGINE_TEST_OVERRIDE_WORKDIR": str(work)},
        )  # fmt: skip
    return peers


if __name__ == "__main__":
    main()
