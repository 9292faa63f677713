"""The store is sealed: a build writes only its staging directory, and only a
complete, verified keg takes its final path, by one rename.

Reproductions from issue 9: tree's ``make install`` wrote ``man/man1/tree.1``
into the final store path before failing, after which a build of the same
inputs died with ``OSError: [Errno 39] Directory not empty``; a recipe wrote
``{deps.zlib.prefix}/include/zlib-was-here.h`` into the sealed zlib keg."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from undistro.kegs import RecipeBook, SourceCache, Store, detect, parse_request, resolve

from .conftest import Synthetic, remove_store

RunCli = Callable[..., tuple[int, str, str]]

GOOD = (
    '[build]\nsystem = "commands"\ncommands = [\n'
    '  "mkdir -p {destdir}{prefix}/bin",\n'
    '  "echo tree > {destdir}{prefix}/bin/tree",\n]\n'
)
# Like tree's Makefile: the binary honours DESTDIR, the man page does not.
HALF_DESTDIR = (
    '[build]\nsystem = "commands"\ncommands = [\n'
    '  "mkdir -p {destdir}{prefix}/bin",\n'
    '  "echo tree > {destdir}{prefix}/bin/tree",\n'
    '  "mkdir -p {prefix}/man/man1",\n'
    '  "echo page > {prefix}/man/man1/tree.1",\n]\n'
)
SCRIBBLER = (
    '[dependencies.build]\nzlib = "*"\n\n[build]\nsystem = "commands"\ncommands = [\n'
    '  "echo hi > {deps.zlib.prefix}/include/zlib-was-here.h",\n'
    '  "mkdir -p {destdir}{prefix}/share",\n]\n'
)
ZLIB = (
    '[build]\nsystem = "commands"\ncommands = [\n'
    '  "mkdir -p {destdir}{prefix}/include",\n'
    "  \"echo '#define Z 1' > {destdir}{prefix}/include/zlib.h\",\n]\n"
)


def build_cli(cli: RunCli, syn: Synthetic, name: str, *more: str) -> tuple[int, str, str]:
    return cli(
        "keg", "build", name, "--recipes", syn.recipes, "--cache", syn.cache.directory,
        "--store", syn.store.directory, "--no-gc-root", *more,
    )  # fmt: skip


def final_path(syn: Synthetic, name: str) -> str:
    resolution = resolve([parse_request(name)], RecipeBook([str(syn.recipes)]), detect())
    return syn.builder().plan(resolution)[name].path


def tree_listing(path: str) -> list[tuple[str, str]]:
    """(relative path, content or "dir") of everything under ``path``."""
    out = []
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            out.append(
                (
                    os.path.relpath(full, path),
                    Path(full).read_text() if name in filenames else "dir",
                )
            )
    return sorted(out)


def test_an_install_that_writes_the_final_path_fails_and_adds_nothing(
    synthetic: Synthetic, cli: RunCli
) -> None:
    synthetic.package("tree", HALF_DESTDIR)
    final = final_path(synthetic, "tree")
    code, _out, err = build_cli(cli, synthetic, "tree")
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("undistro: tree 1.0: build failed (exit 1) at `mkdir -p ")
    assert "nothing was added to the store" in line
    log = line.rsplit("log: ", 1)[1]
    assert "Read-only file system" in Path(log).read_text()
    assert not os.path.lexists(final)
    assert synthetic.entries() == []


def test_a_leftover_at_the_final_path_neither_blocks_nor_is_trusted(
    synthetic: Synthetic, cli: RunCli
) -> None:
    synthetic.package("tree", GOOD)
    final = final_path(synthetic, "tree")
    # what the failed build of the issue left: a final path without .keg.json
    os.makedirs(f"{final}/man/man1")
    Path(final, "man/man1/tree.1").write_text("stale\n")
    assert synthetic.store.entries() == []  # not taken for a keg
    code, out, err = build_cli(cli, synthetic, "tree")
    assert code == 0, err
    assert out.startswith(final)
    assert f"removed {final}: left by a build that failed, not a keg" in err
    assert [name for name, _ in tree_listing(final)] == [".keg.json", "bin", "bin/tree"]
    assert Path(final, "bin/tree").read_text() == "tree\n"
    assert synthetic.entries() == [os.path.basename(final)]


def test_an_unisolated_build_that_fails_leaves_nothing_at_the_final_path(
    synthetic: Synthetic, cli: RunCli
) -> None:
    synthetic.package(
        "tree", HALF_DESTDIR.replace('page > {prefix}/man/man1/tree.1",', 'x; exit 3",')
    )
    final = final_path(synthetic, "tree")
    code, _out, err = build_cli(cli, synthetic, "tree", "--no-isolate")
    assert code == 1 and "build failed (exit 3)" in err
    assert not os.path.lexists(final)
    assert synthetic.entries() == []


def test_an_unisolated_build_that_writes_the_final_path_is_refused(
    synthetic: Synthetic, cli: RunCli
) -> None:
    """Unisolated (debugging), the store is writable: a build that wrote its
    final prefix itself is still refused, and what it wrote removed."""
    synthetic.package("tree", HALF_DESTDIR)
    final = final_path(synthetic, "tree")
    code, _out, err = build_cli(cli, synthetic, "tree", "--no-isolate")
    assert code == 1
    assert f"undistro: tree 1.0: the build wrote {final} itself instead of under" in err
    assert not os.path.lexists(final)
    assert synthetic.entries() == []


def test_a_build_cannot_write_into_a_dependency_keg(synthetic: Synthetic, cli: RunCli) -> None:
    synthetic.package("zlib", ZLIB)
    synthetic.package("scribbler", SCRIBBLER)
    code, _out, err = build_cli(cli, synthetic, "zlib")
    assert code == 0, err
    zlib = final_path(synthetic, "zlib")
    before = tree_listing(zlib)
    code, _out, err = build_cli(cli, synthetic, "scribbler")
    assert code == 1
    assert "scribbler 1.0: build failed (exit " in err
    log = Path(err.strip().rsplit("log: ", 1)[1]).read_text()
    assert "zlib-was-here.h: Read-only file system" in log
    assert tree_listing(zlib) == before
    assert synthetic.entries() == [os.path.basename(zlib)]


def test_a_build_running_as_root_cannot_remount_the_store_writable(
    synthetic: Synthetic, cli: RunCli
) -> None:
    """The build is root in its mount namespace; without CAP_SYS_ADMIN it
    cannot undo the read-only mount (the remount succeeded before)."""
    synthetic.package("zlib", ZLIB)
    remount = '"mount -o remount,bind,rw $(dirname {deps.zlib.prefix}) || true",\n  '
    synthetic.package(
        "scribbler", SCRIBBLER.replace("commands = [\n  ", f"commands = [\n  {remount}")
    )
    assert build_cli(cli, synthetic, "zlib")[0] == 0
    zlib = final_path(synthetic, "zlib")
    before = tree_listing(zlib)
    code, _out, err = build_cli(cli, synthetic, "scribbler")
    assert code == 1
    log = Path(err.strip().rsplit("log: ", 1)[1]).read_text()
    assert "(unshare, setpriv)" in log.splitlines()[0]
    assert "permission denied" in log
    assert "zlib-was-here.h: Read-only file system" in log
    assert tree_listing(zlib) == before


@pytest.mark.parametrize("through", ["final path", "root path"])
def test_under_root_neither_path_of_a_dependency_is_writable(
    tmp_path: Path, cli: RunCli, through: str
) -> None:
    root = tmp_path / "root"
    syn = Synthetic(
        tmp_path / "recipes", SourceCache(str(tmp_path / "cache")), Store(root=str(root)),
        tmp_path / "logs", tmp_path / "tarballs",
    )  # fmt: skip
    for sub in ("recipes", "cache", "logs", "tarballs"):
        (tmp_path / sub).mkdir()
    syn.package("zlib", ZLIB)
    target = "{deps.zlib.prefix}" if through == "final path" else f"{root}{{deps.zlib.prefix}}"
    syn.package("scribbler", SCRIBBLER.replace("{deps.zlib.prefix}", target))
    try:
        common = ["--recipes", syn.recipes, "--cache", syn.cache.directory, "--root", root]
        code, _out, err = cli("keg", "build", "zlib", *common)
        assert code == 0, err
        zlib = str(root) + final_path(syn, "zlib")
        before = tree_listing(zlib)
        code, _out, err = cli("keg", "build", "scribbler", *common)
        assert code == 1 and "scribbler 1.0: build failed" in err
        assert tree_listing(zlib) == before
        assert [os.path.basename(p) for p in syn.store.entries()] == [os.path.basename(zlib)]
    finally:
        remove_store(str(root / "opt/undistro/store"))


def test_real_tree_needs_its_install_args_and_without_them_adds_nothing(
    example_cache: str, tmp_path: Path
) -> None:
    """tree 2.1.0 from its real tarball: the template alone puts
    its man page at the final prefix (read-only: the build fails, nothing
    is added); the example recipe's install_args (documented) make it a keg."""
    from undistro.errors import BuildError
    from undistro.kegs import Builder

    from .conftest import RECIPES

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    text = (RECIPES / "tree.toml").read_text()
    (recipes / "tree.toml").write_text(
        "\n".join(line for line in text.splitlines() if not line.startswith("install_args"))
    )
    store = Store(str(tmp_path / "store"))
    builder = Builder(store, SourceCache(example_cache), detect(), log_dir=str(tmp_path / "logs"))

    def build(directory: Path) -> str:
        resolution = resolve([parse_request("tree")], RecipeBook([str(directory)]), detect())
        return builder.build(resolution)["tree"].path

    try:
        with pytest.raises(BuildError) as info:
            build(recipes)
        log = Path(str(info.value).rsplit("log: ", 1)[1]).read_text()
        assert "tree-2.1.0': Read-only file system\nmake: *** [Makefile:107: install]" in log
        assert os.listdir(tmp_path / "store") == [".gc.lock"]
        path = build(RECIPES)
        assert "tree v2.1.0" in os.popen(f"{path}/bin/tree --version").read()
        assert Path(path, "share/man/man1/tree.1").is_file()
    finally:
        remove_store(str(tmp_path / "store"))
