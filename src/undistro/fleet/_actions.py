"""Signed actions: converge, rollback, restart SERVICE — from any member.

An action is small enough for one Serf user event (~200 bytes of a 482
limit): a msgpack list ``[1, kind, target, to, sequence, issued, expires,
keyid]`` and its Ed25519 signature. The signing key is an *operator* key
that the fleet's root authorises (the root's ``x-undistro-operators``
field, signed by the root threshold like everything else in the root), so
every sender signs with its own key — Serf's ``-encrypt`` is one shared key
and says nothing about who sent what.

A node refuses, journals and counts: an unknown or revoked signer, a bad
signature, an action not yet valid or expired (or valid for more than a
day), one whose ``to`` tags this node does not hold (ignored, not refused),
and a sequence number at or below the last it accepted from that signer —
floors persist in ``<state>/fleet/floors.json``, so a replay is refused after
restarts too.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from undistro.errors import FleetError

ACTION_EVENT = "undistro-action"
KINDS = ("converge", "rollback", "restart")
OPERATORS_FIELD = "x-undistro-operators"
MAX_VALIDITY = 24 * 3600
CLOCK_SKEW = 60
_FORMAT = 1


class ActionRefused(FleetError, ValueError):
    """A signed action failed verification; nothing was done."""

    exit_code = 2


@dataclass(frozen=True)
class Action:
    kind: str  # converge | rollback | restart
    target: str  # restart: the service's name; else ""
    to: tuple[str, ...]  # tags a node must hold all of; () is every node
    sequence: int
    issued: int
    expires: int
    keyid: str
    signer: str = ""  # the operator's name in the root

    def describe(self) -> str:
        what = f"{self.kind} {self.target}".strip()
        return f"{what} (#{self.sequence} from {self.signer or self.keyid[:12]})"


def sign_action(
    signer: Any,
    kind: str,
    target: str = "",
    *,
    to: Sequence[str] = (),
    sequence: int,
    valid_for: int = 600,
    now: float | None = None,
) -> bytes:
    """The wire form of one action, signed by ``signer`` (a securesystemslib Signer)."""
    if kind not in KINDS:
        raise ActionRefused(f"unknown action {kind!r} (known: {', '.join(KINDS)})")
    if (kind == "restart") != bool(target):
        raise ActionRefused("restart takes a SERVICE; converge and rollback take none")
    if not 0 < valid_for <= MAX_VALIDITY:
        raise ActionRefused(f"an action is valid for 1 s to {MAX_VALIDITY} s")
    issued = int(now if now is not None else time.time())
    keyid = signer.public_key.keyid
    payload = msgpack.packb(
        [_FORMAT, kind, target, ",".join(to), sequence, issued, issued + valid_for, keyid]
    )
    signature = bytes.fromhex(signer.sign(payload).signature)
    data: bytes = msgpack.packb([payload, signature], use_bin_type=True)
    return data


def operators(state_dir: str) -> dict[str, tuple[str, bytes]]:
    """keyid → (operator name, raw Ed25519 public key) from the trusted root.

    The root file is ngclient's, written only after it verified the root
    chain, so reading it as JSON here is safe — and keeps TUF's client and
    cryptography out of the resident agent (PyNaCl checks the signature).
    """
    from undistro.fleet._receive import trust_dir

    path = os.path.join(trust_dir(state_dir), "metadata", "root.json")
    try:
        with open(path, "rb") as f:
            table = json.loads(f.read())["signed"].get(OPERATORS_FIELD) or {}
    except FileNotFoundError:
        raise ActionRefused(
            "no trusted fleet root (run 'undistro fleet trust ROOT.json')"
        ) from None
    except (ValueError, KeyError, TypeError):
        raise FleetError(f"{path}: unreadable trusted root") from None
    out: dict[str, tuple[str, bytes]] = {}
    for keyid, entry in table.items() if isinstance(table, dict) else ():
        try:
            if entry["keytype"] == "ed25519":
                out[keyid] = (str(entry.get("name", "")), bytes.fromhex(entry["keyval"]["public"]))
        except (KeyError, TypeError, ValueError):
            continue  # a malformed entry authorises nobody
    return out


def verify_action(
    state_dir: str, data: bytes, node_tags: Sequence[str], *, now: float | None = None
) -> Action | None:
    """The action if it is genuine, fresh and meant for this node; None if
    it is genuine but for other nodes. Raises ActionRefused otherwise.

    Accepting moves the signer's sequence floor (persisted before return).
    """
    try:
        payload, signature = msgpack.unpackb(data, raw=False, max_bin_len=4096)
        fields = msgpack.unpackb(payload, raw=False)
        fmt, kind, target, to, sequence, issued, expires, keyid = fields
    except (ValueError, TypeError, msgpack.UnpackException):
        raise ActionRefused("not a signed action") from None
    if fmt != _FORMAT or kind not in KINDS or not isinstance(sequence, int):
        raise ActionRefused("not a signed action of a known format")
    known = operators(state_dir)
    if keyid not in known:
        raise ActionRefused(
            f"signer {str(keyid)[:16]} is not an operator the fleet root authorises"
        )
    name, key = known[keyid]
    from nacl.exceptions import BadSignatureError
    from nacl.exceptions import ValueError as NaclValueError
    from nacl.signing import VerifyKey

    try:
        VerifyKey(key).verify(payload, bytes(signature))
    except (BadSignatureError, NaclValueError, TypeError):
        raise ActionRefused(f"bad signature on an action from {name or keyid[:16]}") from None
    clock = time.time() if now is None else now
    if issued > clock + CLOCK_SKEW:
        raise ActionRefused(f"action from {name} is not valid yet (issued in the future)")
    if expires < clock:
        raise ActionRefused(f"action from {name} expired")
    if expires - issued > MAX_VALIDITY:
        raise ActionRefused(f"action from {name} claims validity over {MAX_VALIDITY} s")
    action = Action(kind, target, tuple(t for t in to.split(",") if t), sequence, issued, expires,
                    keyid, name)  # fmt: skip
    floors = _floors(state_dir)
    if sequence <= floors.get(keyid, -1):
        raise ActionRefused(
            f"action #{sequence} from {name}: replayed (last accepted #{floors[keyid]})"
        )
    if not set(action.to) <= set(node_tags):
        return None
    floors[keyid] = sequence
    _write_floors(state_dir, floors)
    return action


def _floors_path(state_dir: str) -> str:
    from undistro.fleet._receive import trust_dir

    return os.path.join(trust_dir(state_dir), "floors.json")


def _floors(state_dir: str) -> dict[str, int]:
    try:
        with open(_floors_path(state_dir), "rb") as f:
            data = json.loads(f.read())
    except FileNotFoundError:
        return {}
    except ValueError:
        raise FleetError(f"{_floors_path(state_dir)} is corrupt; refusing every action") from None
    return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_floors(state_dir: str, floors: Mapping[str, int]) -> None:
    from undistro._files import atomic_write

    atomic_write(_floors_path(state_dir), json.dumps(dict(floors)).encode())
