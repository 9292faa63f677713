"""Garbage collection keeps what kept generations reach, through closures."""

from __future__ import annotations

import os
from collections.abc import Callable

import pytest

from undistro.errors import GenerationError
from undistro.kegs.generations import DEFAULT_PROFILE, PROFILES, collect_garbage, store_of
from undistro.kegs.generations import Profile as _Profile

MakeKeg = Callable[..., str]


def profile_of(root: str) -> _Profile:
    return _Profile(os.path.join(root, DEFAULT_PROFILE.lstrip("/")), root=root)


def gc(root: str, **kw: object) -> object:
    from undistro.kegs._gc import profiles_in

    profiles = profiles_in(os.path.join(root, PROFILES.lstrip("/")), root=root)
    return collect_garbage(store_of(root), profiles, **kw)  # type: ignore[arg-type]


def test_gc_keeps_referenced_closures_and_removes_the_rest(root: str, keg: MakeKeg) -> None:
    zlib = keg("zlib", "1.3", {"lib/libz.so": "z"})
    # app refers to zlib only through a byte string in its binary
    app = keg("app", "1", {"bin/app": f"\0{zlib[len(root) :]}/lib/libz.so\0"})
    ssl = keg("ssl", "3", {"lib/libssl.so": "s"})
    curl = keg("curl", "8", {"bin/curl": "c"}, run_deps=(ssl,))
    old = keg("hello", "1.0", {"bin/hello": "1"})
    new = keg("hello", "2.0", {"bin/hello": "2"})
    orphan = keg("orphan", "0", {"bin/orphan": "o"})
    p = profile_of(root)
    p.build_and_switch([old])
    p.build_and_switch([new, app, curl])
    report = gc(root, keep_last=1)
    gone = {os.path.basename(old), os.path.basename(orphan)}
    assert set(report.removed) == gone  # type: ignore[attr-defined]
    for path in (zlib, app, ssl, curl, new):
        assert os.path.isdir(path), path
    for path in (old, orphan):
        assert not os.path.exists(path)
    assert p.numbers() == [2]
    assert not [n for n in os.listdir(store_of(root)) if n.startswith(".gc-")]


def test_gc_keeps_all_generations_by_default_and_dry_run_changes_nothing(
    root: str, keg: MakeKeg
) -> None:
    old = keg("hello", "1.0", {"bin/hello": "1"})
    new = keg("hello", "2.0", {"bin/hello": "2"})
    orphan = keg("orphan", "0", {"bin/orphan": "o"})
    p = profile_of(root)
    p.build_and_switch([old])
    p.build_and_switch([new])
    assert gc(root).removed == [os.path.basename(orphan)]  # type: ignore[attr-defined]
    assert os.path.isdir(old)
    report = gc(root, keep_last=1, dry_run=True)
    assert report.removed == [os.path.basename(old)]  # type: ignore[attr-defined]
    assert report.generations == {p.dir: [1]}  # type: ignore[attr-defined]
    assert os.path.isdir(old) and p.numbers() == [1, 2]


def test_gc_never_removes_the_current_generation(root: str, keg: MakeKeg) -> None:
    one = keg("hello", "1.0", {"bin/hello": "1"})
    two = keg("hello", "2.0", {"bin/hello": "2"})
    p = profile_of(root)
    p.build_and_switch([one])
    p.build_and_switch([two])
    p.rollback()
    gc(root, keep_last=0)
    assert p.numbers() == [1] and os.path.isdir(one) and not os.path.exists(two)
    with open(os.path.join(p.dir, "current", "bin", "hello")) as f:
        assert f.read() == "1"


def test_gc_refuses_a_bad_keep_last(root: str) -> None:
    with pytest.raises(GenerationError, match="--keep-last must be 0 or more"):
        gc(root, keep_last=-1)


def test_profiles_are_all_roots(root: str, keg: MakeKeg) -> None:
    a = keg("a", "1", {"bin/a": "a"})
    b = keg("b", "1", {"bin/b": "b"})
    profile_of(root).build_and_switch([a])
    other = _Profile(os.path.join(root, PROFILES.lstrip("/"), "tools"), root=root)
    other.build_and_switch([b])
    assert gc(root, keep_last=0).removed == []  # type: ignore[attr-defined]


def test_recorded_references_are_trusted_without_scanning(
    root: str, keg: MakeKeg, profile: _Profile
) -> None:
    """The builder records what its scanner found; gc follows that record."""
    dep = keg("zlib", "1.3", {"lib/libz.so": "z"})
    app = keg("app", "1", {"bin/app": "no paths here"}, references=(dep,))
    orphan = keg("orphan", "1", {"bin/orphan": "o"})
    profile.build_and_switch([app])
    report = gc(root)
    assert report.removed == [os.path.basename(orphan)]  # type: ignore[attr-defined]
    assert os.path.isdir(dep)


def test_gc_waits_for_whoever_is_adding_to_the_store(root: str, keg: MakeKeg) -> None:
    import threading

    from undistro.kegs.generations import store_lock

    fresh = keg("fresh", "1", {"bin/fresh": "just installed, not yet in a generation"})
    done = threading.Event()
    with store_lock(store_of(root), exclusive=False):
        worker = threading.Thread(target=lambda: (gc(root), done.set()))
        worker.start()
        assert not done.wait(0.3)
        assert os.path.isdir(fresh)
    worker.join(10)
    assert done.is_set() and not os.path.exists(fresh)


def test_gc_clears_what_killed_installers_builders_and_collectors_left(
    root: str, keg: MakeKeg
) -> None:
    kept = keg("hello", "1", {"bin/hello": "x"})
    store = store_of(root)
    stale_dirs = (
        ".install-99999/half",
        ".gc-" + os.path.basename(kept) + "x/bin",
        ".staging-k1ll3d/opt/undistro/store/x-half-1/bin",
    )
    for stale in stale_dirs:
        os.makedirs(os.path.join(store, stale))
    profile_of(root).build_and_switch([kept])
    gc(root)
    assert sorted(os.listdir(store)) == [".gc.lock", os.path.basename(kept)]
