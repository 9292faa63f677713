"""undistro's own keg source: the package tree packed reproducibly, so the
same tree is the same keg and an edited one a new keg."""

from __future__ import annotations

import shutil
from pathlib import Path

from undistro.kegs import SourceCache, load_recipe, write_self_recipe
from undistro.kegs._selfkeg import pack_tree

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "undistro"


def _tree(tmp_path: Path) -> Path:
    tree = tmp_path / "undistro"
    shutil.copytree(PACKAGE, tree, ignore=shutil.ignore_patterns("__pycache__"))
    return tree


def test_the_same_tree_packs_to_the_same_bytes_whatever_its_mtimes(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    first = pack_tree(str(tree), "undistro-0.1.0")
    (tree / "cli.py").touch()
    (tree / "__pycache__").mkdir(exist_ok=True)
    (tree / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"stale")
    assert pack_tree(str(tree), "undistro-0.1.0") == first


def test_an_edited_tree_is_a_new_source_and_recipe(tmp_path: Path) -> None:
    tree = _tree(tmp_path)
    cache = SourceCache(str(tmp_path / "cache"))
    recipe = load_recipe(write_self_recipe(str(tmp_path / "r"), cache, str(tree)))
    before = recipe.source("0.1.0").sha256
    assert cache.verified(before)
    assert {d.name for d in recipe.dependencies} == {"python", "jinja2", "markupsafe"}
    with (tree / "cli.py").open("a") as f:
        f.write("# edited\n")
    after = load_recipe(write_self_recipe(str(tmp_path / "r"), cache, str(tree)))
    assert after.source("0.1.0").sha256 != before
