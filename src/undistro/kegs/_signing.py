"""Ed25519 keys and signatures for keg manifests (PyNaCl: ~1 MB, cheap).

Key files are one line of text, like OpenSSH's, so they can be pasted into
a policy or a ticket::

    secret:  undistro-ed25519-secret <base64 seed>
    public:  undistro-ed25519 <base64 key> [comment]

A node trusts the public keys in ``/etc/undistro/trusted-keys/*.pub`` (under
``--root``) plus any given on the command line; nothing else is trusted,
and there is no default key.
"""

from __future__ import annotations

import base64
import binascii
import glob
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from undistro.errors import ArtifactError

if TYPE_CHECKING:
    from nacl.signing import SigningKey

TRUSTED_KEYS_DIR = "/etc/undistro/trusted-keys"
_PUBLIC = "undistro-ed25519"
_SECRET = "undistro-ed25519-secret"


@dataclass(frozen=True, slots=True)
class Signature:
    key: str
    """The signer's public key, base64."""
    signature: str
    """The Ed25519 signature, base64."""


def generate_keypair(out: str, comment: str = "") -> str:
    """Write a new secret key to ``out`` (mode 0600, never overwritten) and
    its public key to ``out.pub``; return the public key line."""
    from nacl.signing import SigningKey

    key = SigningKey.generate()
    public = f"{_PUBLIC} {_b64(bytes(key.verify_key))}"
    if comment:
        public += f" {comment}"
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise ArtifactError(f"{out}: exists; refusing to overwrite a key") from None
    with os.fdopen(fd, "w") as f:
        f.write(f"{_SECRET} {_b64(bytes(key))}\n")
    with open(f"{out}.pub", "w") as f:
        f.write(public + "\n")
    return public


def load_signing_key(path: str) -> SigningKey:
    from nacl.signing import SigningKey

    fields = _read_key_line(path)
    if fields[0] != _SECRET or len(fields) < 2:
        raise ArtifactError(f"{path}: not an undistro secret key (expected '{_SECRET} …')")
    return SigningKey(_unb64(path, fields[1], 32))


def load_public_key(path: str) -> str:
    """The base64 public key in a ``.pub`` file (checked to be 32 bytes)."""
    fields = _read_key_line(path)
    if fields[0] != _PUBLIC or len(fields) < 2:
        raise ArtifactError(f"{path}: not an undistro public key (expected '{_PUBLIC} …')")
    _unb64(path, fields[1], 32)
    return fields[1]


def trusted_keys(keys_dir: str, extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """Every public key a node trusts: the ``*.pub`` files in ``keys_dir``
    and the files in ``extra``."""
    paths = sorted(glob.glob(os.path.join(glob.escape(keys_dir), "*.pub"))) + list(extra)
    return {load_public_key(p) for p in paths}


def sign(data: bytes, key: SigningKey) -> Signature:
    signed = key.sign(data)
    return Signature(_b64(bytes(key.verify_key)), _b64(signed.signature))


def verify(data: bytes, sig: Signature, trusted: set[str], what: str) -> None:
    """Accept ``data`` only if signed by one of the ``trusted`` keys."""
    from nacl.exceptions import BadSignatureError
    from nacl.signing import VerifyKey

    if not trusted:
        raise ArtifactError(f"{what}: no trusted keys configured (see --trusted-key)")
    if sig.key not in trusted:
        raise ArtifactError(f"{what}: signed by an untrusted key {sig.key[:12]}…")
    try:
        VerifyKey(base64.b64decode(sig.key)).verify(data, base64.b64decode(sig.signature))
    except (BadSignatureError, binascii.Error, ValueError):
        raise ArtifactError(f"{what}: bad signature") from None


def _read_key_line(path: str) -> list[str]:
    try:
        with open(path, encoding="ascii") as f:
            fields = f.readline().split()
    except (OSError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: cannot read key: {exc}") from None
    if not fields:
        raise ArtifactError(f"{path}: empty key file")
    return fields


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(path: str, text: str, size: int) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except binascii.Error:
        raw = b""
    if len(raw) != size:
        raise ArtifactError(f"{path}: malformed key")
    return raw
