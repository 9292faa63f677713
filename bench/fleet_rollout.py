"""Fleet rollout: from `undistro fleet push` until the revision is applied on
every node, for N nodes on this machine (each a real undistro agent with its
own Serf agent, root and ports on 127.0.0.1), plus RSS of agent + Serf per
node and the bytes each node fetched for the revision.

    PYTHONPATH=src .venv/bin/python bench/fleet_rollout.py --nodes 10,30,50 [--pushes 3]

"Applied" is the mtime of the managed file the revision changes: the agent's
rename of it is the moment the promise holds, and nothing polls it while
the clock runs (the bench looks only after the last node is done).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

UNDISTRO = str(Path(sys.executable).with_name("undistro"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, i: int, top: Path, fleet: Path, seed: str | None) -> None:
        self.root = top / f"n{i}"
        (self.root / "etc/undistro").mkdir(parents=True)
        self.bind = f"127.0.0.1:{free_port()}"
        self.rpc = f"127.0.0.1:{free_port()}"
        join = f'retry_join = ["{seed}"]\n' if seed else ""
        (self.root / "etc/undistro/node.toml").write_text(
            f'hostname = "n{i}"\n[fleet]\nbind = "{self.bind}"\nrpc = "{self.rpc}"\n'
            f'{join}profile = "local"\nsources = ["{fleet}/repo"]\n'
        )
        subprocess.run(
            [
                UNDISTRO,
                "fleet",
                "trust",
                f"{fleet}/repo/metadata/1.root.json",
                "--root",
                str(self.root),
            ],
            check=True,
            capture_output=True,
        )
        self.log = top / f"n{i}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [UNDISTRO, "agent", "--root", str(self.root)], stdout=log, stderr=subprocess.STDOUT
            )

    def ready(self) -> bool:
        return b"ready:" in self.log.read_bytes()

    def applied_at(self, text: str) -> float | None:
        try:
            path = self.root / "etc/motd"
            return path.stat().st_mtime_ns / 1e9 if path.read_text() == text else None
        except FileNotFoundError:
            return None

    def rss_kb(self) -> tuple[int, int]:
        agent = _rss(self.proc.pid) if self.proc else 0
        return agent, sum(_rss(pid) for pid in self._serf_pids())

    def cpu_s(self) -> tuple[float, float, float]:
        """CPU seconds of this node so far: the agent itself, its fetch and
        compile children (reaped by the agent, or by its zygote, which is
        counted with them), and its live Serf."""
        if self.proc is None:
            return 0.0, 0.0, 0.0
        agent, children = _cpu(self.proc.pid)
        for pid in _children(self.proc.pid):
            if _comm(pid) == "undistro-forks":
                children += sum(_cpu(pid))
        return agent, children, sum(_cpu(pid)[0] for pid in self._serf_pids())

    def _serf_pids(self) -> list[int]:
        out = subprocess.run(
            ["pgrep", "-f", "--", f"-config-file={self.root}/"], capture_output=True, text=True
        )
        return [int(p) for p in out.stdout.split()]

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        subprocess.run(
            ["pkill", "-9", "-f", "--", f"-config-file={self.root}/"], capture_output=True
        )


def _rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu(pid: int) -> tuple[float, float]:
    """(own, reaped children's) CPU seconds of ``pid``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0, 0.0
    # utime stime cutime cstime: fields 14-17 of proc(5), 3 being the first after ")"
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime) / _TICK, (cutime + cstime) / _TICK


def _children(pid: int) -> list[int]:
    try:
        return [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _cpu_sum(nodes: list[Node]) -> list[float]:
    return [sum(part) for part in zip(*(x.cpu_s() for x in nodes), strict=True)]


def wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def alive(node: Node) -> int:
    out = subprocess.run(
        [UNDISTRO, "fleet", "members", "--rpc", node.rpc, "--status", "alive"],
        capture_output=True,
        text=True,
    )
    return max(0, len(out.stdout.splitlines()) - 1)


def run(n: int, pushes: int) -> dict[str, object]:
    top = Path(tempfile.mkdtemp(prefix="ufb", dir="/tmp"))
    fleet = top / "fleet"
    subprocess.run([UNDISTRO, "fleet", "init", str(fleet)], check=True, capture_output=True)
    policy = top / "policy"
    (policy / "policy").mkdir(parents=True)
    (policy / "undistro.toml").write_text('name = "bench"\n')
    nodes: list[Node] = []
    try:
        for i in range(n):
            nodes.append(Node(i, top, fleet, nodes[0].bind if nodes else None))
        for node in nodes:
            node.start()
        wait(lambda: all(x.ready() for x in nodes), 60 + 2 * n, "agents ready")
        wait(lambda: alive(nodes[0]) == n, 60 + n, f"{n} alive members")
        times: list[float] = []
        cpus: list[list[float]] = []
        spread: list[list[float]] = []  # first node, quartiles
        for p in range(pushes):
            text = f"revision {p}\n"
            (policy / "policy/main.toml").write_text(
                f'[[file]]\npath = "/etc/motd"\ncontent = "{text.strip()}\\n"\n'
            )
            pusher = nodes[p % n]
            before = _cpu_sum(nodes)
            start = time.time()
            subprocess.run(
                [
                    UNDISTRO,
                    "fleet",
                    "push",
                    str(policy),
                    "--fleet",
                    str(fleet),
                    "--rpc",
                    pusher.rpc,
                ],
                check=True,
                capture_output=True,
            )
            wait(lambda t=text: all(x.applied_at(t) is not None for x in nodes), 60, "rollout")
            applied = sorted((x.applied_at(text) or 0) - start for x in nodes)
            times.append(applied[-1])
            spread.append([round(applied[int(q * (n - 1))], 2) for q in (0, 0.25, 0.5, 0.75)])
            time.sleep(1.0)  # the idle second's Serf ticks are in the CPU too: ~0.01 s/node
            cpus.append([(a - b) / n for a, b in zip(_cpu_sum(nodes), before, strict=True)])
        rss = [x.rss_kb() for x in nodes]
        repo = fleet / "repo"
        ts = (repo / "metadata/timestamp.json").stat().st_size

        def latest(role: str) -> int:
            files = (repo / "metadata").glob(f"*.{role}.json")
            return max(files, key=lambda p: int(p.name.split(".")[0])).stat().st_size

        bundle = (
            max((repo / "targets/policy").iterdir(), key=lambda p: p.stat().st_mtime).stat().st_size
        )
        return {
            "nodes": n,
            "rollout_s": [round(t, 3) for t in times],
            "median_s": round(statistics.median(times), 3),
            "first_q1_median_q3_s": spread,
            # agent, its children, Serf: CPU-s per node per revision (load-independent)
            "cpu_s_per_node": [round(sum(c), 3) for c in cpus],
            "cpu_split": [round(statistics.median(c[i] for c in cpus), 3) for i in range(3)],
            "load": os.getloadavg()[0],
            "agent_rss_mb": round(statistics.median(a for a, _ in rss) / 1024, 1),
            "serf_rss_mb": round(statistics.median(s for _, s in rss) / 1024, 1),
            "bytes_per_node": ts + latest("snapshot") + latest("targets") + bundle,
        }
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(top, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", default="10,30,50")
    parser.add_argument("--pushes", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("serf") is None:
        raise SystemExit("serf is not installed (apt-get install serf)")
    for n in (int(x) for x in args.nodes.split(",")):
        print(json.dumps(run(n, args.pushes)), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
