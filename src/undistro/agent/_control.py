"""The control socket: JSON lines over a Unix socket in the state directory.

One request per line, one reply per line. A handler may answer at once or
return an awaitable (an ``apply`` waits for the engine, which the agent
serialises with its own repairs, so the two never race). The socket is
created mode 0600: only its owner (root, on a real machine) may drive the
agent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from undistro.agent.client import AgentError, socket_path, try_agent

Handler = Callable[[dict[str, Any]], dict[str, Any] | Awaitable[dict[str, Any]]]
_MAX_REQUEST = 64 * 1024
# sockaddr_un.sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107


class ControlServer:
    """Serve ``handler`` on ``STATE_DIR/agent.sock`` until :meth:`close`."""

    def __init__(self, state_dir: str, handler: Handler) -> None:
        self.path = socket_path(state_dir)
        self._handler = handler
        self._server: asyncio.base_events.Server | None = None
        self.requests = 0

    def claim(self) -> None:
        """Refuse (AgentError) if another agent already answers on the
        socket: called before the agent touches anything."""
        if len(os.fsencode(self.path)) > _MAX_SOCKET_PATH:
            raise AgentError(f"control socket path too long for a Unix socket: {self.path}")
        state_dir = os.path.dirname(self.path)
        if os.path.exists(self.path) and try_agent(state_dir, {"op": "ping"}, timeout=2):
            raise AgentError(f"another agent already runs on {self.path}")

    async def start(self) -> None:
        """Bind the socket; refuse if another agent already answers on it."""
        self.claim()
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        if os.path.exists(self.path):
            os.unlink(self.path)  # left by an agent that died
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        old_umask = os.umask(0o177)  # born 0600: no window where others may connect
        try:
            sock.bind(self.path)
        finally:
            os.umask(old_umask)
        self._server = await asyncio.start_unix_server(self._serve, sock=sock, limit=_MAX_REQUEST)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                self.requests += 1
                reply = self._answer(line)
                if inspect.isawaitable(reply):
                    reply = await reply
                writer.write(json.dumps(reply, default=str).encode() + b"\n")
                await writer.drain()
        except (ConnectionError, ValueError):
            pass  # a client that went away or sent an over-long line
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _answer(self, line: bytes) -> dict[str, Any] | Awaitable[dict[str, Any]]:
        try:
            request = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(request, dict) or not isinstance(request.get("op"), str):
            return {"ok": False, "error": "request must be an object with an 'op'"}
        return self._handler(request)

    async def close(self) -> None:
        """Stop serving and remove the socket (only if this server bound it:
        a refused second agent leaves the first one's alone)."""
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
