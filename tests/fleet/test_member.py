"""FleetMember: Serf run by the builtin supervisor, announcements applied,
status queries answered, a killed Serf restarted and resubscribed."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import PolicyDir, RunCli
from tests.fleet.serf_agents import free_port
from undistro.fleet._config import fleet_config
from undistro.fleet._member import SERVICE, FleetMember
from undistro.fleet._receive import Revision, install_root
from undistro.supervisor._builtin import BuiltinBackend


class Node:
    def __init__(self, name: str, tmp: Path, fleet: Path, join: list[str], tags: list[str]) -> None:
        self.name = name
        self.state = tmp / name / "state"
        self.state.mkdir(parents=True)
        install_root(str(self.state), (fleet / "repo/metadata/1.root.json").read_bytes())
        self.bind = f"127.0.0.1:{free_port()}"
        self.rpc = f"127.0.0.1:{free_port()}"
        self.config = fleet_config(
            {
                "bind": self.bind,
                "rpc": self.rpc,
                "retry_join": join,
                "profile": "local",
                "sources": [str(fleet / "repo")],
                "tags": {"role": "web"},
            },
            hostname=name,
            where="node.toml",
        )
        self.tags = tags
        self.applied: list[int] = []
        self.actions: list[str] = []
        self.journal: list[tuple[str, str, str | None]] = []
        self.got = asyncio.Event()
        self.member: FleetMember | None = None
        self.backend: BuiltinBackend | None = None

    async def start(self) -> None:
        assert self.config is not None
        self.backend = BuiltinBackend(self.state / "services", subreaper=False)

        async def apply(revision: Revision) -> bool:
            assert (Path(revision.policy_dir) / "undistro.toml").is_file()
            self.applied.append(revision.number)
            self.got.set()
            return True

        async def run_action(action: Any) -> str:
            self.actions.append(action.describe())
            self.got.set()
            return "done"

        def summary() -> dict[str, Any]:
            return {"revision": self.applied[-1] if self.applied else None, "kept": 3, "failed": 0}

        self.member = FleetMember(
            self.config,
            str(self.state),
            self.backend,
            node_tags=self.tags,
            apply_revision=apply,
            run_action=run_action,
            summary=summary,
            journal=lambda *entry: self.journal.append(entry),
            log=lambda line: None,
        )
        await self.member.start()

    async def stop(self) -> None:
        if self.member is not None:
            await self.member.close()
        if self.backend is not None:
            await self.backend.close()


async def _until(predicate: Any, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def _joined(rpc: str, count: int) -> None:
    from undistro.fleet import SerfClient

    async with await SerfClient.connect(rpc) as client:
        deadline = time.monotonic() + 40  # a rejoin after kill -9 waits on failure detection
        while len([m for m in await client.members() if m.status == "alive"]) < count:
            assert time.monotonic() < deadline, "the fleet never formed"
            await asyncio.sleep(0.1)


@pytest.fixture
def fleet(tmp_path: Path, cli: RunCli) -> Path:
    import shutil

    if shutil.which("serf") is None:
        pytest.skip("serf is not installed (Debian serf; .ci/apt/fleet.txt)")
    assert cli("fleet", "init", tmp_path / "fleet")[0] == 0
    return tmp_path / "fleet"


def test_members_apply_announced_revisions_and_answer_status(
    tmp_path: Path, fleet: Path, cli: RunCli, policy: PolicyDir
) -> None:
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "one\\n"\n')

    async def go() -> None:
        a = Node("a", tmp_path, fleet, [], ["web"])
        b = Node("b", tmp_path, fleet, [], ["db"])
        b.config = fleet_config(
            {"bind": b.bind, "rpc": b.rpc, "retry_join": [a.bind], "profile": "local",
             "sources": [str(fleet / "repo")]},
            hostname="b", where="node.toml",
        )  # fmt: skip
        try:
            await a.start()
            await b.start()
            assert a.member is not None and b.member is not None
            await _until(lambda: a.member.stats()["connected"] and b.member.stats()["connected"])
            await _joined(b.rpc, 2)
            code, out, err = await asyncio.to_thread(
                cli, "fleet", "push", policy, "--fleet", fleet, "--rpc", a.rpc, "--to", "web"
            )
            assert (code, err) == (0, ""), err
            await asyncio.wait_for(a.got.wait(), 10)
            assert a.applied == [1]
            assert ("repaired", "applied revision 1", None) in a.journal
            await asyncio.sleep(0.5)
            assert b.applied == []  # not tagged web: verified, not applied

            code, out, err = await asyncio.to_thread(
                cli, "fleet", "status", "--rpc", b.rpc, "--timeout", "2"
            )
            assert (code, err) == (0, ""), (out, err)
            rows = {line.split()[0]: line.split() for line in out.splitlines()[1:-1]}
            assert rows["a"][1:5] == ["1", "3", "-", "0"]  # revision, kept, repaired, failed
            assert out.splitlines()[-1] == "2 answered, 0 silent, 0 failed"
            assert rows["b"][1] == "None"

            # kill -9 Serf: the builtin supervisor restarts it, the member
            # subscribes again, and the next announcement arrives.
            assert a.backend is not None
            pid = a.backend.status(SERVICE).pid  # type: ignore[union-attr]
            assert pid is not None
            sessions = a.member.stats()["serf_sessions"]
            os.kill(pid, signal.SIGKILL)
            await _until(lambda: a.member.stats()["serf_sessions"] > sessions)
            await _until(lambda: a.member.stats()["connected"])
            await _joined(a.rpc, 2)  # the new Serf process is back in the fleet
            a.got.clear()
            policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "two\\n"\n')
            code, _, err = await asyncio.to_thread(
                cli, "fleet", "push", policy, "--fleet", fleet, "--rpc", b.rpc, "--to", "web"
            )
            assert code == 0, err
            await asyncio.wait_for(a.got.wait(), 15)
            assert a.applied == [1, 2]
        finally:
            await b.stop()
            await a.stop()

    asyncio.run(go())


def test_a_member_catches_up_from_sources_when_serf_starts(
    tmp_path: Path, fleet: Path, cli: RunCli, policy: PolicyDir
) -> None:
    """Announcements gossiped while a node was down are not replayed by
    Serf: the member pulls from its sources when Serf (re)starts."""
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "missed\\n"\n')
    assert cli("fleet", "push", policy, "--fleet", fleet, "--no-announce")[0] == 0

    async def go() -> None:
        a = Node("a", tmp_path, fleet, [], [])
        try:
            await a.start()
            await asyncio.wait_for(a.got.wait(), 10)
            assert a.applied == [1]
        finally:
            await a.stop()

    asyncio.run(go())


def test_a_forged_announcement_is_refused_and_journalled(
    tmp_path: Path, fleet: Path, cli: RunCli, policy: PolicyDir
) -> None:
    from undistro.fleet import SerfClient

    other = tmp_path / "other"
    assert cli("fleet", "init", other)[0] == 0
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "x\\n"\n')
    assert cli("fleet", "push", policy, "--fleet", other, "--no-announce")[0] == 0
    forged = (other / "repo/metadata/timestamp.json").read_bytes()

    async def go() -> None:
        a = Node("a", tmp_path, fleet, [], [])
        try:
            await a.start()
            assert a.member is not None
            await _until(lambda: a.member.stats()["connected"])
            async with await SerfClient.connect(a.rpc) as c:
                await c.user_event("undistro-revision", forged)
            await _until(lambda: a.member.stats()["refused"] == 1)
            assert a.applied == []
            assert a.journal[-1][0] == "refused" and "announcement" in a.journal[-1][2]  # type: ignore[operator]
        finally:
            await a.stop()

    asyncio.run(go())


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"rpc": "127.0.0.1:1"}, "field 'bind': required"),
        ({"bind": "example.org:7946"}, "field 'bind': expected IP:PORT"),
        ({"bind": "127.0.0.1:7946", "rpc": "10.0.0.1:7373"}, "field 'rpc': must be a loopback"),
        ({"bind": "127.0.0.1:7946", "tags": {"revision": "3"}}, "'revision' is set by undistro"),
        ({"bind": "127.0.0.1:7946", "retry_join": "x"}, "field 'retry_join': must be a list"),
        ({"bind": "127.0.0.1:7946", "colour": "blue"}, "field 'colour': unknown"),
        ({"bind": "127.0.0.1:7946", "profile": "fast"}, "field 'profile': must be one of"),
    ],
)
def test_fleet_config_errors_name_the_field(table: dict[str, Any], message: str) -> None:
    from undistro.errors import PolicyError

    with pytest.raises(PolicyError, match=message):
        fleet_config(table, hostname="h", where="node.toml")


def test_a_signed_action_is_run_once_and_its_replay_refused(
    tmp_path: Path, fleet: Path, cli: RunCli
) -> None:
    from undistro.fleet import SerfClient

    async def go() -> None:
        a = Node("a", tmp_path, fleet, [], ["web"])
        try:
            await a.start()
            assert a.member is not None
            await _until(lambda: a.member.stats()["connected"])
            async with await SerfClient.connect(a.rpc) as c:
                events = c.stream("user:undistro-action")
                first = asyncio.ensure_future(events.__anext__())
                await asyncio.sleep(0.2)
                code, _, err = await asyncio.to_thread(
                    cli, "fleet", "run", "restart", "nginx", "--to", "web",
                    "--fleet", fleet, "--rpc", a.rpc,
                )  # fmt: skip
                assert (code, err) == (0, ""), err
                sent = (await asyncio.wait_for(first, 5)).payload
                await asyncio.wait_for(a.got.wait(), 5)
                assert len(a.actions) == 1 and a.actions[0].startswith("restart nginx (#")
                await c.user_event("undistro-action", sent)  # a replay
                await _until(lambda: a.member.stats()["actions_refused"] == 1)
                await events.aclose()
            assert len(a.actions) == 1
            assert a.journal[-1][0] == "refused" and "replayed" in str(a.journal[-1][2])
        finally:
            await a.stop()

    asyncio.run(go())


def test_a_fleet_with_no_gossip_runs_from_plain_sources(
    tmp_path: Path, fleet: Path, cli: RunCli, policy: PolicyDir
) -> None:
    from dataclasses import replace

    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "one\\n"\n')
    assert cli("fleet", "push", policy, "--fleet", fleet, "--no-announce")[0] == 0

    async def go() -> None:
        a = Node("a", tmp_path, fleet, [], [])
        config = fleet_config({"sources": [str(fleet / "repo")]}, hostname="a", where="node.toml")
        assert config is not None and config.bind is None and config.check_sources_after == 300
        a.config = replace(config, check_sources_after=0.3)  # seconds, for the test
        try:
            await a.start()
            await asyncio.wait_for(a.got.wait(), 10)
            assert a.applied == [1]
            a.got.clear()
            policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "two\\n"\n')
            await asyncio.to_thread(cli, "fleet", "push", policy, "--fleet", fleet, "--no-announce")
            await asyncio.wait_for(a.got.wait(), 10)  # found by the quiet check
            assert a.applied == [1, 2]
            assert a.member is not None and a.member.stats()["quiet_checks"] >= 1
        finally:
            await a.stop()

    asyncio.run(go())
