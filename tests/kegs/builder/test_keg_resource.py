"""The ``[[keg]]`` resource: validation, a pure plan tested as a table of
state → actions, and (where the generations module is present) a real
probe → apply → probe timeline through the engine."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from undistro import cli
from undistro.errors import ValidationError
from undistro.kegs import Store
from undistro.kegs.generations import Profile
from undistro.resources import resource_class
from undistro.resources.keg import Build, Keg, KegState, ProfileChange, Switch

from .conftest import Synthetic, remove_store

S = "/opt/undistro/store/"
LUA53 = S + "a" * 32 + "-lua-5.3.6"
LUA54 = S + "b" * 32 + "-lua-5.4.4"
HELLO = S + "c" * 32 + "-hello-2.10"
ZLIB = S + "d" * 32 + "-zlib-1.2.13"


PROFILE = "/var/lib/undistro/profiles/default"


def keg(**table: object) -> Keg:
    resource = Keg.from_table({"name": "lua", "recipes": "/srv/policy/recipes", **table})
    assert isinstance(resource, Keg)
    return resource


def carrier(
    current: tuple[str, ...],
    replace: dict[str, str | None],
    *,
    to_build: tuple[str, ...] = (),
    others: tuple[str, ...] = (),
) -> KegState:
    """The state the last keg of a profile probes: ``others`` are current
    kegs of packages no [[keg]] names."""
    wanted = tuple(p for p in replace.values() if p is not None)
    change = ProfileChange(
        current=current,
        next=others + wanted,
        replace=tuple(replace.items()),
        to_build=to_build,
        builds=(("builder", "resolution"),) if to_build else (),
    )
    return KegState("lua", replace.get("lua"), "5.4.4", (), change)


def summaries(actions: list[object]) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.summary) for a in actions]  # type: ignore[attr-defined]


def test_registered_and_validated() -> None:
    assert resource_class("keg") is Keg
    assert keg(version="5.4").values["version"] == "5.4"
    assert keg(recipes="site/recipes").values["recipes"] == "site/recipes"
    bad = [
        ({"version": "5..4"}, "version"),
        ({"recipes": "../recipes"}, "recipes"),
        ({"recipes": "/srv/../etc"}, "recipes"),
        ({"variants": ["static"]}, "variants"),
        ({"ensure": "latest"}, "ensure"),
        ({"colour": "blue"}, "colour"),
        ({"store": "/opt/my store"}, "store"),
    ]
    for table, field in bad:
        with pytest.raises(ValidationError) as info:
            keg(**table)
        assert info.value.field == field


SWITCH = f"switch {PROFILE} to a new generation:"
PLANS = [
    pytest.param(carrier((LUA54,), {"lua": LUA54}), [], id="kept"),
    pytest.param(
        carrier((), {"lua": LUA54}), [("Switch", f"{SWITCH} +{LUA54[20:]}")], id="built-not-in"
    ),
    pytest.param(
        carrier((), {"lua": LUA54}, to_build=(ZLIB, LUA54)),
        [("Build", "build zlib-1.2.13, lua-5.4.4"), ("Switch", f"{SWITCH} +{LUA54[20:]}")],
        id="build-then-switch",
    ),
    pytest.param(
        carrier((LUA53,), {"lua": LUA54}),
        [("Switch", f"{SWITCH} -{LUA53[20:]} +{LUA54[20:]}")],
        id="upgrade-replaces-the-old-build",
    ),
    pytest.param(
        carrier((LUA53, LUA54), {"lua": LUA54}),
        [("Switch", f"{SWITCH} -{LUA53[20:]}")],
        id="two-builds-become-one",
    ),
    pytest.param(
        carrier((LUA53, HELLO), {"lua": LUA54, "hello": None}, to_build=(LUA54,)),
        [
            ("Build", "build lua-5.4.4"),
            ("Switch", f"{SWITCH} -{LUA53[20:]} -{HELLO[20:]} +{LUA54[20:]}"),
        ],
        id="the-whole-set-in-one-switch",
    ),
    pytest.param(
        carrier((ZLIB, LUA53), {"lua": LUA53}, others=(ZLIB,)),
        [],
        id="kegs-nobody-names-stay",
    ),
]


@pytest.mark.parametrize(("probed", "expected"), PLANS)
def test_plan_is_a_pure_table(probed: KegState, expected: list[tuple[str, str]]) -> None:
    assert summaries(keg().plan(probed)) == expected


def test_one_build_and_one_switch_for_the_set() -> None:
    build, switch = keg().plan(carrier((LUA53,), {"lua": LUA54, "hello": HELLO}, to_build=(HELLO,)))
    assert isinstance(build, Build) and build.paths == (HELLO,)
    assert isinstance(switch, Switch)
    assert switch.replace == {"lua": LUA54, "hello": HELLO}
    assert switch.hold is build.hold  # the gc lock passes from the build to the switch


def test_only_the_last_keg_of_a_profile_carries_it() -> None:
    lua, hello, tool = keg(), keg(name="hello"), keg(name="tool", profile="/srv/tools")
    resources = {r.id: r for r in (lua, tool, hello)}
    for r in resources.values():
        r.bind({}, resources)
    assert (lua.peers, hello.peers, tool.peers) == ((lua, hello), (lua, hello), (tool,))
    assert [r.carries_profile for r in (lua, hello, tool)] == [False, True, True]
    # the others report their package; the carrier's plan speaks for them
    assert lua.plan(KegState("lua", LUA54, "5.4.4", ())) == []


def test_one_build_of_a_package_per_profile() -> None:
    first, second = keg(), keg(name="lua54", package="lua", version="5.4")
    resources = {first.id: first, second.id: second}
    first.bind({}, resources)
    with pytest.raises(ValidationError) as info:
        second.bind({}, resources)
    assert info.value.field == "package"
    assert "already requested" in str(info.value) and "keg:lua" in str(info.value)


def test_absent_takes_the_package_out() -> None:
    absent = keg(ensure="absent")
    assert absent.plan(carrier((), {"lua": None})) == []
    (switch,) = absent.plan(carrier((LUA53,), {"lua": None}))
    assert isinstance(switch, Switch) and switch.replace == {"lua": None}
    assert switch.summary.endswith(f"-{LUA53[20:]}")


def test_watches_the_profile_and_serialises_with_other_kegs() -> None:
    resource = keg(profile="/var/lib/undistro/profiles/tools")
    assert [(w.kind, w.target) for w in resource.watches()] == [
        ("path", "/var/lib/undistro/profiles/tools/current")
    ]
    assert Keg.lock == "kegs"


# -- through the engine, with real builds and a real profile ---------------------------

SOUP = """\
[variants]
spicy = false

