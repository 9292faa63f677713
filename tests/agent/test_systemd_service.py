"""``[[service]]`` with ``backend = "systemd"``, driven by a real agent (and a
one-shot ``apply``) against a real systemd booted as PID 1 of a container.

Each test boots its own container (``tests/supervisor/_nspawn.py``) with its
temp dir bound in at the same path, and the test root's
``etc/systemd/system`` bound onto the container's, so that what undistro
writes under ``--root`` is what that systemd reads, and the paths in the
unit (command, working directory, ``UNDISTRO_ROOT``) mean the same inside.
The agent on the host reaches the container's bus through
``UNDISTRO_SYSTEMD_BUS``. The container is powered off at the end, which
ends every service in it; the agent is killed by pid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.agent.conftest import AgentProc, run_cli, wait_until
from tests.supervisor._nspawn import Container, boot, poweroff, why_not

PYTHON = "/usr/bin/python3"  # the host's /usr is the container's; the venv is not in it

SCRIPT = r"""
import os, signal, socket, sys
conf, log, crash = sys.argv[1:4]
def record(what):
    with open(conf) as f:
        text = f.read().strip()
    with open(log, "a") as f:
        f.write(f"{what} {os.getpid()} {text} cwd={os.getcwd()} root={os.environ.get('UNDISTRO_ROOT')}\n")
if os.path.exists(crash):
    sys.exit(3)
record("started")
signal.signal(signal.SIGHUP, lambda *_: record("reloaded"))
addr = os.environ["NOTIFY_SOCKET"]
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.connect("\0" + addr[1:] if addr.startswith("@") else addr)
s.send(b"READY=1")
s.close()
while True:
    signal.pause()
