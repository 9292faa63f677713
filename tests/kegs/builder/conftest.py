"""Shared fixtures: the example sources, one store of real builds reused by
every test of the session, and tiny synthetic packages for fast builds."""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.kegs._fetch import fetch_sources
from undistro.kegs import (
    GC_LOCK,
    Builder,
    BuiltKeg,
    RecipeBook,
    SourceCache,
    Store,
    detect,
    make_writable,
    parse_request,
    resolve,
)

REPO = Path(__file__).resolve().parents[3]
RECIPES = REPO / "examples" / "recipes"


@pytest.fixture(scope="session")
def example_cache() -> str:
    """The source cache filled from Debian's source archive (real upstream
    tarballs); skips only when a pinned tarball cannot be had, with the
    script's whole account of which file failed and why (under CI=true the
    suite's conftest makes that skip a failure: CI must build for real)."""
    fetch_sources(
        [str(REPO / "scripts" / "fetch-example-sources")], needed_by="the real builds", timeout=600
    )
    return str(REPO / ".cache" / "sources")


@dataclass
class BuiltStore:
    store: Store
    cache: SourceCache
    kegs: dict[str, BuiltKeg]  # by request: "hello", "lua@5.3", ...
    log_dir: str


@pytest.fixture(scope="session")
def built(example_cache: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BuiltStore]:
    """hello, lua 5.3, lua 5.4 and pngcheck (with zlib) really built once,
    from the real tarballs, into one store shared by the session's tests."""
    base = tmp_path_factory.mktemp("kegs")
    store = Store(str(base / "store"))
    cache = SourceCache(example_cache)
    builder = Builder(store, cache, detect(), log_dir=str(base / "logs"))
    book = RecipeBook([str(RECIPES)])
    kegs: dict[str, BuiltKeg] = {}
    for request in ("hello", "lua@5.3", "lua@5.4", "pngcheck"):
        resolution = resolve([parse_request(request)], book, detect())
        result = builder.build(resolution)
        kegs[request] = result[resolution.roots[0]]
        kegs.update({f"{request}:{name}": keg for name, keg in result.items()})
    try:
        yield BuiltStore(store, cache, kegs, str(base / "logs"))
    finally:
        remove_store(str(base / "store"))


def remove_store(path: str) -> None:
    """Store paths are read-only: give the write bits back, then remove."""
    if os.path.isdir(path):
        make_writable(path)
        shutil.rmtree(path)


def make_tarball(path: Path, top: str, files: Mapping[str, str]) -> str:
    """A .tar.gz with ``top/NAME`` members; returns its SHA-256."""
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(data)
            info.mode = 0o755 if name.endswith(".sh") else 0o644
            tar.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class Synthetic:
    """A recipe directory with tiny packages, a source cache and a store."""

    recipes: Path
    cache: SourceCache
    store: Store
    logs: Path
    tarballs: Path

    def package(
        self, name: str, body: str, *, files: Mapping[str, str] | None = None, version: str = "1.0"
    ) -> str:
        """Write NAME.toml: one version whose tarball holds ``files``, plus
        ``body`` (variants, dependencies, build). Returns the source SHA-256."""
        tarball = self.tarballs / f"{name}-{version}.tar.gz"
        sha = make_tarball(tarball, f"{name}-{version}", files or {"README": name})
        self.cache.add_file(str(tarball))
        (self.recipes / f"{name}.toml").write_text(
            f'name = "{name}"\n\n[versions."{version}"]\n'
            f'url = "file://{tarball}"\nsha256 = "{sha}"\n\n{body}'
        )
        return sha

    def builder(self, **kwargs: Any) -> Builder:
        return Builder(self.store, self.cache, detect(), log_dir=str(self.logs), **kwargs)

    def build(self, request: str, *variants: str, **kwargs: Any) -> dict[str, BuiltKeg]:
        book = RecipeBook([str(self.recipes)])
        resolution = resolve([parse_request(request, variants)], book, detect())
        return self.builder(**kwargs).build(resolution)

    def entries(self) -> list[str]:
        """Everything in the store directory but its gc lock: staging
        (dot-named) directories included."""
        directory = self.store.physical(self.store.directory)
        names = os.listdir(directory) if os.path.isdir(directory) else []
        return sorted(n for n in names if n != GC_LOCK)


@pytest.fixture
def synthetic(tmp_path: Path) -> Iterator[Synthetic]:
    for sub in ("recipes", "cache", "logs", "tarballs", "store"):
        (tmp_path / sub).mkdir()
    try:
        yield Synthetic(
            tmp_path / "recipes",
            SourceCache(str(tmp_path / "cache")),
            Store(str(tmp_path / "store")),
            tmp_path / "logs",
            tmp_path / "tarballs",
        )
    finally:
        remove_store(str(tmp_path / "store"))
