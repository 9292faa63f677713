"""A fleet of test hosts in network namespaces, each with its own address,
Serf agent and undistro agent under its own --root (issue: the fleet)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import PolicyDir
from tests.fleet.netns import Host, namespace_hosts

UNDISTRO = str(Path(sys.executable).with_name("undistro"))


class FleetNode:
    def __init__(
        self, host: Host, tmp: Path, fleet: Path, seed: str | None, tags: list[str]
    ) -> None:
        self.host = host
        self.root = tmp / f"h{host.index}"
        (self.root / "etc/undistro").mkdir(parents=True)
        (self.root / "etc/undistro/node.toml").write_text(
            f"hostname = {host.name!r}\n"
            f"tags = {json.dumps(tags)}\n"
            "[fleet]\n"
            f'bind = "{host.address}:7946"\n'
            + (f'retry_join = ["{seed}:7946"]\n' if seed else 'discover = "undistro-test"\n')
            + 'profile = "local"\n'
            f"sources = [{json.dumps(str(fleet / 'repo'))}]\n"
        )
        subprocess.run(
            [UNDISTRO, "fleet", "trust", str(fleet / "repo/metadata/1.root.json"),
             "--root", str(self.root)],
            check=True, capture_output=True,
        )  # fmt: skip
        self.log = tmp / f"h{host.index}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                self.host.argv(UNDISTRO, "agent", "--root", str(self.root)),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        _wait(lambda: b"ready:" in self.log.read_bytes(), 30, f"{self.host.name} agent ready")

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.host.argv(UNDISTRO, *argv), capture_output=True, text=True, timeout=60
        )

    def motd(self) -> str | None:
        try:
            return (self.root / "etc/motd").read_text()
        except FileNotFoundError:
            return None

    def kill_all(self) -> None:
        """kill -9 of everything in this host's namespace (agent and Serf)."""
        out = subprocess.run(
            ["ip", "netns", "pids", self.host.name], capture_output=True, text=True
        )
        for pid in out.stdout.split():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)

    def serf_pid(self) -> int | None:
        out = subprocess.run(
            ["ip", "netns", "pids", self.host.name], capture_output=True, text=True
        )
        for pid in out.stdout.split():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip() == "serf":
                    return int(pid)
            except OSError:
                continue
        return None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.kill_all()


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture
def fleet_dir(tmp_path: Path) -> Path:
    import shutil

    if shutil.which("serf") is None:
        pytest.skip("serf is not installed (Debian serf; .ci/apt/fleet.txt)")
    subprocess.run(
        [UNDISTRO, "fleet", "init", str(tmp_path / "fleet")], check=True, capture_output=True
    )
    return tmp_path / "fleet"


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """Roots with short paths: a unix socket path (sd_notify's) has 107 bytes."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="udf", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def five(short_tmp: Path, fleet_dir: Path) -> Iterator[list[FleetNode]]:
    tmp_path = short_tmp
    tags = [["web"], ["web"], ["db"], ["web"], ["db"]]
    with namespace_hosts(5) as hosts:
        nodes = [
            FleetNode(h, tmp_path, fleet_dir, hosts[0].address, t)
            for h, t in zip(hosts, tags, strict=True)
        ]
        try:
            for node in nodes:
                node.start()
            _wait(lambda: _alive(nodes[0]) == 5, 30, "5 alive members")
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def _alive(node: FleetNode) -> int:
    out = node.run("fleet", "members", "--status", "alive")
    return len(out.stdout.splitlines()) - 1 if out.returncode == 0 else 0


def _motd(policy: PolicyDir, text: str) -> None:
    policy.resources(f'[[file]]\npath = "/etc/motd"\ncontent = "{text}\\n"\n')


def test_a_fleet_of_five(five: list[FleetNode], fleet_dir: Path, policy: PolicyDir) -> None:
    web = [five[0], five[1], five[3]]
    db = [five[2], five[4]]

    # A push from any node (a db node here) reaches every web node, no db node.
    _motd(policy, "one")
    out = five[2].run("fleet", "push", str(policy), "--fleet", str(fleet_dir), "--to", "web")
    assert out.returncode == 0, out.stderr
    _wait(lambda: all(n.motd() == "one\n" for n in web), 20, "revision 1 on every web node")
    time.sleep(1)
    assert all(n.motd() is None for n in db)

    # A node cut off during a push converges after its link returns.
    five[3].host.cut()
    _motd(policy, "two")
    out = five[1].run("fleet", "push", str(policy), "--fleet", str(fleet_dir), "--to", "web")
    assert out.returncode == 0, out.stderr
    _wait(lambda: five[0].motd() == "two\n" and five[1].motd() == "two\n", 20, "revision 2")
    time.sleep(2)
    assert five[3].motd() == "one\n"
    five[3].host.mend()
    _wait(lambda: five[3].motd() == "two\n", 45, "revision 2 on the node whose link came back")

    # The pusher killed right after pushing does not stop the rollout.
    _motd(policy, "three")
    out = five[4].run("fleet", "push", str(policy), "--fleet", str(fleet_dir), "--to", "web")
    assert out.returncode == 0, out.stderr
    five[4].kill_all()
    _wait(lambda: all(n.motd() == "three\n" for n in web), 20, "revision 3 after the pusher died")

    # fleet status answered by the nodes; the dead one is named.
    def status_names_the_dead() -> bool:
        out = five[0].run("fleet", "status", "--timeout", "2")
        return "failed: Serf cannot reach it" in out.stdout and five[4].host.name in out.stdout

    _wait(status_names_the_dead, 30, "fleet status naming the dead node")
    answered: dict[str, dict[str, object]] = {}

    def four_answer() -> bool:  # a loaded machine may miss one query's deadline
        out = five[0].run("fleet", "status", "--timeout", "3", "--json")
        rows = [json.loads(line) for line in out.stdout.splitlines()]
        answered.clear()
        answered.update({r["node"]: r for r in rows if "answered" not in r})
        return len(answered) == 4

    _wait(four_answer, 30, "four live nodes answering fleet status")
    assert {answered[n.host.name]["revision"] for n in web} == {3}
    assert answered[five[2].host.name]["revision"] is None

    # Serf killed on every node: the plain source still delivers.
    _motd(policy, "four")
    out = five[0].run(
        "fleet", "push", str(policy), "--fleet", str(fleet_dir), "--to", "web", "--no-announce"
    )
    assert out.returncode == 0, out.stderr
    for node in web:
        pid = node.serf_pid()
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
    _wait(lambda: all(n.motd() == "four\n" for n in web), 30, "revision 4 from the plain source")
    log = web[0].run("log", "--root", str(web[0].root), "--resource", "fleet:revision")
    assert "applied revision 4" in log.stdout
    # Every fetch and compile was forked by the agent's zygote, none exec'd.
    snapshot = json.loads(web[0].run("status", "--json", "--root", str(web[0].root)).stdout)
    forks = snapshot["forks"]
    assert forks["forked_jobs"] >= 8 and forks["exec_fallbacks"] == 0, forks


@pytest.fixture
def three(short_tmp: Path, fleet_dir: Path) -> Iterator[list[FleetNode]]:
    with namespace_hosts(3, net=2) as hosts:
        nodes = [FleetNode(h, short_tmp, fleet_dir, hosts[0].address, ["web"]) for h in hosts]
        try:
            for node in nodes:
                node.start()
            _wait(lambda: _alive(nodes[0]) == 3, 30, "3 alive members")
            yield nodes
        finally:
            for node in nodes:
                node.stop()


def test_signed_actions_on_real_agents(
    three: list[FleetNode], fleet_dir: Path, policy: PolicyDir
) -> None:
    for text in ("one", "two"):
        _motd(policy, text)
        assert three[0].run("fleet", "push", str(policy), "--fleet", str(fleet_dir)).returncode == 0
        _wait(lambda t=text: all(n.motd() == f"{t}\n" for n in three), 20, f"revision {text}")

    # converge: drift on one node, repaired by a signed action from another.
    (three[2].root / "etc/motd").write_text("drifted\n")
    _wait(lambda: three[2].motd() == "two\n", 10, "the agent's own repair")  # inotify, first
    out = three[1].run("fleet", "run", "converge", "--fleet", str(fleet_dir))
    assert out.returncode == 0, out.stderr

    def journalled(node: FleetNode, text: str) -> bool:
        log = node.run("log", "--root", str(node.root), "--resource", "fleet:revision", "-n", "20")
        return text in log.stdout

    _wait(lambda: all(journalled(n, "converge (#") for n in three), 15, "converge journalled")

    # rollback: every node returns to the previous revision, and stays there.
    out = three[0].run("fleet", "run", "rollback", "--fleet", str(fleet_dir))
    assert out.returncode == 0, out.stderr
    _wait(lambda: all(n.motd() == "one\n" for n in three), 20, "rolled back to revision 1")
    assert all(journalled(n, "rolled back to revision 1") for n in three)

    # A replay of an old action is refused (and journalled), nothing runs.
    from undistro.fleet._actions import sign_action
    from undistro.fleet._publish import load_operator

    signer, _ = load_operator(str(fleet_dir), "admin")
    stale = sign_action(signer, "converge", sequence=1)  # below every floor
    raw = three[0].host.argv(
        sys.executable, "-c",
        "import asyncio,sys; from undistro.fleet import SerfClient\n"
        "async def m():\n"
        " async with await SerfClient.connect('127.0.0.1:7373') as c:\n"
        "  await c.user_event('undistro-action', bytes.fromhex(sys.argv[1]))\n"
        "asyncio.run(m())", stale.hex(),
    )  # fmt: skip
    assert subprocess.run(raw, capture_output=True).returncode == 0
    _wait(lambda: all(journalled(n, "replayed") for n in three), 15, "replay refused")


def test_nodes_find_each_other_by_mdns_inside_their_namespaces(
    short_tmp: Path, fleet_dir: Path, policy: PolicyDir
) -> None:
    """`discover` (Serf's mDNS) with no seeds at all — only ever on the test
    hosts' own bridge, never on the host's real interface."""
    with namespace_hosts(3, net=3) as hosts:
        nodes = [FleetNode(h, short_tmp, fleet_dir, None, ["web"]) for h in hosts]
        try:
            for node in nodes:
                node.start()
            _wait(lambda: _alive(nodes[0]) == 3, 60, "3 members found by mDNS")
            _motd(policy, "found")
            out = nodes[2].run("fleet", "push", str(policy), "--fleet", str(fleet_dir))
            assert out.returncode == 0, out.stderr
            _wait(lambda: all(n.motd() == "found\n" for n in nodes), 20, "the revision everywhere")
        finally:
            for node in nodes:
                node.stop()
