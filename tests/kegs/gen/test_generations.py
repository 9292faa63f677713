"""Profiles and generations through the public API (undistro.kegs.generations)."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest

from undistro.errors import GenerationError
from undistro.kegs.generations import DEFAULT_PROFILE, Profile

MakeKeg = Callable[..., str]


def profile_of(root: str) -> Profile:
    return Profile(os.path.join(root, DEFAULT_PROFILE.lstrip("/")), root=root)


def read(profile: Profile, rel: str) -> str:
    with open(os.path.join(profile.dir, "current", rel)) as f:
        return f.read()


def test_switch_and_rollback(root: str, keg: MakeKeg) -> None:
    h1 = keg("hello", "1.0", {"bin/hello": "hello one"})
    h2 = keg("hello", "2.0", {"bin/hello": "hello two"})
    z = keg("zlib", "1.3", {"lib/libz.so": "z", "include/zlib.h": "h"})
    p = profile_of(root)
    assert p.build_and_switch([h1, z]) == 1
    assert read(p, "bin/hello") == "hello one"
    assert read(p, "include/zlib.h") == "h"
    assert p.build_and_switch([h2, z]) == 2
    assert read(p, "bin/hello") == "hello two"
    assert sorted(p.current()) == sorted([h2, z])
    assert p.rollback() == 1
    assert read(p, "bin/hello") == "hello one"
    p.switch(2)
    assert read(p, "bin/hello") == "hello two"
    assert [(g.number, g.current) for g in p.list()] == [(1, False), (2, True)]
    assert [k.label for k in p.get(1).kegs] == ["hello-1.0", "zlib-1.3"]
    assert p.get(1).kegs[0].store_path.startswith("/opt/undistro/store/")


def test_same_set_again_is_kept(root: str, keg: MakeKeg) -> None:
    h = keg("hello", "1.0", {"bin/hello": "x"})
    p = profile_of(root)
    assert p.build_and_switch([h]) == 1
    assert p.build_and_switch([h, h]) == 1
    assert p.numbers() == [1]


def test_the_set_of_an_older_generation_switches_to_it(root: str, keg: MakeKeg) -> None:
    h1 = keg("hello", "1.0", {"bin/hello": "hello one"})
    h2 = keg("hello", "2.0", {"bin/hello": "hello two"})
    p = profile_of(root)
    assert p.build_and_switch([h1]) == 1
    assert p.build_and_switch([h2]) == 2
    assert p.rollback() == 1
    assert p.build_and_switch([h2]) == 2  # not a third generation identical to 2
    assert p.numbers() == [1, 2] and read(p, "bin/hello") == "hello two"
    assert p.build_and_switch([h1]) == 1
    assert p.numbers() == [1, 2] and p.current_number() == 1


def test_shared_directories_merge_and_single_ones_collapse(root: str, keg: MakeKeg) -> None:
    a = keg("a", "1", {"bin/a": "a", "share/a/doc": "d"})
    b = keg("b", "1", {"bin/b": "b", "lib/libb.so": "l"})
    p = profile_of(root)
    p.build_and_switch([a, b])
    gen = os.path.join(p.dir, "gen-1")
    assert os.path.isdir(os.path.join(gen, "bin")) and not os.path.islink(os.path.join(gen, "bin"))
    assert sorted(os.listdir(os.path.join(gen, "bin"))) == ["a", "b"]
    assert os.path.islink(os.path.join(gen, "share"))
    assert os.path.islink(os.path.join(gen, "lib"))
    assert not os.path.isabs(os.readlink(os.path.join(gen, "bin", "a")))


def test_tree_stays_valid_when_the_root_moves(root: str, keg: MakeKeg, tmp_path: object) -> None:
    """Relative links: a prepared root is still valid as an image elsewhere."""
    p = profile_of(root)
    p.build_and_switch([keg("hello", "1.0", {"bin/hello": "moved"})])
    moved = os.path.join(str(tmp_path), "image")
    shutil.copytree(root, moved, symlinks=True)
    shutil.rmtree(root)
    assert read(profile_of(moved), "bin/hello") == "moved"


def test_conflicting_files_are_rejected_naming_both(root: str, keg: MakeKeg) -> None:
    a = keg("gawk", "5.2", {"bin/awk": "gawk"})
    b = keg("mawk", "1.3", {"bin/awk": "mawk"})
    p = profile_of(root)
    p.build_and_switch([a])
    with pytest.raises(GenerationError, match=r"bin/awk: provided by both gawk-5.2 and mawk-1.3"):
        p.build_and_switch([a, b])
    assert p.numbers() == [1] and p.current_number() == 1
    assert sorted(os.listdir(p.dir)) == [".lock", "current", "gen-1"]


@pytest.mark.parametrize("bad", ["missing", "not-a-keg", "missing-dep"])
def test_nothing_changes_if_a_keg_is_unusable(root: str, keg: MakeKeg, bad: str) -> None:
    good = keg("hello", "1.0", {"bin/hello": "x"})
    p = profile_of(root)
    p.build_and_switch([good])
    store = os.path.dirname(good)
    if bad == "missing":
        other = os.path.join(store, "0" * 32 + "-gone-1")
    elif bad == "not-a-keg":
        other = os.path.join(store, "junk")
        os.mkdir(other)
    else:
        dep = keg("zlib", "1.3", {"lib/libz.so": "z"})
        other = keg("app", "1", {"bin/app": "x"}, run_deps=(dep,))
        shutil.rmtree(dep)
    with pytest.raises(GenerationError, match="cannot build a generation"):
        p.build_and_switch([good, other])
    assert p.numbers() == [1] and p.current() == [good]


def test_store_hash_reference_must_be_present(root: str, keg: MakeKeg) -> None:
    """A file that embeds another keg's store path pulls it into the closure."""
    dep = keg("zlib", "1.3", {"lib/libz.so": "z"})
    app = keg("app", "1", {"bin/app": f"rpath={dep.split(root)[1]}/lib\0"})
    p = profile_of(root)
    assert p.build_and_switch([app]) == 1
    shutil.rmtree(dep)
    zlib_hash = os.path.basename(dep)[:32]
    with pytest.raises(GenerationError, match=f"needs /opt/undistro/store/{zlib_hash}-"):
        p.build_and_switch([app, keg("hello", "1", {"bin/hello": "x"})])