[build]
system = "commands"
commands = [
  "mkdir -p {destdir}{prefix}/bin",
  "echo '#!/bin/sh' > {destdir}{prefix}/bin/soup",
  "echo 'echo {name} {version} spicy={variants.spicy}' >> {destdir}{prefix}/bin/soup",
  "chmod +x {destdir}{prefix}/bin/soup",
]
"""


BROKEN = """\
[build]
system = "commands"
commands = ["echo the oven is cold >&2", "false"]
"""


def test_apply_switches_the_whole_set_once_or_not_at_all(
    synthetic: Synthetic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The policy directory holds the recipes (``recipes/``, the default);
    two kegs changed in one apply make one generation; a failed build in
    the set switches nothing."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.core"])
    for name in ("soup", "salad", "stew"):
        synthetic.package(name, SOUP.replace("/soup", f"/{name}"))
    synthetic.package("broken", BROKEN)
    policy, root = tmp_path, tmp_path / "root"  # synthetic's recipes/ is in tmp_path
    (policy / "policy").mkdir()
    root.mkdir()
    (policy / "undistro.toml").write_text('name = "kegs"\n')
    cache = f'cache = "{synthetic.cache.directory}"\n'
    profile = Profile(str(root / PROFILE.lstrip("/")), root=str(root))

    def want(*kegs: str) -> None:
        tables = [f"[[keg]]\n{cache}{k}\n" for k in kegs]
        (policy / "policy" / "kegs.toml").write_text("".join(tables))

    def apply(ok: bool = True) -> str:
        assert (cli.main(["apply", str(policy), "--root", str(root)]) == 0) is ok
        out, err = capsys.readouterr()
        return out + err

    def run(program: str) -> str:
        path = root / PROFILE.lstrip("/") / "current/bin" / program
        return os.popen(str(path)).read() if path.exists() else "(none)"

    def soup(spicy: str) -> str:
        return f'name = "soup"\nvariants = {{ spicy = {spicy} }}'

    try:
        want(soup("false"), 'name = "salad"')
        assert "1 kept, 1 repaired" in apply()  # salad, the last keg, switches for both
        assert profile.numbers() == [1]
        assert (run("soup"), run("salad")) == ("soup 1.0 spicy=false\n", "salad 1.0 spicy=false\n")
        assert "2 kept, 0 repaired" in apply()

        # two kegs changed in one apply: one new generation, not two
        want(soup("true"), 'name = "salad"\nvariants = { spicy = true }')
        out = apply()
        assert "1 kept, 1 repaired" in out and out.count("switch ") == 1
        assert (profile.numbers(), profile.current_number()) == ([1, 2], 2)
        assert (run("soup"), run("salad")) == ("soup 1.0 spicy=true\n", "salad 1.0 spicy=true\n")

        # stew builds, broken fails: no switch at all, generation 2 stays
        want(soup("false"), 'name = "stew"', 'name = "broken"')
        out = apply(ok=False)
        assert "keg:broken: FAILED" in out and "broken 1.0: build failed (exit 1)" in out
        assert (profile.numbers(), profile.current_number()) == ([1, 2], 2)
        assert (run("soup"), run("stew")) == ("soup 1.0 spicy=true\n", "(none)")
        assert any(p.endswith("-stew-1.0") for p in Store(root=str(root)).entries())

        # taking one out is one more switch; the rest stays
        want(soup("true"), 'name = "salad"\nensure = "absent"')
        assert "1 kept, 1 repaired" in apply()
        assert profile.numbers() == [1, 2, 3]
        assert (run("soup"), run("salad")) == ("soup 1.0 spicy=true\n", "(none)")

        # a recipes directory that is not there: one line, nothing changes
        want('name = "soup"\nrecipes = "kitchen"')
        out = apply(ok=False)
        assert "field 'recipes'" in out and "no recipes directory at" in out
        assert str(policy / "kitchen") in out and profile.numbers() == [1, 2, 3]
        want('name = "soup"\nmirrors = ["../pantry"]')
        out = apply(ok=False)
        assert "field 'mirrors'" in out and "must be relative and stay inside the policy" in out
    finally:
        remove_store(str(root / "opt/undistro/store"))


def test_two_builds_of_one_package_in_a_profile_is_a_policy_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.core"])
    (tmp_path / "policy").mkdir()
    (tmp_path / "recipes").mkdir()
    (tmp_path / "undistro.toml").write_text('name = "kegs"\n')
    (tmp_path / "policy" / "kegs.toml").write_text(
        '[[keg]]\nname = "lua"\nversion = "5.3"\n'
        '[[keg]]\nname = "lua54"\npackage = "lua"\nversion = "5.4"\n'
    )
    root = tmp_path / "root"
    root.mkdir()
    assert cli.main(["plan", str(tmp_path), "--root", str(root)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert "policy/kegs.toml: keg:lua54: field 'package'" in err[0]
    assert "already requested for /var/lib/undistro/profiles/default by keg:lua" in err[0]
    assert os.listdir(root) == []


def test_gc_cannot_take_a_new_keg_between_its_build_and_the_switch(
    synthetic: Synthetic, tmp_path: Path
) -> None:
    from undistro.engine._context import RunContext
    from undistro.kegs import GC_LOCK

    synthetic.package("soup", SOUP)
    root = tmp_path / "root"
    root.mkdir()
    resource = keg(name="soup", recipes=str(synthetic.recipes), cache=synthetic.cache.directory)
    ctx = RunContext(str(root), {}, {})
    build, switch = resource.plan(resource.probe(ctx))
    lock = root / "opt/undistro/store" / GC_LOCK

    def gc_could_start() -> bool:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what gc takes, without waiting
        except BlockingIOError:
            return False
        finally:
            os.close(fd)  # closing drops a lock taken here
        return True

    try:
        assert isinstance(build, Build) and isinstance(switch, Switch)
        build.execute(ctx)
        assert not gc_could_start()  # built, in no generation yet: held
        assert switch.execute(ctx) == "generation 1 is current"
        assert gc_could_start()
    finally:
        remove_store(str(root / "opt/undistro/store"))


def test_apply_after_a_manual_rollback_returns_to_the_policy_s_generation(
    synthetic: Synthetic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 9: after `gen rollback`, the next apply made a new generation
    identical to an existing one. The policy still names the newer set, so
    apply re-converges to it — by switching to the generation that has it.
    Pinning the rollback is a policy change; then apply keeps it."""
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.core", "undistro.commands.gen"])
    synthetic.package("soup", SOUP)
    policy, root = tmp_path, tmp_path / "root"
    (policy / "policy").mkdir()
    root.mkdir()
    (policy / "undistro.toml").write_text('name = "kegs"\n')
    profile = Profile(str(root / PROFILE.lstrip("/")), root=str(root))

    def want(spicy: str) -> None:
        (policy / "policy" / "kegs.toml").write_text(
            f'[[keg]]\nname = "soup"\ncache = "{synthetic.cache.directory}"\n'
            f"variants = {{ spicy = {spicy} }}\n"
        )

    def run(*argv: str) -> str:
        assert cli.main([*argv, "--root", str(root)]) == 0
        out, err = capsys.readouterr()
        return out + err

    try:
        want("false")
        run("apply", str(policy))
        want("true")
        run("apply", str(policy))
        assert (profile.numbers(), profile.current_number()) == ([1, 2], 2)
        assert "from generation 2 to 1" in run("gen", "rollback")
        out = run("apply", str(policy))
        assert f"switch {PROFILE} to generation 2, which has this set: -" in out
        assert "1 repaired" in out
        assert (profile.numbers(), profile.current_number()) == ([1, 2], 2)
        # pinning the rollback: the policy says what generation 1 has
        run("gen", "rollback")
        want("false")
        assert "1 kept, 0 repaired" in run("apply", str(policy))
        assert (profile.numbers(), profile.current_number()) == ([1, 2], 1)
    finally:
        remove_store(str(root / "opt/undistro/store"))
