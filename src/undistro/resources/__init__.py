"""Resource types, one module each, behind the protocol in ``_base``.

Adding a type touches its own module and one line of ``TYPES``. Modules are
imported only when a policy uses the type, to keep the agent lean.
"""

from __future__ import annotations

from importlib import import_module

from undistro.resources._base import Action, Context, Fingerprint, Resource, Watch

TYPES: dict[str, str] = {
    "file": "undistro.resources.file:File",
    "directory": "undistro.resources.directory:Directory",
    "symlink": "undistro.resources.symlink:Symlink",
    "user": "undistro.resources.user:User",
    "group": "undistro.resources.group:Group",
    "exec": "undistro.resources.exec:Exec",
    "keg": "undistro.resources.keg:Keg",
}


def resource_class(type_name: str) -> type[Resource]:
    """The class implementing ``type_name``; KeyError if there is none."""
    module, _, attr = TYPES[type_name].partition(":")
    cls: type[Resource] = getattr(import_module(module), attr)
    return cls


__all__ = ["TYPES", "Action", "Context", "Fingerprint", "Resource", "Watch", "resource_class"]
