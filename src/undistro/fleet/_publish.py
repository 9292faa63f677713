"""The publishing side of a fleet's trust: keys, TUF metadata, revisions.

Trust is The Update Framework's (python-tuf's metadata API), not a scheme
of our own: a root role (2 of 3 keys, kept offline) names the keys of the
targets, snapshot and timestamp roles; each policy revision is a TUF target
whose custom metadata carries its revision number and the nodes it is for.
A push re-signs targets, snapshot and timestamp and returns the compact
timestamp, which is small enough to announce in one Serf user event: a node
checks it against its own trusted root before it fetches anything.

A fleet directory (``undistro fleet init DIR``)::

    DIR/keys/root-1.pem root-2.pem root-3.pem      move these offline
    DIR/keys/targets.pem snapshot.pem timestamp.pem
    DIR/repo/metadata/1.root.json N.targets.json N.snapshot.json timestamp.json
    DIR/repo/targets/<sha256>.policy/r<N>.bundle    (consistent snapshots)

Every file in ``repo/`` but ``timestamp.json`` is immutable and named by
version or hash, so any peer may cache and serve it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from undistro._files import atomic_write as _write
from undistro.errors import FleetError
from undistro.fleet._actions import OPERATORS_FIELD

if TYPE_CHECKING:
    from securesystemslib.signer import Signer
    from tuf.api.metadata import Metadata

ROOT_KEYS = ("root-1", "root-2", "root-3")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
ROOT_THRESHOLD = 2
EXPIRY = {
    "root": timedelta(days=365),
    "targets": timedelta(days=90),
    "snapshot": timedelta(days=30),
    "timestamp": timedelta(days=7),
}
POLICY_PREFIX = "policy/"
FIRST_OPERATOR = "admin"


class PublishError(FleetError, ValueError):
    """A fleet directory is missing, incomplete or refuses a push."""

    exit_code = 2


@dataclass(frozen=True)
class Pushed:
    revision: int
    target: str  # the TUF target path, policy/r<N>.bundle
    sha256: str
    announcement: bytes  # the compact signed timestamp


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _serializer() -> Any:
    from tuf.api.serialization.json import JSONSerializer

    return JSONSerializer(compact=True)


def init_fleet(fleet_dir: str) -> str:
    """Create keys and version-1 metadata in the new ``fleet_dir``; returns
    the path of ``1.root.json``, the file each node must trust."""
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata, Root, Targets

    if os.path.exists(os.path.join(fleet_dir, "keys")):
        raise PublishError(f"{fleet_dir}: already holds a fleet (keys/ exists)")
    keys_dir = os.path.join(fleet_dir, "keys")
    meta_dir = os.path.join(fleet_dir, "repo", "metadata")
    os.makedirs(meta_dir, exist_ok=True)
    os.makedirs(os.path.join(fleet_dir, "repo", "targets"), exist_ok=True)
    os.mkdir(keys_dir, 0o700)
    names = ROOT_KEYS + ONLINE_ROLES + (f"operator-{FIRST_OPERATOR}",)
    signers = {name: CryptoSigner.generate_ed25519() for name in names}
    for name, signer in signers.items():
        key_path = os.path.join(keys_dir, f"{name}.pem")
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(signer.private_bytes)

    now = _now()
    root = Root(expires=now + EXPIRY["root"], consistent_snapshot=True)
    for name in ROOT_KEYS:
        root.add_key(signers[name].public_key, "root")
    root.roles["root"].threshold = ROOT_THRESHOLD
    for role in ONLINE_ROLES:
        root.add_key(signers[role].public_key, role)
    _authorise(root, FIRST_OPERATOR, signers[f"operator-{FIRST_OPERATOR}"].public_key)
    root_md = Metadata(root)
    for name in ROOT_KEYS:
        root_md.sign(signers[name], append=True)
    root_path = os.path.join(meta_dir, "1.root.json")
    _write(root_path, root_md.to_bytes(_serializer()))

    targets_md = Metadata(Targets(expires=now + EXPIRY["targets"]))
    _publish_chain(fleet_dir, targets_md, {r: signers[r] for r in ONLINE_ROLES})
    return root_path


def push(
    fleet_dir: str, bundle_data: bytes, *, to: str = "", revision: int | None = None
) -> Pushed:
    """Add ``bundle_data`` as the next policy revision and re-sign."""
    from tuf.api.metadata import TargetFile

    signers = load_online_signers(fleet_dir)
    targets_md = _latest(fleet_dir, "targets")
    targets = targets_md.signed
    current = max((_revision_of(t) for t in targets.targets.values()), default=0)
    number = current + 1 if revision is None else revision
    if number <= current:
        raise PublishError(f"revision {number} is not above the published revision {current}")
    path = f"{POLICY_PREFIX}r{number}.bundle"
    target = TargetFile.from_data(path, bundle_data, ["sha256"])
    target.unrecognized_fields["custom"] = {"revision": number, "to": to}
    targets.targets[path] = target
    sha = target.hashes["sha256"]
    directory, name = os.path.split(os.path.join(fleet_dir, "repo", "targets", path))
    os.makedirs(directory, exist_ok=True)
    _write(os.path.join(directory, f"{sha}.{name}"), bundle_data)
    targets.version += 1
    targets.expires = _now() + EXPIRY["targets"]
    announcement = _publish_chain(fleet_dir, targets_md, signers)
    return Pushed(number, path, sha, announcement)


def rotate_key(fleet_dir: str, role: str) -> str:
    """Give ``role`` (targets, snapshot or timestamp) a new key: the next
    root, signed by the current root's threshold, names it and drops the old
    one; the role's metadata is re-signed. Returns the new root's path.

    Nodes take the new root the next time they refresh (ngclient walks
    ``N.root.json`` upwards), and from then on refuse the old key.
    """
    from securesystemslib.signer import CryptoSigner

    if role not in ONLINE_ROLES:
        raise PublishError(f"rotate: {role!r} is not one of {', '.join(ONLINE_ROLES)}")
    root = _latest(fleet_dir, "root").signed
    for keyid in list(root.roles[role].keyids):
        root.revoke_key(keyid, role)
    signer = CryptoSigner.generate_ed25519()
    root.add_key(signer.public_key, role)
    path = _next_root(fleet_dir, root)
    key_path = os.path.join(fleet_dir, "keys", f"{role}.pem")
    _write(key_path, signer.private_bytes, 0o600)  # a private key: never readable by others
    signers = load_online_signers(fleet_dir)
    targets_md = _latest(fleet_dir, "targets")
    targets_md.signed.version += 1
    _publish_chain(fleet_dir, targets_md, signers)
    return path


def add_operator(fleet_dir: str, name: str) -> str:
    """A new operator key, authorised for signed actions by the next root
    (signed by the root threshold); returns its key id."""
    from securesystemslib.signer import CryptoSigner

    if not name.replace("-", "").replace("_", "").isalnum() or len(name) > 64:
        raise PublishError(f"operator name {name[:80]!r}: letters, digits, '-' and '_' only")
    key_path = os.path.join(fleet_dir, "keys", f"operator-{name}.pem")
    if os.path.exists(key_path):
        raise PublishError(f"{key_path}: operator {name!r} exists")
    root = _latest(fleet_dir, "root").signed
    signer = CryptoSigner.generate_ed25519()
    _authorise(root, name, signer.public_key)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signer.private_bytes)
    _next_root(fleet_dir, root)
    targets_md = _latest(fleet_dir, "targets")
    targets_md.signed.version += 1
    _publish_chain(fleet_dir, targets_md, load_online_signers(fleet_dir))
    keyid: str = signer.public_key.keyid
    return keyid


def load_operator(fleet_dir: str, name: str) -> tuple[Signer, int]:
    """The operator's signer and its next sequence number (persisted).

    Sequences start from the clock in nanoseconds so that the same operator
    signing from two machines still moves forward; the file only guarantees
    it never repeats or goes back on this one.
    """
    import time

    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    path = os.path.join(fleet_dir, "keys", f"operator-{name}.pem")
    try:
        with open(path, "rb") as f:
            signer = CryptoSigner(load_pem_private_key(f.read(), None))
    except FileNotFoundError:
        raise PublishError(f"{path}: no such operator (undistro fleet operator add)") from None
    seq_path = os.path.join(fleet_dir, "keys", f"operator-{name}.seq")
    try:
        with open(seq_path) as f:
            last = int(f.read().strip() or 0)
    except FileNotFoundError:
        last = 0
    except ValueError:
        raise PublishError(f"{seq_path}: corrupt sequence file") from None
    sequence = max(time.time_ns(), last + 1)
    _write(seq_path, str(sequence).encode())
    return signer, sequence


def _authorise(root: Any, name: str, key: Any) -> None:
    table = dict(root.unrecognized_fields.get(OPERATORS_FIELD) or {})
    table[key.keyid] = {"name": name, **key.to_dict()}
    root.unrecognized_fields[OPERATORS_FIELD] = table


def _next_root(fleet_dir: str, root: Any) -> str:
    """Sign ``root`` as the next version with the current root threshold."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner
    from tuf.api.metadata import Metadata

    root.version += 1
    root.expires = _now() + EXPIRY["root"]
    new_md = Metadata(root)
    for name in ROOT_KEYS[:ROOT_THRESHOLD]:
        path = os.path.join(fleet_dir, "keys", f"{name}.pem")
        try:
            with open(path, "rb") as f:
                new_md.sign(CryptoSigner(load_pem_private_key(f.read(), None)), append=True)
        except FileNotFoundError:
            raise PublishError(
                f"{path}: a root key is needed here (bring it back online)"
            ) from None
    path = os.path.join(fleet_dir, "repo", "metadata", f"{root.version}.root.json")
    _write(path, new_md.to_bytes(_serializer()))
    return path


