"""Synthetic kegs: small read-only directories with a ``.keg.json``, so the
generation, gc and artifact tests do not depend on real builds."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Callable, Mapping

import pytest

from undistro.kegs.generations import DEFAULT_PROFILE, Profile

STORE = "/opt/undistro/store"

MakeKeg = Callable[..., str]


def keg_hash(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return base64.b32encode(digest).decode().lower()[:32]


def make_keg(
    root: str,
    name: str,
    version: str,
    files: Mapping[str, str | bytes] | None = None,
    *,
    run_deps: tuple[str, ...] = (),
    links: Mapping[str, str] | None = None,
    references: tuple[str, ...] | None = None,
    salt: str = "",
) -> str:
    """Create ``ROOT/opt/undistro/store/<hash>-NAME-VERSION`` and return its
        on-disk path. ``files`` maps relative paths to contents; a content
        under ``bin/`` is made executable. ``run_deps`` and ``references`` (what
    the builder's scanner recorded, when given) are on-disk paths."""
    h = keg_hash(name, version, salt)
    store = os.path.join(root, STORE.lstrip("/"))
    path = os.path.join(store, f"{h}-{name}-{version}")
    os.makedirs(path)
    for rel, content in (files or {}).items():
        full = os.path.join(path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        data = content.encode() if isinstance(content, str) else content
        with open(full, "wb") as f:
            f.write(data)
        os.chmod(full, 0o555 if rel.startswith(("bin/", "sbin/")) else 0o444)
    for rel, target in (links or {}).items():
        full = os.path.join(path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        os.symlink(target, full)
    meta = {
        "name": name,
        "version": version,
        "hash": h,
        "recipe_hash": keg_hash("recipe", name, version),
        "variants": {},
        "platform": {"os": "linux", "arch": "x86_64"},
        "run_deps": [f"{STORE}/{os.path.basename(d)}" for d in run_deps],
    }
    if references is not None:
        meta["references"] = [f"{STORE}/{os.path.basename(d)}" for d in references]
    with open(os.path.join(path, ".keg.json"), "w") as f:
        json.dump(meta, f)
    os.chmod(os.path.join(path, ".keg.json"), 0o444)
    for dirpath, _dirs, _files in os.walk(path):
        os.chmod(dirpath, 0o555)
    return path


@pytest.fixture
def root(tmp_path: object) -> str:
    path = os.path.join(str(tmp_path), "root")
    os.makedirs(path)
    return path


@pytest.fixture
def keg(root: str) -> MakeKeg:
    def make(
        name: str, version: str, files: Mapping[str, str | bytes] | None = None, **kw: object
    ) -> str:
        return make_keg(root, name, version, files, **kw)  # type: ignore[arg-type]

    return make


@pytest.fixture
def profile(root: str) -> Profile:
    """The default profile under ``root``."""
    return Profile(os.path.join(root, DEFAULT_PROFILE.lstrip("/")), root=root)
