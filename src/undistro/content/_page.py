"""The fleet page any node serves on its HTTP face.

Routes (all public, read-only; nothing here is a secret the fleet's
gossip does not already carry to every member):

- ``GET /``: the page (undistro.content._page_html), no external asset;
- ``GET /events``: ``text/event-stream``. First a ``snapshot`` event (every
  node this server knows), then a ``node`` event each time a node's record
  changes — pushed when Serf brings news (undistro.content._page_state),
  never on a timer: an idle stream sends nothing at all. Opening one asks
  the fleet for fresh cards (a Serf status query, rate-limited);
- ``GET /fleet.json``: the same snapshot, for curl and scripts.

A node's logs are not here: ``/logs/<service>`` on that node needs an
operator's signature, so the page shows its URL and the ``undistro fleet
logs`` command instead of a link a browser could not follow.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from undistro.content._http import DEFAULT_PORT, HttpFace, Request, Response, text
from undistro.content._page_html import CSP, page
from undistro.content._page_state import FleetView, PageFeed

if TYPE_CHECKING:
    from undistro.fleet._member import FleetMember

RETRY_MS = 1000  # how soon a browser reconnects a dropped stream

_HEADERS = [
    ("Cache-Control", "no-store"),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
]


def sse(event: str, data: Any) -> bytes:
    """One server-sent event; compact JSON never holds a raw newline."""
    body = json.dumps(data, separators=(",", ":"), ensure_ascii=True)
    return f"event: {event}\ndata: {body}\n\n".encode()


def add_fleet_page(face: HttpFace, view: FleetView, *, node: str) -> None:
    """Serve ``view`` as this node's fleet page on ``face``."""
    document = page(node)

    async def index(request: Request) -> Response:
        if request.path != "/":  # a route "/" is the face's fallback for every path
            return text(404, "not found")
        headers = [("Content-Type", "text/html; charset=utf-8"),
                   ("Content-Security-Policy", CSP), *_HEADERS]  # fmt: skip
        return Response(200, headers, document)

    async def snapshot(request: Request) -> Response:
        body = json.dumps({"node": node, "nodes": view.snapshot()}, sort_keys=True).encode()
        return Response(200, [("Content-Type", "application/json"), *_HEADERS], body + b"\n")

    async def events(request: Request) -> Response:
        headers = [("Content-Type", "text/event-stream"), *_HEADERS]
        return Response(200, headers, stream=_stream(view, node))

    face.route("/", index)
    face.route("/events", events)
    face.route("/fleet.json", snapshot)


def serve_fleet_page(face: HttpFace, member: FleetMember) -> PageFeed:
    """The page on ``face``, fed by ``member``'s Serf stream."""
    feed = PageFeed(FleetView())
    member.watch(feed)
    add_fleet_page(face, feed.view, node=member.config.name)
    return feed


async def open_face(
    member: FleetMember, state_dir: str, *, log: Callable[[str], None], port: int = DEFAULT_PORT
) -> HttpFace | None:
    """This node's face on its fleet address, serving the fleet page, its
    port advertised in the Serf tag ``http``. None (and a log line) if the
    address cannot be had: the agent runs on without a face."""
    from undistro.content._http import start_http_face

    if member.config.bind is None:
        return None
    host = member.config.bind.rpartition(":")[0].strip("[]")
    try:
        face = await start_http_face(state_dir, host, port, log=log)
    except OSError as exc:
        log(f"http face: cannot listen on {host}:{port}: {exc.strerror or exc}")
        return None
    serve_fleet_page(face, member)
    member.advertise("http", str(face.port))
    log(f"http face on {host}:{face.port}: the fleet page is at http://{host}:{face.port}/")
    return face


async def _stream(view: FleetView, node: str) -> AsyncIterator[bytes]:
    # Subscribed only once the body is sent: a HEAD, or a response the
    # client never reads, holds nothing.
    sub = view.subscribe()
    try:
        yield f"retry: {RETRY_MS}\n\n".encode() + sse(
            "snapshot", {"node": node, "nodes": view.snapshot()}
        )
        while True:
            records = await sub.changes()
            if records is None:
                return  # ended for a newer stream (FleetView.subscribe)
            yield b"".join(sse("node", r) for r in records)
    finally:
        sub.close()