def test_bad_numbers_are_one_line_errors(root: str, keg: MakeKeg) -> None:
    p = profile_of(root)
    with pytest.raises(GenerationError, match="no profile at"):
        p.switch(1)
    p.build_and_switch([keg("hello", "1.0", {"bin/hello": "x"})])
    with pytest.raises(GenerationError, match=r"^no generation 9 in .* \(have 1\)$"):
        p.switch(9)
    with pytest.raises(GenerationError, match="no generation before 1"):
        p.rollback()
    with pytest.raises(GenerationError, match="no generation 0"):
        p.diff(0, 1)
    assert p.current_number() == 1


def test_diff_by_name_and_version(root: str, keg: MakeKeg) -> None:
    h1 = keg("hello", "1.0", {"bin/hello": "1"})
    h2 = keg("hello", "2.0", {"bin/hello": "2"})
    z = keg("zlib", "1.3", {"lib/z": "z"})
    lua = keg("lua", "5.4", {"bin/lua5.4": "l"})
    p = profile_of(root)
    p.build_and_switch([h1, z])
    p.build_and_switch([h2, lua])
    d = p.diff(1, 2)
    assert [k.label for k in d.added] == ["lua-5.4"]
    assert [k.label for k in d.removed] == ["zlib-1.3"]
    assert [(a.label, b.label) for a, b in d.changed] == [("hello-1.0", "hello-2.0")]
    same = p.diff(2, 2)
    assert not (same.added or same.removed or same.changed)


def test_switch_refuses_a_generation_whose_kegs_are_gone(root: str, keg: MakeKeg) -> None:
    h1 = keg("hello", "1.0", {"bin/hello": "1"})
    h2 = keg("hello", "2.0", {"bin/hello": "2"})
    p = profile_of(root)
    p.build_and_switch([h1])
    p.build_and_switch([h2])
    shutil.rmtree(h1)
    with pytest.raises(GenerationError, match=r"generation 1: .*hello-1\.0 is gone"):
        p.switch(1)
    with pytest.raises(GenerationError, match=r"generation 1: .*hello-1\.0 is gone"):
        p.rollback()
    assert p.current_number() == 2
