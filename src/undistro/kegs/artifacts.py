"""Binary cache: signed keg artifacts, packed and installed verified.

    from undistro.kegs.artifacts import generate_keypair, pack, install, trusted_keys
    generate_keypair("/etc/undistro/cache.key")
    pack(["/opt/undistro/store/<hash>-hello-2.12"], "/etc/undistro/cache.key", "/srv/cache")
    install("hello", "http://peer:8080/", "/opt/undistro/store",
            trusted_keys("/etc/undistro/trusted-keys"))

See docs/generations.md for the artifact format and the trust model.
"""

from undistro.kegs._artifact import FORMAT, INDEX, Packed, install, open_cache, pack, resolve
from undistro.kegs._signing import (
    TRUSTED_KEYS_DIR,
    generate_keypair,
    load_public_key,
    trusted_keys,
)

__all__ = [
    "FORMAT",
    "INDEX",
    "TRUSTED_KEYS_DIR",
    "Packed",
    "generate_keypair",
    "install",
    "load_public_key",
    "open_cache",
    "pack",
    "resolve",
    "trusted_keys",
]
