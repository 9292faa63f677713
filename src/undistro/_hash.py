"""SHA-256 without OpenSSL where CPython offers it.

``hashlib`` loads OpenSSL (+3.6 MB RSS, measured here); CPython also ships
its own SHA-256 (``_sha256`` up to 3.11, ``_sha2`` from 3.12), which is all a
drift repair needs to hash one file. Falls back to hashlib elsewhere.
"""

from __future__ import annotations

from typing import Any


def _constructor() -> Any:
    try:
        from _sha2 import sha256  # type: ignore[import-not-found]
    except ImportError:
        try:
            from _sha256 import sha256  # type: ignore[import-not-found]
        except ImportError:
            from hashlib import sha256
    return sha256


# Resolved once: a failed import is not cached, and retrying it would search
# sys.path (a handful of stat calls) for every file hashed.
_sha256 = _constructor()


def sha256_hex(data: bytes) -> str:
    """The hex SHA-256 of ``data``."""
    return str(_sha256(data).hexdigest())


def sha256_file(path: str) -> str:
    """The hex SHA-256 of the file at ``path``, read 1 MiB at a time."""
    digest = _sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return str(digest.hexdigest())