"""


@dataclass
class World:
    tmp: Path
    box: Container
    agent: AgentProc

    @property
    def events(self) -> Path:
        return self.tmp / "events.log"

    def lines(self, what: str) -> list[list[str]]:
        if not self.events.exists():
            return []
        return [ln.split() for ln in self.events.read_text().splitlines() if ln.startswith(what)]

    def policy(self, port: int) -> None:
        conf = self.agent.path("/etc/app.conf")
        argv = [
            PYTHON,
            str(self.tmp / "svc.py"),
            str(conf),
            str(self.events),
            str(self.tmp / "crash"),
        ]
        text = (
            f'[[file]]\npath = "/etc/app.conf"\ncontent = "port={port}\\n"\nmode = "0644"\n'
            'notify = ["service:app"]\n\n'
            '[[service]]\nname = "app"\nbackend = "systemd"\n'
            f"command = {json.dumps(argv)}\n"
            'readiness = "notify"\non_notify = "reload"\n'
            "restart_delay = 0.2\ncrash_loop_limit = 3\n"
            'requires = ["file:/etc/app.conf"]\n'
        )
        target = self.agent.policy / "policy" / "main.toml"
        target.with_suffix(".tmp").write_text(text)
        os.rename(target.with_suffix(".tmp"), target)

    def services(self) -> dict[str, Any]:
        result = run_cli("services", "--root", str(self.agent.root), "--json")
        assert result.returncode == 0, result.stderr
        return dict(json.loads(result.stdout))

    def unit_pids(self) -> list[int]:
        """Host pids in the unit's cgroup."""
        path = f"{self.box.root}/sys/fs/cgroup/system.slice/undistro-app.service/cgroup.procs"
        try:
            with open(path) as f:
                return [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return []


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    tmp = Path(tempfile.mkdtemp(prefix="usd-", dir="/tmp"))
    try:
        root = tmp / "root"
        units = root / "etc" / "systemd" / "system"
        units.mkdir(parents=True)
        (tmp / "svc.py").write_text(SCRIPT)
        policy = tmp / "policy"
        (policy / "policy").mkdir(parents=True)
        (policy / "undistro.toml").write_text('name = "systemd-service"\n')
        log = tmp / "console.log"
        try:
            box = boot(
                f"undistro-svc-{os.getpid()}",
                str(log),
                binds=((str(tmp), str(tmp)), (str(units), "/etc/systemd/system")),
            )
        except RuntimeError as e:
            pytest.skip(f"machine limit: systemd-nspawn cannot boot here: {e}")
        monkeypatch.setenv("UNDISTRO_SYSTEMD_BUS", box.bus)
        agent = AgentProc(policy, root, tmp / "agent.log")
        try:
            yield World(tmp, box, agent)
        finally:
            agent.kill()
            poweroff(box.nspawn)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_agent_drives_a_systemd_service_reloads_it_and_sees_a_crash_loop(world: World) -> None:
    world.policy(8080)
    world.agent.start()
    wait_until(lambda: world.lines("started"), 20, "started under systemd")
    ((_, pid, conf, cwd, root),) = world.lines("started")
    assert conf == "port=8080"
    assert (cwd, root) == (f"cwd={world.agent.root}", f"root={world.agent.root}")
    row = world.services()["services"]["app"]
    assert (row["backend"], row["phase"], row["ready"], str(row["pid"])) == (
        "systemd",
        "running",
        True,
        pid,
    )
    unit = world.agent.root / "etc/systemd/system/undistro-app.service"
    assert "Type=notify" in unit.read_text()

    # A config change notifies a reload: same main pid, the new content read.
    world.policy(9090)
    wait_until(lambda: world.lines("reloaded"), 20, "reloaded")
    ((_, again, conf, *_),) = world.lines("reloaded")
    assert (again, conf) == (pid, "port=9090")
    assert len(world.lines("started")) == 1, "restarted instead of reloaded"
    assert world.services()["services"]["app"]["pid"] == int(pid)
    journal = run_cli("log", "--root", str(world.agent.root), "--resource", "service:app")
    assert "reload" in journal.stdout, journal.stdout

    # A crash that keeps crashing: systemd restarts it, hits the start limit,
    # and the agent sees the unit failed.
    (world.tmp / "crash").touch()
    (host_pid,) = world.unit_pids()
    os.kill(host_pid, signal.SIGKILL)

    def failed() -> bool:
        promise = world.agent.status()["resources"].get("service:app", {})
        return promise.get("state") == "failed"

    wait_until(failed, 30, "the promise failed")
    assert world.services()["services"]["app"]["phase"] == "failed"
    journal = run_cli("log", "--root", str(world.agent.root), "--resource", "service:app")
    assert "failed" in journal.stdout, journal.stdout


def test_oneshot_apply_starts_then_keeps_a_systemd_service(world: World) -> None:
    world.policy(8080)
    first = run_cli("apply", str(world.agent.policy), "--root", str(world.agent.root))
    assert first.returncode == 0, first.stdout + first.stderr
    assert "service:app: repaired" in first.stdout, first.stdout
    ((_, pid, *_),) = world.lines("started")
    again = run_cli("apply", str(world.agent.policy), "--root", str(world.agent.root))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "0 repaired" in again.stdout, again.stdout  # kept: attached, not restarted
    assert len(world.lines("started")) == 1
    row = world.services()["services"]["app"]
    assert row["backend"] == "systemd" and row["phase"] == "unknown"  # no agent: no bus read
    assert str(pid)


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("garbage", "not a D-Bus address: 'garbage'"),
        ("tcp:host=localhost,port=1", "cannot use D-Bus address 'tcp:host=localhost,port=1'"),
        ("unix:path=/nonexistent/bus", "cannot connect to D-Bus at unix:path=/nonexistent/bus"),
    ],
)
def test_a_bad_systemd_bus_is_one_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, address: str, says: str
) -> None:
    policy, root = tmp_path / "policy", tmp_path / "root"
    root.mkdir()
    (policy / "policy").mkdir(parents=True)
    (policy / "undistro.toml").write_text('name = "bad-bus"\n')
    (policy / "policy" / "main.toml").write_text(
        '[[service]]\nname = "app"\nbackend = "systemd"\ncommand = ["sleep", "1000"]\n'
    )
    monkeypatch.setenv("UNDISTRO_SYSTEMD_BUS", address)
    result = run_cli("apply", str(policy), "--root", str(root))
    assert result.returncode == 1, result.stdout + result.stderr
    assert says in result.stdout and "Traceback" not in result.stdout + result.stderr
    assert not (root / "etc").exists()  # no unit written for a bus that is not there
