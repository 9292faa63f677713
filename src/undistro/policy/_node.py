"""The node: its config file (/etc/undistro/node.toml) and its facts.

Example node.toml::

    policy = "/srv/policy"        # the default POLICY_DIR
    tags = ["web", "eu"]
    # hostname = "web-01"         # override the kernel's
    # state_dir = "/var/lib/undistro"
    [vars]                         # node-level variables, override the policy's
    datacenter = "fra1"
    [fleet]                        # join a gossip fleet: see docs/fleet.md
    bind = "10.0.0.5:7946"
    retry_join = ["10.0.0.1:7946"]
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from undistro.errors import PolicyError, clip_line
from undistro.policy._read import MAX_DEPTH, read_regular, too_deep

DEFAULT_NODE_CONFIG = "/etc/undistro/node.toml"
_KEYS = {"policy", "tags", "hostname", "state_dir", "vars", "audit_every", "fleet"}
_MAX_CONFIG = 1024 * 1024


class Node:
    """This machine as the node config describes it."""

    def __init__(self, root: str = "/") -> None:
        self.root = root
        self.config_path: str | None = None
        self.policy: str | None = None
        self.tags: tuple[str, ...] = ()
        self.hostname = os.uname().nodename
        self.state_dir = "/var/lib/undistro"
        self.vars: dict[str, Any] = {}
        self.audit_every: float | None = None
        self.fleet: dict[str, Any] = {}  # [fleet]: read by undistro.fleet, not here

    def facts(self) -> dict[str, Any]:
        return gather_facts(self)


def load_node(root: str = "/", config: str | None = None, extra_tags: Sequence[str] = ()) -> Node:
    """Read the node config (under the root unless given explicitly)."""
    root = os.path.abspath(root)
    path = config or os.path.join(root, DEFAULT_NODE_CONFIG.lstrip("/"))
    node = Node(root=root)
    data: dict[str, Any] = {}
    try:
        raw = read_regular(path, _MAX_CONFIG)
        import tomllib  # only when there is a node config to read

        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise PolicyError(clip_line(f"{path}: not valid TOML: {exc}")) from None
        except RecursionError:
            raise PolicyError(f"{path}: nested too deeply") from None
        node.config_path = path
    except FileNotFoundError:
        if config is not None:
            raise PolicyError(f"{path}: node config not found") from None
    except ValueError as exc:  # not a regular file, too large
        raise PolicyError(f"{path}: {exc}") from None
    except OSError as exc:
        raise PolicyError(f"{path}: {exc.strerror}") from None
    unknown = sorted(set(data) - _KEYS)
    if unknown:
        raise PolicyError(f"{path}: unknown key '{unknown[0]}' (known: {', '.join(sorted(_KEYS))})")
    try:
        node.policy = _opt_str(data, "policy")
        node.hostname = _opt_str(data, "hostname") or node.hostname
        node.state_dir = _opt_str(data, "state_dir") or node.state_dir
        tags = data.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) and t for t in tags):
            raise ValueError("'tags' must be a list of non-empty strings")
        node.tags = tuple(dict.fromkeys([*tags, *extra_tags]))
        node_vars = data.get("vars", {})
        if not isinstance(node_vars, dict):
            raise ValueError("'vars' must be a table")
        if too_deep(node_vars, MAX_DEPTH):
            raise ValueError(f"'vars' nested more than {MAX_DEPTH} levels deep")
        node.vars = node_vars
        fleet = data.get("fleet", {})
        if not isinstance(fleet, dict):
            raise ValueError("'fleet' must be a table")
        node.fleet = fleet
        audit = data.get("audit_every")
        if audit is not None:
            if isinstance(audit, bool) or not isinstance(audit, int | float) or audit <= 0:
                raise ValueError("'audit_every' must be a positive number of seconds")
            node.audit_every = float(audit)
    except ValueError as exc:
        raise PolicyError(clip_line(f"{path}: {exc}")) from None
    return node


def gather_facts(node: Node) -> dict[str, Any]:
    """Cheap facts about this machine: no subprocess, a few small reads."""
    os_release = _os_release()
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (ValueError, OSError):
        mem = 0
    uname = os.uname()
    return {
        "hostname": node.hostname,
        "os": {
            "id": os_release.get("ID", "linux"),
            "version": os_release.get("VERSION_ID", ""),
            "family": os_release.get("ID_LIKE", os_release.get("ID", "linux")).split()[0],
            "codename": os_release.get("VERSION_CODENAME", ""),
        },
        "kernel": uname.release,
        "arch": uname.machine,
        "cpus": os.cpu_count() or 1,
        "memory_mb": mem,
        "tags": list(node.tags),
    }


def _os_release() -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open("/etc/os-release", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep:
                    out[key] = value.strip().strip('"')
    except OSError:
        pass
    return out


def _opt_str(data: dict[str, Any], key: str) -> str | None:
    value = data.get(key)
    if value is not None and (not isinstance(value, str) or not value):
        raise ValueError(f"'{key}' must be a non-empty string")
    return value
