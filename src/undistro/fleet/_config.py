"""The ``[fleet]`` table of node.toml: how this node joins its fleet.

Example::

    [fleet]
    bind = "10.0.0.5:7946"            # Serf's gossip address (this node's fleet address)
    rpc = "127.0.0.1:7373"            # Serf's RPC address, loopback only
    retry_join = ["10.0.0.1:7946"]    # seeds; a dead seed is retried, never fatal
    encrypt_key_file = "/etc/undistro/fleet.key"   # `serf keygen` output
    sources = ["/mnt/fleet/repo", "https://mirror.example/fleet",
               "git+https://git.example/fleet-repo.git#main"]  # fallback pull
    check_sources_after = 3600        # heard nothing for an hour: pull on our own
    [fleet.tags]
    role = "web"
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from undistro.errors import PolicyError

_KEYS = {
    "name", "bind", "rpc", "retry_join", "encrypt_key_file", "tags", "sources",
    "discover", "serf", "profile", "check_sources_after",
}  # fmt: skip
_TAG_RESERVED = ("revision", "generation")  # undistro sets these itself


@dataclass(frozen=True)
class FleetConfig:
    name: str
    bind: str | None  # None: no gossip at all, plain sources only
    rpc: str = "127.0.0.1:7373"
    retry_join: tuple[str, ...] = ()
    encrypt_key_file: str | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()
    discover: str | None = None  # mDNS cluster name: only inside a network namespace
    serf: str = "serf"
    profile: str = "lan"  # Serf's timing profile: lan, wan or local
    check_sources_after: float | None = None  # heard nothing this long: pull on our own


def fleet_config(table: Mapping[str, Any], *, hostname: str, where: str) -> FleetConfig | None:
    """The node's fleet config, or None when node.toml has no [fleet]."""
    if not table:
        return None

    def bad(key: str, why: str) -> PolicyError:
        return PolicyError(f"{where}: [fleet] field '{key}': {why}")

    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise bad(unknown[0], f"unknown (known: {', '.join(sorted(_KEYS))})")

    def string(key: str, default: str | None = None) -> str | None:
        value = table.get(key, default)
        if value is not None and (not isinstance(value, str) or not value):
            raise bad(key, "must be a non-empty string")
        return value

    def strings(key: str) -> tuple[str, ...]:
        value = table.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise bad(key, "must be a list of non-empty strings")
        return tuple(value)

    bind = string("bind")
    if bind is None and not table.get("sources"):
        raise bad("bind", "required (the address Serf gossips on) unless 'sources' are given")
    for key, address in [("bind", bind), ("rpc", string("rpc", "127.0.0.1:7373"))]:
        if address is not None:
            _check_address(address, key, bad)
    rpc = string("rpc", "127.0.0.1:7373") or ""
    if not ipaddress.ip_address(rpc.rpartition(":")[0].strip("[]")).is_loopback:
        raise bad("rpc", "must be a loopback address: Serf's RPC takes orders")
    for seed in strings("retry_join"):
        _check_address(seed, "retry_join", bad)
    tags = table.get("tags", {})
    if not isinstance(tags, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in tags.items()
    ):
        raise bad("tags", "must be a table of strings")
    for key in _TAG_RESERVED:
        if key in tags:
            raise bad("tags", f"'{key}' is set by undistro itself")
    key_file = string("encrypt_key_file")
    if key_file is not None and not os.path.isabs(key_file):
        raise bad("encrypt_key_file", "must be an absolute path")
    profile = string("profile", "lan") or "lan"
    if profile not in ("lan", "wan", "local"):
        raise bad("profile", "must be one of lan, wan, local")
    quiet = table.get("check_sources_after")
    if quiet is not None and (isinstance(quiet, bool) or not isinstance(quiet, int | float)
                              or quiet < 10):  # fmt: skip
        raise bad("check_sources_after", "must be a number of seconds, at least 10")
    if quiet is None and bind is None:
        quiet = 300.0  # no gossip at all: the sources are the only news
    return FleetConfig(
        name=string("name", hostname) or hostname,
        bind=bind,
        rpc=rpc,
        retry_join=strings("retry_join"),
        encrypt_key_file=key_file,
        tags=dict(tags),
        sources=strings("sources"),
        discover=string("discover"),
        serf=string("serf", "serf") or "serf",
        profile=profile,
        check_sources_after=float(quiet) if quiet is not None else None,
    )


def _check_address(address: str, key: str, bad: Any) -> None:
    host, sep, port = address.rpartition(":")
    try:
        ipaddress.ip_address(host.strip("[]"))
        ok = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise bad(key, f"expected IP:PORT, got {address[:80]!r}")
