"""Kegs: software built from short recipes into a hash-addressed store.

recipes (``_recipe``) → resolution (``_resolve``) → sources (``_sources``)
→ builds (``_build``, in ``_sandbox``) → store (``_store``); generations and
artifacts build on the store's ``.keg.json``. See docs/kegs.md.

The public names are loaded on first use (PEP 562): importing
``undistro.kegs.generations`` or a resource module costs nothing for the
builder's machinery (tarfile, urllib, packaging) until it is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Builder": "_build",
    "BuiltKeg": "_build",
    "PlannedKeg": "_build",
    "Platform": "_platform",
    "detect": "_platform",
    "BuildSpec": "_recipe",
    "Dependency": "_recipe",
    "Recipe": "_recipe",
    "RecipeBook": "_recipe",
    "Source": "_recipe",
    "Variant": "_recipe",
    "When": "_recipe",
    "load_recipe": "_recipe",
    "Requirement": "_resolve",
    "Resolution": "_resolve",
    "Resolved": "_resolve",
    "parse_request": "_resolve",
    "resolve": "_resolve",
    "DirectoryMirror": "_sources",
    "Mirror": "_sources",
    "SourceCache": "_sources",
    "UrlMirror": "_sources",
    "mirrors_from": "_sources",
    "DEFAULT_STORE": "_store",
    "META_NAME": "_store",
    "KegMeta": "_store",
    "Store": "_store",
    "keg_hash": "_store",
    "make_writable": "_store",
    "scan_references": "_closure",
    "store_lock": "_store",
    "GC_LOCK": "_store",
    "write_self_recipe": "_selfkeg",
}

if TYPE_CHECKING:
    from undistro.kegs._build import Builder, BuiltKeg, PlannedKeg
    from undistro.kegs._closure import scan_references
    from undistro.kegs._platform import Platform, detect
    from undistro.kegs._recipe import (
        BuildSpec,
        Dependency,
        Recipe,
        RecipeBook,
        Source,
        Variant,
        When,
        load_recipe,
    )
    from undistro.kegs._resolve import (
        Requirement,
        Resolution,
        Resolved,
        parse_request,
        resolve,
    )
    from undistro.kegs._selfkeg import write_self_recipe
    from undistro.kegs._sources import (
        DirectoryMirror,
        Mirror,
        SourceCache,
        UrlMirror,
        mirrors_from,
    )
    from undistro.kegs._store import (
        DEFAULT_STORE,
        GC_LOCK,
        META_NAME,
        KegMeta,
        Store,
        keg_hash,
        make_writable,
        store_lock,
    )


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'undistro.kegs' has no attribute {name!r}")
    value = getattr(import_module(f"undistro.kegs.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "DEFAULT_STORE",
    "GC_LOCK",
    "META_NAME",
    "BuildSpec",
    "Builder",
    "BuiltKeg",
    "Dependency",
    "DirectoryMirror",
    "KegMeta",
    "Mirror",
    "PlannedKeg",
    "Platform",
    "Recipe",
    "RecipeBook",
    "Requirement",
    "Resolution",
    "Resolved",
    "Source",
    "SourceCache",
    "Store",
    "UrlMirror",
    "Variant",
    "When",
    "detect",
    "keg_hash",
    "load_recipe",
    "make_writable",
    "mirrors_from",
    "parse_request",
    "resolve",
    "scan_references",
    "store_lock",
    "write_self_recipe",
]
