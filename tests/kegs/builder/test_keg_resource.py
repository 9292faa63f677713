"""The ``[[keg]]`` resource: validation, a pure plan tested as a table of
state → actions, and (where the generations module is present) a real
probe → apply → probe timeline through the engine."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from undistro import cli
from undistro.errors import ValidationError
from undistro.kegs import Store
from undistro.resources import resource_class
from undistro.resources.keg import Build, Keg, KegState, Switch

from .conftest import Synthetic, remove_store

S = "/opt/undistro/store/"
LUA53 = S + "a" * 32 + "-lua-5.3.6"
LUA54 = S + "b" * 32 + "-lua-5.4.4"
HELLO = S + "c" * 32 + "-hello-2.10"
ZLIB = S + "d" * 32 + "-zlib-1.2.13"


def keg(**table: object) -> Keg:
    resource = Keg.from_table({"name": "lua", "recipes": "/srv/policy/recipes", **table})
    assert isinstance(resource, Keg)
    return resource


def state(
    want: str | None,
    *,
    built: bool = True,
    to_build: tuple[str, ...] = (),
    same: tuple[str, ...] = (),
) -> KegState:
    return KegState("lua", want, "5.4.4", built, to_build, same, plan=("builder", "res"))


def summaries(actions: list[object]) -> list[tuple[str, str]]:
    return [(type(a).__name__, a.summary) for a in actions]  # type: ignore[attr-defined]


def test_registered_and_validated() -> None:
    assert resource_class("keg") is Keg
    assert keg(version="5.4").values["version"] == "5.4"
    bad = [
        ({"version": "5..4"}, "version"),
        ({"recipes": "recipes"}, "recipes"),
        ({"variants": ["static"]}, "variants"),
        ({"ensure": "latest"}, "ensure"),
        ({"colour": "blue"}, "colour"),
        ({"store": "/opt/my store"}, "store"),
    ]
    for table, field in bad:
        with pytest.raises(ValidationError) as info:
            keg(**table)
        assert info.value.field == field


PLANS = [
    pytest.param(state(LUA54, same=(LUA54,)), [], id="kept"),
    pytest.param(
        state(LUA54),
        [
            (
                "Switch",
                f"switch /var/lib/undistro/profiles/default to a new generation: +{LUA54[20:]}",
            )
        ],
        id="built-not-in-profile",
    ),
    pytest.param(
        state(LUA54, built=False, to_build=(ZLIB, LUA54)),
        [
            ("Build", "build lua 5.4.4 (+1 dependencies)"),
            (
                "Switch",
                f"switch /var/lib/undistro/profiles/default to a new generation: +{LUA54[20:]}",
            ),
        ],
        id="build-then-switch",
    ),
    pytest.param(
        state(LUA54, same=(LUA53,)),
        [
            (
                "Switch",
                "switch /var/lib/undistro/profiles/default to a new generation: "
                f"-{LUA53[20:]} +{LUA54[20:]}",
            )
        ],
        id="upgrade-replaces-the-old-build",
    ),
    pytest.param(
        state(LUA54, same=(LUA53, LUA54)),
        [
            (
                "Switch",
                "switch /var/lib/undistro/profiles/default to a new generation: "
                f"-{LUA53[20:]} -{LUA54[20:]} +{LUA54[20:]}",
            )
        ],
        id="two-builds-become-one",
    ),
]


@pytest.mark.parametrize(("probed", "expected"), PLANS)
def test_plan_is_a_pure_table(probed: KegState, expected: list[tuple[str, str]]) -> None:
    assert summaries(keg().plan(probed)) == expected


def test_plan_builds_then_replaces_this_package_only() -> None:
    build, switch = keg().plan(state(LUA54, built=False, to_build=(LUA54,), same=(LUA53,)))
    assert isinstance(build, Build) and build.paths == (LUA54,)
    assert isinstance(switch, Switch)
    assert (switch.package, switch.add) == ("lua", LUA54)


def test_absent_takes_the_package_out() -> None:
    absent = keg(ensure="absent")
    assert absent.plan(state(None)) == []
    (switch,) = absent.plan(state(None, same=(LUA53,)))
    assert isinstance(switch, Switch) and (switch.package, switch.add) == ("lua", None)
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


def test_apply_builds_and_switches_then_is_kept(
    synthetic: Synthetic,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("undistro.kegs.generations", reason="generations (kegs-gen) not merged")
    pytest.importorskip("undistro.commands.core", reason="the core commands are not here")
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.core"])
    synthetic.package("soup", SOUP)
    synthetic.package("salad", SOUP.replace("/soup", "/salad"))
    policy, root = tmp_path / "policy", tmp_path / "root"
    (policy / "policy").mkdir(parents=True)
    root.mkdir()
    (policy / "undistro.toml").write_text('name = "kegs"\n')
    where = f'recipes = "{synthetic.recipes}"\ncache = "{synthetic.cache.directory}"\n'

    def want(spicy: bool, salad: str = "present") -> None:
        (policy / "policy" / "kegs.toml").write_text(
            f'[[keg]]\nname = "soup"\n{where}variants = {{ spicy = {str(spicy).lower()} }}\n'
            f'[[keg]]\nname = "salad"\n{where}ensure = "{salad}"\n'
        )

    def apply() -> str:
        assert cli.main(["apply", str(policy), "--root", str(root)]) == 0, capsys.readouterr()
        return capsys.readouterr().out

    def run(program: str) -> str:
        path = root / "var/lib/undistro/profiles/default/current/bin" / program
        return os.popen(str(path)).read() if path.exists() else "(none)"

    try:
        want(spicy=False)
        assert "2 repaired" in apply()
        assert (run("soup"), run("salad")) == ("soup 1.0 spicy=false\n", "salad 1.0 spicy=false\n")
        assert "2 kept, 0 repaired" in apply()  # the paired run finds them kept
        want(spicy=True)  # a new variant: a new store path; salad stays in the profile
        assert "1 kept, 1 repaired" in apply()
        assert (run("soup"), run("salad")) == ("soup 1.0 spicy=true\n", "salad 1.0 spicy=false\n")
        want(spicy=True, salad="absent")
        assert "1 kept, 1 repaired" in apply()
        assert (run("soup"), run("salad")) == ("soup 1.0 spicy=true\n", "(none)")
        assert len(Store(root=str(root)).entries()) == 3  # gc decides when the rest goes
    finally:
        remove_store(str(root / "opt/undistro/store"))
