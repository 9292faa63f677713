"""Talk to a running agent over its control socket (JSON lines).

Kept free of asyncio so that ``undistro status`` and ``undistro apply`` stay
cheap to start. Without an agent, :func:`try_agent` returns ``None`` and the
caller works directly on the state store.

Example::

    reply = try_agent("/var/lib/undistro", {"op": "status"})
    if reply is None:
        ...  # no agent: read the state store instead
"""

from __future__ import annotations

import json
import os
import socket
from typing import Any

from undistro.errors import UndistroError

SOCKET_NAME = "agent.sock"


class AgentError(UndistroError, ConnectionError):
    """The agent's control socket answered badly or refused a request."""


def socket_path(state_dir: str) -> str:
    """Where the agent of ``state_dir`` listens."""
    return os.path.join(state_dir, SOCKET_NAME)


def try_agent(
    state_dir: str, request: dict[str, Any], *, timeout: float | None = None
) -> dict[str, Any] | None:
    """Send one request to the agent of ``state_dir``; ``None`` if none runs.

    ``request`` is ``{"op": "status"}`` (``"all": true`` lists kept
    resources too), ``{"op": "apply", "policy": DIR}`` or ``{"op": "reload"}``.
    The reply is a dict with ``"ok"``; a reply with ``"ok": false`` carries
    ``"error"`` (one line per problem). ``timeout`` is for the connection
    and each read (``None``: wait, as an apply may take long).
    """
    path = socket_path(state_dir)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.settimeout(timeout)
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            return None  # no socket, or a stale one from an agent that died
        sock.sendall(json.dumps(request).encode() + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline()
    except OSError as exc:
        raise AgentError(f"agent at {path}: {exc.strerror or exc}") from None
    finally:
        sock.close()
    if not line:
        raise AgentError(f"agent at {path} closed the connection without a reply")
    try:
        reply = json.loads(line)
    except ValueError:
        raise AgentError(f"agent at {path} sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise AgentError(f"agent at {path} sent a reply that is not an object")
    return reply
