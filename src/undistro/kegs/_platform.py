"""The platform facts a recipe's ``when`` conditions and the store hash see.

Only three facts, on purpose: the kernel (``os``), the distribution family
(``os_family``: ``debian``, ``redhat``, ``arch``, ``alpine``, ``suse`` or the
distribution's own id) and the machine architecture (``arch``). They are what
decides whether a dependency is needed at all, and they are part of every
keg's hash, so a keg built on one family is never mistaken for another's.
"""

from __future__ import annotations

import os
import platform as _stdlib_platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FAMILIES = ("debian", "redhat", "arch", "alpine", "suse", "gentoo")


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    os_family: str
    arch: str

    def as_dict(self) -> dict[str, str]:
        return {"os": self.os, "os_family": self.os_family, "arch": self.arch}

    @classmethod
    def from_facts(cls, facts: Mapping[str, Any], root: str = "/") -> Platform:
        """From the node facts the policy sees (``facts.os.family``,
        ``facts.arch``), so a ``when`` agrees with the policy's own view;
        what they lack comes from ``root``'s os-release."""
        host = detect(root)
        os_facts = facts.get("os")
        family = os_facts.get("family") if isinstance(os_facts, Mapping) else None
        arch = facts.get("arch")
        return cls(
            os=host.os,
            os_family=family_of([str(family)]) if family else host.os_family,
            arch=_normalise_arch(str(arch)) if arch else host.arch,
        )


def detect(root: str = "/") -> Platform:
    """Read the facts of the machine (``/etc/os-release`` under ``root``)."""
    release = _os_release(os.path.join(root, "etc/os-release"))
    ids = [release.get("ID", ""), *release.get("ID_LIKE", "").split()]
    return Platform(
        os=_stdlib_platform.system().lower(),
        os_family=family_of(ids),
        arch=_normalise_arch(_stdlib_platform.machine()),
    )


def family_of(ids: Sequence[str]) -> str:
    """``["rocky", "rhel", "centos", "fedora"]`` → ``redhat``: the first id
    that names (or is known to belong to) a family, else the first id."""
    for ident in ids:
        family = ident if ident in FAMILIES else _MEMBERS.get(ident)
        if family:
            return family
    return ids[0] if ids and ids[0] else "unknown"


_MEMBERS = {
    "ubuntu": "debian",
    "raspbian": "debian",
    "rhel": "redhat",
    "fedora": "redhat",
    "centos": "redhat",
    "rocky": "redhat",
    "almalinux": "redhat",
    "archlinux": "arch",
    "opensuse": "suse",
    "sles": "suse",
}


def _normalise_arch(machine: str) -> str:
    return {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)


def _os_release(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.strip().partition("=")
                if sep and key and not key.startswith("#"):
                    out[key] = value.strip().strip("\"'")
    except OSError:
        pass
    return out
