"""Kegs: software built from short recipes into a hash-addressed store.

recipes (``_recipe``) → resolution (``_resolve``) → sources (``_sources``)
→ builds (``_build``, in ``_sandbox``) → store (``_store``); generations and
artifacts build on the store's ``.keg.json``. See docs/kegs.md.
"""

from __future__ import annotations

from undistro.kegs._build import Builder, BuiltKeg, PlannedKeg
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
from undistro.kegs._resolve import Requirement, Resolution, Resolved, parse_request, resolve
from undistro.kegs._sources import (
    DirectoryMirror,
    Mirror,
    SourceCache,
    UrlMirror,
    mirrors_from,
    sha256_file,
)
from undistro.kegs._store import (
    DEFAULT_STORE,
    META_NAME,
    KegMeta,
    Store,
    keg_hash,
    make_writable,
    runtime_closure,
    scan_references,
)

__all__ = [
    "DEFAULT_STORE",
    "META_NAME",
    "BuildSpec",
    "Builder",
    "BuiltKeg",
    "Dependency",
    "DirectoryMirror",
    "KegMeta",
    "Mirror",
    "Platform",
    "PlannedKeg",
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
    "runtime_closure",
    "scan_references",
    "sha256_file",
]