def load_online_signers(fleet_dir: str) -> dict[str, Signer]:
    from cryptography.hazmat.primitives.serialization import load_pem_private_key
    from securesystemslib.signer import CryptoSigner

    signers: dict[str, Signer] = {}
    for role in ONLINE_ROLES:
        path = os.path.join(fleet_dir, "keys", f"{role}.pem")
        try:
            with open(path, "rb") as f:
                signers[role] = CryptoSigner(load_pem_private_key(f.read(), None))
        except FileNotFoundError:
            raise PublishError(f"{path}: no such key (is {fleet_dir} a fleet directory?)") from None
        except ValueError as exc:
            raise PublishError(f"{path}: not a private key: {exc}") from None
    return signers


def _publish_chain(fleet_dir: str, targets_md: Metadata[Any], signers: dict[str, Signer]) -> bytes:
    """Sign targets, then a snapshot naming it, then a timestamp naming that."""
    from tuf.api.metadata import Metadata, MetaFile, Snapshot, Timestamp

    meta_dir = os.path.join(fleet_dir, "repo", "metadata")
    ser = _serializer()
    targets_md.signatures.clear()
    targets_md.sign(signers["targets"])
    targets_name = f"{targets_md.signed.version}.targets.json"
    _write(os.path.join(meta_dir, targets_name), targets_md.to_bytes(ser))

    try:
        snapshot = _latest(fleet_dir, "snapshot").signed
        snapshot.version += 1
    except PublishError:
        snapshot = Snapshot()
    snapshot.expires = _now() + EXPIRY["snapshot"]
    snapshot.meta["targets.json"] = MetaFile(version=targets_md.signed.version)
    snapshot_md = Metadata(snapshot)
    snapshot_md.sign(signers["snapshot"])
    _write(os.path.join(meta_dir, f"{snapshot.version}.snapshot.json"), snapshot_md.to_bytes(ser))

    try:
        timestamp = _latest(fleet_dir, "timestamp").signed
        timestamp.version += 1
    except PublishError:
        timestamp = Timestamp()
    timestamp.expires = _now() + EXPIRY["timestamp"]
    # Version only, no hashes or length: keeps the announcement ~370 bytes.
    timestamp.snapshot_meta = MetaFile(version=snapshot.version)
    timestamp_md = Metadata(timestamp)
    timestamp_md.sign(signers["timestamp"])
    data: bytes = timestamp_md.to_bytes(ser)
    _write(os.path.join(meta_dir, "timestamp.json"), data)
    return data


