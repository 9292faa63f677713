"""The fleet page's parts on loopback: cards through a real Serf, the view,
the event stream over a real HTTP face, and what a hostile peer can do."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import re
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from tests.fleet.serf_agents import serf_fleet
from undistro.content._http import HttpFace, start_http_face
from undistro.content._page import add_fleet_page
from undistro.content._page_html import SCRIPT, page
from undistro.content._page_state import (
    EVENT_LIMIT,
    MAX_STREAMS,
    STATE_EVENT,
    Announcer,
    FleetView,
    PageFeed,
    encode_card,
    parse_card,
)
from undistro.fleet import SerfClient


def aio(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a loop of its own (fixtures pass through)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


HUGE = {
    "revision": 12,
    "kept": 10_000,
    "repaired": 3,
    "failed": 2,
    "last_error": "x" * 5000,
    "policy": "p" * 300,
    "generation": 7,
    "failing": [[f"file:/etc/{'a' * 100}{i}", "é" * 400] for i in range(10)],
    "services": {f"svc{i}": "running" for i in range(200)},
    "repairs": [[f"file:/r{i}", 1.5e9 + i] for i in range(50)],
}


def test_a_card_fits_serfs_event_limit_whatever_the_summary() -> None:
    for node in ("n1", "é" * 300, "a" * 128):
        data = encode_card(node, HUGE)
        assert len(data) <= EVENT_LIMIT
        card = parse_card(data)
        assert card is not None and card["node"] == node[:128][: len(card["node"])]
    small = parse_card(encode_card("n1", {"revision": 3, "failed": 1}))
    assert small == {"node": "n1", "revision": 3, "failed": 1}
    # The most important fields survive; what is cut goes from the end.
    card = parse_card(encode_card("n1", HUGE))
    assert card is not None
    assert (card["revision"], card["kept"], card["failed"], card["generation"]) == (
        12,
        10_000,
        2,
        7,
    )
    assert "repairs" not in card or len(card["repairs"]) < 50
    # Texts are shortened before a list loses an item: a usual card keeps
    # its failure, services and a repair.
    usual = {
        "revision": 3, "failed": 1, "last_error": "e" * 300,
        "failing": [["file:/etc/app.conf", "validate: sh exited 1, file left as it was: " + "x" * 200]],
        "services": {"web": "running", "db": "failed"},
        "repairs": [["file:/etc/a", 1.7e9], ["service:web", 1.7e9]],
    }  # fmt: skip
    card = parse_card(encode_card("node-with-a-long-name-0123456789", usual))
    assert card is not None and len(card["repairs"]) >= 1 and len(card["failing"]) == 1
    assert card["services"] == {"web": "running", "db": "failed"}
    why = card["failing"][0][1]  # head and tail: where it failed, and why
    assert why.startswith("validate: sh exited 1") and why.endswith("x" * 20)
    assert HUGE["repairs"] and len(HUGE["repairs"]) == 50  # the caller's lists are not cut


@pytest.mark.parametrize(
    "payload",
    [b"", b"not json", b"[1,2]", b'{"revision": 3}', b'{"node": 5}', b'{"node": ""}',
     b"[" * 100_000, json.dumps({"node": "x" * 129}).encode(), b"\xff\xfe"],
)  # fmt: skip
def test_what_is_not_a_card_is_refused(payload: bytes) -> None:
    view = FleetView()
    assert view.card(payload, via="event") is False
    assert view.nodes == {}


def test_a_card_keeps_only_known_fields_of_known_types() -> None:
    hostile = {
        "node": "n1", "revision": "3", "kept": True, "failed": 2**60, "repaired": 1,
        "rss_mb": float("nan"), "services": {"a": 1, "b": "running", "c": ["x"]},
        "failing": [["x", {"a": 1}], "junk", ["id", "why"], ["id"]], "__proto__": {"x": 1},
        "at": "later",
    }  # fmt: skip
    card = parse_card(json.dumps(hostile).encode())
    assert card == {
        "node": "n1",
        "repaired": 1,
        "services": {"b": "running"},
        "failing": [["id", "why"]],
    }


def test_an_older_card_does_not_replace_a_newer_one() -> None:
    view = FleetView()
    assert view.card(encode_card("n1", {"at": 20.0, "failed": 1}), via="event")
    assert view.card(encode_card("n1", {"at": 10.0, "failed": 0}), via="event")
    assert view.nodes["n1"]["card"]["failed"] == 1
    assert view.counts["stale"] == 1
    assert view.card(encode_card("n1", {"at": 30.0, "failed": 0}), via="query")
    assert view.nodes["n1"]["card"]["failed"] == 0


def test_a_view_is_bounded() -> None:
    view = FleetView(max_nodes=3)
    for i in range(10):
        view.card(encode_card(f"n{i}", {"failed": 0}), via="event")
        view.member(f"m{i}", "alive", "10.0.0.1", {})
    assert len(view.nodes) == 3


@aio
async def test_a_storm_of_changes_is_one_event_per_window() -> None:
    sent: list[bytes] = []
    state = {"failed": 0}
    announcer = Announcer("n1", lambda: state, sent.append, window=0.2, repeat=None)
    for i in range(1000):
        state["failed"] = i
        announcer.changed()
    assert len(sent) == 1  # the first change goes at once
    await asyncio.sleep(0.3)
    assert len(sent) == 2  # the rest of the burst: one event, the newest state
    assert parse_card(sent[-1])["failed"] == 999  # type: ignore[index]
    announcer.changed()
    await asyncio.sleep(0.3)
    assert len(sent) == 2  # the same state again is no news
    assert announcer.counts["unchanged"] == 1
    announcer.close()


@aio
async def test_a_card_not_sent_is_sent_with_the_next_change() -> None:
    calls: list[bytes] = []

    async def broken(card: bytes) -> None:
        calls.append(card)
        raise OSError("serf is down")

    announcer = Announcer("n1", lambda: {"failed": 1}, broken, window=0.0, repeat=None)
    announcer.changed()
    await asyncio.sleep(0.01)
    announcer.changed()
    await asyncio.sleep(0.01)
    assert len(calls) == 2 and announcer.counts["failed"] == 2


@aio
async def test_each_card_goes_once_more_unless_a_newer_one_went() -> None:
    sent: list[bytes] = []
    state = {"failed": 1}
    announcer = Announcer("n1", lambda: state, sent.append, window=0.05, repeat=0.2)
    announcer.changed()
    await asyncio.sleep(0.3)
    assert len(sent) == 2 and sent[0] == sent[1]  # the card, and its repeat
    await asyncio.sleep(0.3)
    assert len(sent) == 2  # once more, not forever
    state["failed"] = 2
    announcer.changed()
    await asyncio.sleep(0.1)
    state["failed"] = 3
    announcer.changed()  # before the repeat of failed=2: that one never goes
    await asyncio.sleep(0.5)
    assert [parse_card(c)["failed"] for c in sent[2:]] == [2, 3, 3]  # type: ignore[index]
    announcer.close()
    # The view takes a repeat as no news: no push to the pages.
    view = FleetView()
    view.card(sent[-1], via="event")
    pushes = view.counts["pushes"]
    view.card(sent[-1], via="event")
    assert view.counts["pushes"] == pushes


def test_the_page_has_no_timer_and_no_external_asset() -> None:
    document = page("n1").decode()
    assert not re.search(r"setInterval|setTimeout|requestAnimationFrame", SCRIPT)
    assert "innerHTML" not in SCRIPT and "insertAdjacentHTML" not in SCRIPT
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", document)
    assert "@import" not in document and "url(" not in document
    served = page("<script>alert(1)</script>").decode().split('id="served">')[1]
    assert served.startswith("&lt;script&gt;alert(1)&lt;/script&gt;</span>")


# -- over a real face -----------------------------------------------------------


@contextlib.asynccontextmanager
async def page_face(tmp_path: Path) -> AsyncIterator[tuple[HttpFace, FleetView]]:
    view = FleetView()
    served = await start_http_face(str(tmp_path), "127.0.0.1", 0)
    add_fleet_page(served, view, node="n0")
    try:
        yield served, view
    finally:
        await served.close()


async def _open(port: int, path: str, method: str = "GET") -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes]:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return reader, writer, head


async def _event(reader: asyncio.StreamReader) -> tuple[str, object]:
    """The next server-sent event (chunked framing stripped)."""
    text = b""
    while True:
        size = int((await asyncio.wait_for(reader.readline(), 5)).strip(), 16)
        text += await reader.readexactly(size + 2)
        blocks = [b for b in text.replace(b"\r\n", b"").split(b"\n\n") if b.startswith(b"event:")]
        if blocks:
            lines = dict(line.split(b": ", 1) for line in blocks[0].split(b"\n"))
            return lines[b"event"].decode(), json.loads(lines[b"data"])


@aio
async def test_the_stream_sends_a_snapshot_then_each_change(tmp_path: Path) -> None:
    async with page_face(tmp_path) as (served, view):
        view.member("n0", "alive", "10.0.0.1", {"http": "7948"})
        reader, writer, head = await _open(served.port, "/events")
        assert b"200 OK" in head and b"text/event-stream" in head
        kind, data = await _event(reader)
        assert kind == "snapshot"
        assert [n["name"] for n in data["nodes"]] == ["n0"]  # type: ignore[index]
        view.card(encode_card("n2", {"failed": 1, "last_error": "<script>"}), via="event")
        kind, data = await _event(reader)
        assert kind == "node" and data["card"] == {"failed": 1, "last_error": "<script>"}  # type: ignore[index]
        # Idle: nothing at all is sent (no keep-alive timer).
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(reader.read(1), 0.5)
        writer.close()
        # The face notices a client gone only by writing to it (TCP: the
        # second write after the close fails), so the next changes end it.
        for i in range(3):
            view.card(encode_card("n3", {"at": float(i)}), via="event")
            await asyncio.sleep(0.05)
        assert view.stats()["subscribers"] == 0


@aio
async def test_a_slow_reader_gets_each_node_once_with_its_newest_card(tmp_path: Path) -> None:
    async with page_face(tmp_path) as (served, view):
        reader, writer, _ = await _open(served.port, "/events")
        await _event(reader)
        for i in range(500):  # no await: the stream cannot send in between
            view.card(encode_card("n1", {"at": float(i), "failed": i}), via="event")
        kind, data = await _event(reader)
        assert kind == "node" and data["card"]["failed"] == 499  # type: ignore[index]
        writer.close()


@aio
async def test_streams_are_bounded_and_head_holds_nothing(tmp_path: Path) -> None:
    async with page_face(tmp_path) as (served, view):
        for _ in range(3):
            _, writer, head = await _open(served.port, "/events", "HEAD")
            assert b"200 OK" in head
            writer.close()
        await asyncio.sleep(0.05)
        assert view.stats()["subscribers"] == 0
        # Clients that open a stream and go, on a fleet where nothing
        # changes: the page still takes new ones, and holds a bounded number.
        for _ in range(MAX_STREAMS + 8):
            reader, writer, head = await _open(served.port, "/events")
            await _event(reader)
            writer.close()
        reader, writer, head = await _open(served.port, "/events")
        assert b"200 OK" in head
        await _event(reader)
        assert view.stats()["subscribers"] == MAX_STREAMS
        assert view.stats()["evicted"] == 9
        view.card(encode_card("n1", {"failed": 1}), via="event")
        assert (await _event(reader))[0] == "node"  # the newest stream is live
        writer.close()


@aio
async def test_the_page_and_the_json_are_served_with_a_strict_policy(tmp_path: Path) -> None:
    async with page_face(tmp_path) as (served, view):
        view.card(encode_card("<b>n1</b>", {"failed": 1}), via="event")
        reader, writer, head = await _open(served.port, "/")
        assert b"text/html" in head and b"Content-Security-Policy: default-src 'none'" in head
        writer.close()
        reader, writer, head = await _open(served.port, "/fleet.json")
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
        body = json.loads(await reader.readexactly(length))
        assert body["nodes"][0]["name"] == "<b>n1</b>" and b"application/json" in head
        writer.close()
        for bad in ("/events/x", "/fleet.json?x=<", "/%2e%2e/"):
            _, writer, head = await _open(served.port, bad)
            assert head.split()[1] in (b"400", b"404"), bad
            writer.close()


# -- with a real Serf -------------------------------------------------------------


@aio
async def test_a_full_card_goes_through_serf_and_a_page_load_asks_once(tmp_path: Path) -> None:
    with serf_fleet(tmp_path, [{}, {}]) as (a, b):
        sender = await SerfClient.connect(a.rpc)
        receiver = await SerfClient.connect(b.rpc)
        try:
            view = FleetView()
            feed = PageFeed(view, query_timeout=0.5, min_interval=60)
            events = receiver.stream(f"user:{STATE_EVENT},member-join")

            async def feed_events() -> None:
                async for event in events:
                    feed.serf_event(event)

            task = asyncio.get_running_loop().create_task(feed_events())
            feed.serf_session(receiver)  # the members, and one status query
            card = encode_card("n0", HUGE)
            assert len(card) == EVENT_LIMIT or len(card) > EVENT_LIMIT - 40
            await sender.user_event(STATE_EVENT, card)  # Serf accepts the largest card
            for _ in range(100):
                if view.record("n0") and view.record("n0").get("card"):  # type: ignore[union-attr]
                    break
                await asyncio.sleep(0.02)
            assert view.nodes["n0"]["card"]["revision"] == 12
            assert view.nodes["n0"]["status"] == "alive"  # from the member list
            for _ in range(50):
                view.subscribe().close()  # fifty page loads
            await asyncio.sleep(0.6)
            assert feed.counts["queries"] == 1  # the session's own; the loads were rate-limited
            task.cancel()
        finally:
            await sender.close()
            await receiver.close()
