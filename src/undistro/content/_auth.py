"""Signed requests to a node's face: an operator key the fleet root authorises.

The same trust as signed actions (undistro.fleet._actions): the operator keys
are the root's ``x-undistro-operators`` field. A request carries::

    Authorization: Undistro <keyid>:<unix time>:<sequence>:<ed25519 signature hex>

signed over ``undistro-http 1\\n<node>\\n<METHOD>\\n<target>\\n<time>\\n<sequence>``
— the node's fleet name is signed so that a request captured on the way to
one node cannot be replayed to another. A node refuses (401) a missing or
malformed header, a bad signature, a time more than ``WINDOW`` seconds away
from its clock and a (key, sequence) it already saw within that window
(it remembers them in memory for the window: what it refuses is a replay of
a read, and a request older than the window is refused by its time); and
(403) a key the root does not authorise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from undistro.content._http import Authorise, Request

WINDOW = 60
MAX_REMEMBERED = 100_000  # (key, sequence) pairs; beyond it the face refuses, it never forgets
_HEADER = re.compile(r"Undistro ([0-9a-f]{64}):([0-9]{1,12}):([0-9]{1,30}):([0-9a-f]{128})")


def payload(node: str, method: str, target: str, when: int, sequence: int) -> bytes:
    return f"undistro-http 1\n{node}\n{method}\n{target}\n{when}\n{sequence}".encode()


def sign_request(signer: Any, node: str, method: str, target: str, *, sequence: int,
                 now: float | None = None) -> str:  # fmt: skip
    """The ``Authorization`` value for one request (``signer``: a securesystemslib Signer)."""
    when = int(time.time() if now is None else now)
    signature = signer.sign(payload(node, method, target, when, sequence)).signature
    return f"Undistro {signer.public_key.keyid}:{when}:{sequence}:{signature}"


def operator_authorise(state_dir: str, node: str,
                       clock: Callable[[], float] = time.time) -> Authorise:  # fmt: skip
    """An ``authorise`` for start_http_face: the fleet root's operators, read
    when a request comes (a new root takes effect at once)."""
    from undistro.fleet._actions import operators

    seen: dict[tuple[str, int], float] = {}

    def authorise(request: Request) -> str | None:
        match = _HEADER.fullmatch(request.headers.get("authorization", "").strip())
        if match is None:
            return "401 needs 'Authorization: Undistro KEYID:TIME:SEQUENCE:SIGNATURE'"
        keyid, when, sequence, signature = match.groups()
        now = clock()
        if abs(now - int(when)) > WINDOW:
            return f"401 signed at {when}, {int(now - int(when))} s from this node's clock"
        try:
            known = operators(state_dir)
        except Exception:  # no trusted root yet, or an unreadable one: nobody is an operator
            known = {}
        if keyid not in known:
            return "403 not an operator key the fleet root authorises"
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey

        name, key = known[keyid]
        message = payload(node, request.method, request.target, int(when), int(sequence))
        try:
            VerifyKey(key).verify(message, bytes.fromhex(signature))
        except (BadSignatureError, ValueError):
            return "401 bad signature"
        for old in [k for k, t in seen.items() if t < now - 2 * WINDOW]:
            del seen[old]
        if (keyid, int(sequence)) in seen:
            return f"401 replayed request (sequence {sequence} from {name or keyid[:12]})"
        if len(seen) >= MAX_REMEMBERED:
            return "401 too many signed requests in the last minute; try again"
        seen[(keyid, int(sequence))] = now
        return None

    return authorise
