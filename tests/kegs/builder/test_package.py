"""The public surface of undistro.kegs, and the command group it shares."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

import undistro.kegs as kegs
from undistro.commands._groups import command_group


def test_every_public_name_resolves_and_nothing_private_leaks() -> None:
    assert sorted(kegs.__all__) == sorted(kegs._EXPORTS)
    for name in kegs.__all__:
        value = getattr(kegs, name)
        assert getattr(value, "__module__", "undistro.kegs._").startswith("undistro.kegs._")
    with pytest.raises(AttributeError):
        _ = kegs.Nonexistent  # type: ignore[attr-defined]


def test_importing_the_package_loads_none_of_the_machinery() -> None:
    code = (
        "import sys, undistro.kegs; "
        "print(sorted(m for m in ('tarfile', 'urllib.request', 'packaging', 'resolvelib') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_two_modules_add_verbs_to_one_group() -> None:
    parser = argparse.ArgumentParser(prog="undistro")
    sub = parser.add_subparsers()
    first = command_group(sub, "keg", "kegs", "Kegs.")
    first.add_parser("build").set_defaults(func=lambda a: 11)
    second = command_group(sub, "keg", "kegs", "Kegs.")
    second.add_parser("pack").set_defaults(func=lambda a: 22)
    assert second is first
    for verb, code in (("build", 11), ("pack", 22)):
        args = parser.parse_args(["keg", verb])
        assert args.func(args) == code
    bare = parser.parse_args(["keg"])
    assert bare.func(bare) == 2
