"""``undistro keg pack`` of a real keg takes its runtime closure along, so
``keg install`` of that one name works on a fresh root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from undistro import cli

from .conftest import BuiltStore, remove_store


def test_pack_of_pngcheck_carries_zlib_to_a_fresh_root(
    built: BuiltStore,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.gen"])
    pngcheck, zlib = built.kegs["pngcheck"], built.kegs["pngcheck:zlib"]
    key, cache, root = tmp_path / "cache.key", tmp_path / "cache", tmp_path / "fresh"
    assert cli.main(["keg", "keygen", "--out", str(key)]) == 0
    capsys.readouterr()
    assert cli.main(["keg", "pack", pngcheck.path, "--key", str(key), "--out", str(cache)]) == 0
    out = capsys.readouterr().out
    packed = [line.split()[1] for line in out.splitlines()]
    assert packed == [os.path.basename(zlib.path), os.path.basename(pngcheck.path)]

    keys = root / "etc/undistro/trusted-keys"
    keys.mkdir(parents=True)
    shutil.copy(f"{key}.pub", keys)
    store = built.store.directory
    try:
        argv = ["keg", "install", "pngcheck", "--from", str(cache), "--root", str(root)]
        assert cli.main([*argv, "--store", store]) == 0
        out = capsys.readouterr().out
        assert out.splitlines() == [f"installed {zlib.path}", f"installed {pngcheck.path}"]
        for keg in (zlib, pngcheck):
            original, copy = Path(keg.path), root / keg.path.lstrip("/")
            assert sorted(p.relative_to(copy) for p in copy.rglob("*")) == sorted(
                p.relative_to(original) for p in original.rglob("*")
            )
        assert (root / pngcheck.path.lstrip("/") / "bin/pngcheck").read_bytes() == (
            Path(pngcheck.path, "bin/pngcheck").read_bytes()
        )
    finally:
        remove_store(str(root / store.lstrip("/")))
