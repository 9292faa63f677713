"""The Serf RPC client against real Serf agents on loopback."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.conftest import RunCli
from tests.fleet.serf_agents import free_port, serf_fleet
from undistro.fleet import Event, SerfClient, SerfError


async def _until_members(client: SerfClient, count: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        alive = [m for m in await client.members() if m.status == "alive"]
        if len(alive) >= count:
            return
        await asyncio.sleep(0.1)  # the test waits for gossip; the client never polls
    raise AssertionError(f"fewer than {count} alive members after {timeout} s")


def test_members_and_tag_filter(tmp_path: Path) -> None:
    tags = [{"role": "web", "env": "prod"}, {"role": "db", "env": "prod"}, {"role": "web"}]
    with serf_fleet(tmp_path, tags) as agents:

        async def go() -> None:
            async with await SerfClient.connect(agents[1].rpc) as client:
                await _until_members(client, 3)
                members = {m.name: m for m in await client.members()}
                assert set(members) == {"n0", "n1", "n2"}
                assert members["n0"].tags == {"role": "web", "env": "prod"}
                assert f"{members['n2'].addr}:{members['n2'].port}" == agents[2].bind
                web = await client.members({"role": "web"})
                assert sorted(m.name for m in web) == ["n0", "n2"]
                assert [m.name for m in await client.members({"role": "w.*", "env": "prod"})] == [
                    "n0"
                ]

        asyncio.run(go())


def test_user_event_reaches_every_other_node_intact(tmp_path: Path) -> None:
    payload = bytes(range(256)) + b"\x00" * 150  # binary, near Serf's 482-byte limit
    with serf_fleet(tmp_path, [{}, {}, {}]) as agents:

        async def go() -> None:
            clients = [await SerfClient.connect(a.rpc) for a in agents]
            try:
                await _until_members(clients[0], 3)
                streams = [c.stream("user:revision") for c in clients[1:]]

                async def first(stream: object) -> Event:
                    return await stream.__anext__()  # type: ignore[attr-defined, no-any-return]

                waiting = [asyncio.ensure_future(first(s)) for s in streams]
                await asyncio.sleep(0.3)  # subscriptions are taken before the send
                await clients[0].user_event("revision", payload)
                got = await asyncio.wait_for(asyncio.gather(*waiting), 10)
                assert all(e.kind == "user" and e.name == "revision" for e in got)
                assert all(e.payload == payload for e in got)
                for s in streams:
                    await s.aclose()  # type: ignore[attr-defined]
                assert clients[1].stats()["subscriptions"] == 0
            finally:
                for c in clients:
                    await c.close()

        asyncio.run(go())


def test_query_is_answered_by_the_nodes_themselves(tmp_path: Path) -> None:
    with serf_fleet(tmp_path, [{}, {"role": "web"}, {"role": "web"}]) as agents:

        async def answer(rpc: str, ready: asyncio.Event) -> None:
            async with await SerfClient.connect(rpc) as client:
                events = client.stream("query:status")
                ready.set()
                async for event in events:
                    assert event.query_id is not None
                    await client.respond(event.query_id, b"ok from " + event.payload)
                    return

        async def go() -> None:
            async with await SerfClient.connect(agents[0].rpc) as asker:
                await _until_members(asker, 3)
                readies = [asyncio.Event(), asyncio.Event()]
                answerers = [
                    asyncio.ensure_future(answer(a.rpc, r))
                    for a, r in zip(agents[1:], readies, strict=True)
                ]
                await asyncio.wait_for(asyncio.gather(*(r.wait() for r in readies)), 5)
                await asyncio.sleep(0.3)
                answers = {}
                async for reply in asker.query("status", b"n0", timeout=5.0, tags={"role": "web"}):
                    answers[reply.node] = reply.payload
                    if len(answers) == 2:
                        break
                assert answers == {"n1": b"ok from n0", "n2": b"ok from n0"}
                await asyncio.wait_for(asyncio.gather(*answerers), 5)

        asyncio.run(go())


def test_a_dead_serf_ends_streams_and_calls_with_an_error(tmp_path: Path) -> None:
    with serf_fleet(tmp_path, [{}]) as agents:

        async def go() -> None:
            client = await SerfClient.connect(agents[0].rpc)
            stream = client.stream("*")
            reading = asyncio.ensure_future(stream.__anext__())
            await asyncio.sleep(0.3)
            agents[0].kill()
            with pytest.raises(SerfError, match="closed the connection"):
                await asyncio.wait_for(reading, 5)
            with pytest.raises(SerfError):
                await client.members()
            await client.close()

        asyncio.run(go())


def test_connect_to_nothing_is_one_clear_error() -> None:
    port = free_port()

    async def go() -> None:
        with pytest.raises(SerfError, match=f"127.0.0.1:{port}: cannot connect"):
            await SerfClient.connect(f"127.0.0.1:{port}", timeout=2)

    asyncio.run(go())


def test_cli_fleet_members(tmp_path: Path, cli: RunCli) -> None:
    with serf_fleet(tmp_path, [{"role": "web"}, {"role": "db"}]) as agents:

        async def wait() -> None:
            async with await SerfClient.connect(agents[0].rpc) as c:
                await _until_members(c, 2)

        asyncio.run(wait())
        code, out, err = cli("fleet", "members", "--rpc", agents[0].rpc)
        assert (code, err) == (0, "")
        lines = out.splitlines()
        assert lines[0].split() == ["NAME", "ADDRESS", "STATUS", "TAGS"]
        assert lines[1].split() == ["n0", agents[0].bind, "alive", "role=web"]
        assert lines[2].split() == ["n1", agents[1].bind, "alive", "role=db"]
        code, out, err = cli(
            "fleet", "members", "--rpc", agents[0].rpc, "--tag", "role=db", "--json"
        )
        assert code == 0 and out.count("\n") == 1 and '"name": "n1"' in out


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--tag", "role"], 2, "undistro: --tag 'role': expected KEY=REGEX"),
        (["--rpc", "nowhere"], 2, "undistro: Serf RPC address 'nowhere': expected HOST:PORT"),
        (["--rpc", "127.0.0.1:99999"], 2, "expected HOST:PORT"),
    ],
)
def test_cli_fleet_members_bad_arguments(
    cli: RunCli, args: list[str], code: int, message: str
) -> None:
    got, out, err = cli("fleet", "members", *args)
    assert got == code and out == ""
    assert len(err.splitlines()) == 1 and message in err


def test_cli_fleet_members_without_serf(cli: RunCli) -> None:
    port = free_port()
    code, out, err = cli("fleet", "members", "--rpc", f"127.0.0.1:{port}")
    assert code == 1 and out == ""
    assert (
        err.startswith(f"undistro: serf RPC 127.0.0.1:{port}: cannot connect")
        and err.count("\n") == 1
    )


def test_restarted_serf_rejoins(tmp_path: Path) -> None:
    with serf_fleet(tmp_path, [{}, {}]) as agents:
        agents[1].kill()
        agents[1].start(join=[agents[0].bind])  # the same name and ports come back

        async def go() -> None:
            async with await SerfClient.connect(agents[1].rpc) as c:
                await _until_members(c, 2)

        asyncio.run(go())


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (b"", "closed the connection"),
        (b"\xc1", "serf RPC:"),  # 0xc1 is never valid msgpack
        (b"\x93\x01\x02\x03", "a record arrived with no header"),  # a list, not a header
    ],
)
def test_something_that_is_not_serf_is_refused(reply: bytes, message: str) -> None:
    async def go() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(100)
            writer.write(reply)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            with pytest.raises(SerfError, match=message):
                await SerfClient.connect(f"127.0.0.1:{port}", timeout=3)
        finally:
            server.close()
            await server.wait_closed()

    asyncio.run(go())
