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
from collections.abc import Mapping
from dataclasses import dataclass

FAMILIES = ("debian", "redhat", "arch", "alpine", "suse", "gentoo")


@dataclass(frozen=True, slots=True)
class Platform:
    os: str
    os_family: str
    arch: str

    def as_dict(self) -> dict[str, str]:
        return {"os": self.os, "os_family": self.os_family, "arch": self.arch}

    @classmethod
    def from_facts(cls, facts: Mapping[str, object]) -> Platform:
        """Take the facts from a policy's fact table, filling gaps from the host."""
        host = detect()
        return cls(
            os=str(facts.get("os", host.os)),
            os_family=str(facts.get("os_family", host.os_family)),
            arch=str(facts.get("arch", host.arch)),
        )


def detect(root: str = "/") -> Platform:
    """Read the facts of the machine (``/etc/os-release`` under ``root``)."""
    release = _os_release(os.path.join(root, "etc/os-release"))
    ids = [release.get("ID", "")] + release.get("ID_LIKE", "").split()
    family = next((i for i in ids if i in FAMILIES), None)
    if family is None:
        family = {"ubuntu": "debian", "fedora": "redhat", "centos": "redhat", "rhel": "redhat"}.get(
            ids[0], ids[0] or "unknown"
        )
    return Platform(os=_stdlib_platform.system().lower(), os_family=family, arch=_machine())


def _machine() -> str:
    machine = _stdlib_platform.machine()
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
