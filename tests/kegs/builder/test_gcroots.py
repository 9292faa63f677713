"""A keg ``keg build`` made is kept by a gc root until the user drops it.

Reproduction from issue 9: ``gc`` with no generations deleted a keg built a
minute earlier without a word. Now ``keg build`` leaves
``ROOT/var/lib/undistro/gcroots/<hash>-<name>-<version>`` (like nix-build's
``result``), gc keeps it and says why, and ``keg unroot`` lets it go."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from undistro.kegs import SourceCache, Store

from .conftest import Synthetic, remove_store

RunCli = Callable[..., tuple[int, str, str]]

SOUP = """\
[variants]
flavour = { default = "plain", values = ["plain", "spicy"] }

[build]
system = "commands"
commands = ["mkdir -p {destdir}{prefix}/share", "echo {variants.flavour} > {destdir}{prefix}/share/f"]
"""


@pytest.fixture
def image(tmp_path: Path) -> Iterator[tuple[Synthetic, Path]]:
    root = tmp_path / "img"  # not created: keg build --root makes it
    for sub in ("recipes", "cache", "logs", "tarballs"):
        (tmp_path / sub).mkdir()
    syn = Synthetic(
        tmp_path / "recipes", SourceCache(str(tmp_path / "cache")), Store(root=str(root)),
        tmp_path / "logs", tmp_path / "tarballs",
    )  # fmt: skip
    syn.package("soup", SOUP)
    try:
        yield syn, root
    finally:
        remove_store(str(root / "opt/undistro/store"))


def build(cli: RunCli, syn: Synthetic, root: Path, *more: str) -> tuple[int, str, str]:
    return cli(
        "keg", "build", "soup", "--recipes", syn.recipes, "--cache", syn.cache.directory,
        "--root", root, *more,
    )  # fmt: skip


def test_a_built_keg_survives_gc_until_it_is_unrooted(
    image: tuple[Synthetic, Path], cli: RunCli
) -> None:
    syn, root = image
    assert not root.exists()
    code, out, err = build(cli, syn, root)
    assert code == 0, err
    path = out.split()[0]
    base = os.path.basename(path)
    link = root / "var/lib/undistro/gcroots" / base
    assert os.readlink(link) == path
    assert "keep these from `undistro gc`; drop one with `undistro keg unroot NAME`" in err
    assert cli("keg", "roots", "--root", root)[1] == f"{base}  -> {path}\n"

    code, out, _ = cli("gc", "--root", root)
    assert code == 0
    assert out.splitlines() == [
        f"kept {path}: gc root /var/lib/undistro/gcroots/{base}",
        "removed 0 store paths (0.0 kB), kept 1 (1 by gc roots)",
    ]
    assert syn.store.entries() == [path]

    code, out, _ = cli("keg", "unroot", "soup", "--root", root)
    assert code == 0 and out == f"dropped the gc root of {base}; `undistro gc` may now remove it\n"
    assert not os.path.lexists(link)
    code, out, _ = cli("gc", "--dry-run", "--root", root)
    assert code == 0 and out.splitlines()[0] == f"would remove {path}"
    assert syn.store.entries() == [path]
    code, out, _ = cli("gc", "--root", root)
    assert code == 0 and out.splitlines()[0] == f"removed {path}"
    assert out.splitlines()[-1].startswith("removed 1 store paths (")
    assert syn.store.entries() == []


def test_no_gc_root_when_asked_and_gc_names_what_it_removes(
    image: tuple[Synthetic, Path], cli: RunCli
) -> None:
    syn, root = image
    code, out, err = build(cli, syn, root, "--no-gc-root")
    assert code == 0 and "gc root" not in err
    path = out.split()[0]
    assert cli("keg", "roots", "--root", root)[1] == ""
    code, out, _ = cli("gc", "--root", root)
    assert out.splitlines()[0] == f"removed {path}"


def test_unroot_refuses_what_it_cannot_tell_apart(
    image: tuple[Synthetic, Path], cli: RunCli
) -> None:
    syn, root = image
    plain = build(cli, syn, root)[1].split()[0]
    spicy = build(cli, syn, root, "--variant", "flavour=spicy")[1].split()[0]
    bases = sorted(os.path.basename(p) for p in (plain, spicy))
    code, out, err = cli("keg", "unroot", "soup", "--root", root)
    assert (code, out) == (1, "")
    assert err == (
        f"undistro: 'soup' matches 2 gc roots: {bases[0]}, {bases[1]}; give one of them\n"
    )
    code, _, err = cli("keg", "unroot", "stew", "--root", root)
    assert code == 1 and err.startswith("undistro: no gc root matches 'stew' in ")
    assert cli("keg", "unroot", spicy, "--root", root)[0] == 0  # by store path
    assert cli("keg", "roots", "--root", root)[1].split()[0] == os.path.basename(plain)
    assert len(syn.store.entries()) == 2


def test_a_root_whose_keg_is_gone_is_reported_not_fatal(
    image: tuple[Synthetic, Path], cli: RunCli
) -> None:
    syn, root = image
    path = build(cli, syn, root)[1].split()[0]
    remove_store(str(root) + path)  # someone removed the keg by hand
    code, out, _ = cli("gc", "--root", root)
    assert code == 0
    base = os.path.basename(path)
    assert f"gc root /var/lib/undistro/gcroots/{base}: its keg is gone" in out


def test_keg_build_root_that_is_a_file_is_one_line(tmp_path: Path, cli: RunCli) -> None:
    (tmp_path / "file").write_text("")
    code, out, err = cli("keg", "build", "soup", "--recipes", tmp_path, "--root", tmp_path / "file")
    assert (code, out) == (2, "")
    assert err == f"undistro: --root {tmp_path / 'file'}: not a directory\n"


def test_roots_of_another_store_are_left_to_that_store_s_gc(
    image: tuple[Synthetic, Path], cli: RunCli
) -> None:
    syn, root = image
    other = "/opt/other-store"
    code, out, err = build(cli, syn, root, "--store", other)
    assert code == 0, err
    path = out.split()[0]
    assert path.startswith(f"{other}/")
    try:
        code, out, _ = cli("gc", "--root", root)  # the default store: not its root
        assert out == "removed 0 store paths (0.0 kB), kept 0\n"
        code, out, _ = cli("gc", "--root", root, "--store", other)
        assert (
            out.splitlines()[0]
            == f"kept {path}: gc root /var/lib/undistro/gcroots/{os.path.basename(path)}"
        )
    finally:
        remove_store(f"{root}{other}")
