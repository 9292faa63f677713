"""A push announced through real Serf gossip, verified and pulled by a node."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.conftest import PolicyDir, RunCli
from tests.fleet.serf_agents import serf_fleet
from undistro.commands.fleet import ANNOUNCE_EVENT
from undistro.fleet import SerfClient
from undistro.fleet._receive import check_announcement, pull


def test_push_announces_and_the_node_pulls_past_a_frozen_source(
    tmp_path: Path, cli: RunCli, policy: PolicyDir
) -> None:
    fleet, node = tmp_path / "fleet", tmp_path / "node"
    node.mkdir()
    assert cli("fleet", "init", fleet)[0] == 0
    assert cli("fleet", "trust", fleet / "repo/metadata/1.root.json", "--root", node)[0] == 0
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "gossiped\\n"\n')
    state = str(node / "var/lib/undistro")
    # The node's source is a mirror that will never see the new timestamp.
    mirror = tmp_path / "mirror"
    stale = (fleet / "repo/metadata/timestamp.json").read_bytes()

    with serf_fleet(tmp_path, [{}, {}]) as agents:

        async def go() -> bytes:
            async with await SerfClient.connect(agents[1].rpc) as listener:
                for _ in range(150):
                    if len(await listener.members()) == 2:
                        break
                    await asyncio.sleep(0.1)
                events = listener.stream(f"user:{ANNOUNCE_EVENT}")
                first = asyncio.ensure_future(events.__anext__())
                await asyncio.sleep(0.3)
                code, out, err = await asyncio.to_thread(
                    cli, "fleet", "push", policy, "--fleet", fleet, "--rpc", agents[0].rpc
                )
                assert (code, err) == (0, ""), err
                assert "announced" in out
                event = await asyncio.wait_for(first, 10)
                await events.aclose()
                return event.payload

        payload = asyncio.run(go())

    import shutil

    shutil.copytree(fleet / "repo", mirror)
    (mirror / "metadata/timestamp.json").write_bytes(stale)
    assert check_announcement(state, payload) == 2
    revision = pull(state, [str(mirror)], announcement=payload)
    assert revision is not None and revision.number == 1
    assert "gossiped" in (Path(revision.policy_dir) / "policy/main.toml").read_text()


def test_push_says_when_it_could_not_announce(
    tmp_path: Path, cli: RunCli, policy: PolicyDir
) -> None:
    from tests.fleet.serf_agents import free_port

    assert cli("fleet", "init", tmp_path / "fleet")[0] == 0
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "x\\n"\n')
    port = free_port()
    code, out, err = cli(
        "fleet", "push", policy, "--fleet", tmp_path / "fleet", "--rpc", f"127.0.0.1:{port}"
    )
    assert code == 1 and out.startswith("revision 1:")
    assert (
        err.startswith("undistro: pushed revision 1 but did not announce it")
        and err.count("\n") == 1
    )