def _latest(fleet_dir: str, role: str) -> Metadata[Any]:
    from tuf.api.metadata import Metadata

    meta_dir = os.path.join(fleet_dir, "repo", "metadata")
    if role == "timestamp":
        path = os.path.join(meta_dir, "timestamp.json")
    else:
        versions = [
            int(n.split(".", 1)[0])
            for n in _listdir(meta_dir)
            if n.endswith(f".{role}.json") and n.split(".", 1)[0].isdigit()
        ]
        if not versions:
            raise PublishError(f"{meta_dir}: no {role} metadata (run 'undistro fleet init')")
        path = os.path.join(meta_dir, f"{max(versions)}.{role}.json")
    try:
        with open(path, "rb") as f:
            return Metadata.from_bytes(f.read())
    except FileNotFoundError:
        raise PublishError(f"{path}: missing (run 'undistro fleet init')") from None


def _revision_of(target: Any) -> int:
    custom = target.unrecognized_fields.get("custom") or {}
    value = custom.get("revision", 0)
    return value if isinstance(value, int) else 0


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except FileNotFoundError:
        raise PublishError(f"{path}: not a fleet directory (run 'undistro fleet init')") from None


def describe_root(root_path: str) -> dict[str, Any]:
    with open(root_path, "rb") as f:
        root = json.load(f)
    return {"version": root["signed"]["version"], "keys": len(root["signed"]["keys"])}
