"""The gen, gc and keg pack/install/keygen commands, through undistro.cli.main."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

import pytest

from undistro.cli import main
from undistro.commands import gen as gen_cmd
from undistro.commands import kegs as kegs_cmd
from undistro.kegs import _closure, _gcroots, _generations, _signing
from undistro.kegs.generations import Profile

MakeKeg = Callable[..., str]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_constants_agree_with_the_library() -> None:
    assert gen_cmd.PROFILES == _generations.PROFILES
    assert gen_cmd.GCROOTS == kegs_cmd.GCROOTS == _gcroots.GCROOTS
    assert gen_cmd.STORE == _closure.DEFAULT_STORE
    assert gen_cmd.TRUSTED_KEYS == _signing.TRUSTED_KEYS_DIR


def test_gen_commands(
    root: str, keg: MakeKeg, profile: Profile, capsys: pytest.CaptureFixture[str]
) -> None:
    one = keg("hello", "1.0", {"bin/hello": "1"})
    two = keg("hello", "2.0", {"bin/hello": "2"})
    lua = keg("lua", "5.4", {"bin/lua5.4": "l"})
    profile.build_and_switch([one])
    profile.build_and_switch([two, lua])
    code, out, _ = run(capsys, "gen", "list", "--root", root)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("     1  ") and lines[0].endswith("hello-1.0")
    assert lines[1].startswith("*    2  ") and lines[1].endswith("hello-2.0 lua-5.4")
    assert run(capsys, "gen", "diff", "1", "2", "--root", root)[1] == (
        "+ lua-5.4\n~ hello 1.0 -> 2.0\n"
    )
    code, out, _ = run(capsys, "gen", "rollback", "--root", root)
    assert code == 0 and "from generation 2 to 1" in out
    assert profile.current() == [one]
    assert run(capsys, "gen", "switch", "2", "--root", root)[0] == 0
    assert profile.current_number() == 2
    code, out, _ = run(capsys, "gc", "--keep-last", "1", "--dry-run", "--root", root)
    assert code == 0 and "would remove generations 1 of" in out and os.path.isdir(one)
    code, out, _ = run(capsys, "gc", "--keep-last", "1", "--root", root)
    assert code == 0 and f"removed /opt/undistro/store/{os.path.basename(one)}" in out
    assert not os.path.exists(one) and os.path.isdir(two)


@pytest.mark.parametrize(
    ("argv", "code", "message"),
    [
        (["gen", "switch", "9"], 1, "undistro: no generation 9 in "),
        (["gen", "switch", "x"], 2, "undistro: a generation is a number from 1 up, got 'x'"),
        (["gen", "switch", "0"], 2, "undistro: a generation is a number from 1 up, got '0'"),
        (["gen", "diff", "1", "-1"], 2, "undistro: a generation is a number from 1 up"),
        (["gen", "rollback"], 1, "undistro: no generation before 1 to roll back to"),
        (["gc", "--keep-last", "-1"], 1, "undistro: --keep-last must be 0 or more, got -1"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    root: str,
    keg: MakeKeg,
    profile: Profile,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
    code: int,
    message: str,
) -> None:
    profile.build_and_switch([keg("hello", "1.0", {"bin/hello": "1"})])
    before = sorted(os.listdir(profile.dir))
    got, _out, err = run(capsys, *argv, "--root", root)
    assert got == code
    assert err.startswith(message) and err.count("\n") == 1, err
    assert sorted(os.listdir(profile.dir)) == before and profile.current_number() == 1


def test_keygen_pack_install_between_roots(
    root: str, keg: MakeKeg, tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    base = str(tmp_path)
    key = os.path.join(base, "cache.key")
    cache = os.path.join(base, "cache")
    root2 = os.path.join(base, "root2")
    hello = keg("hello", "2.12", {"bin/hello": "hi"})
    code, out, _ = run(capsys, "keg", "keygen", "--out", key)
    assert code == 0 and "undistro-ed25519-secret" not in out
    code, out, _ = run(capsys, "keg", "pack", hello, "--key", key, "--out", cache)
    assert code == 0 and out.startswith(f"packed {os.path.basename(hello)}")

    code, _, err = run(capsys, "keg", "install", "hello", "--from", cache, "--root", root2)
    assert code == 1 and err == (
        f"undistro: {os.path.basename(hello)}.manifest.json: no trusted keys configured "
        "(see --trusted-key)\n"
    )
    assert not os.path.exists(os.path.join(root2, "opt/undistro/store", os.path.basename(hello)))

    keys = os.path.join(root2, "etc/undistro/trusted-keys")
    os.makedirs(keys)
    shutil.copy(f"{key}.pub", keys)
    code, out, _ = run(capsys, "keg", "install", "hello", "--from", cache, "--root", root2)
    assert code == 0 and out == f"installed /opt/undistro/store/{os.path.basename(hello)}\n"
    code, out, _ = run(capsys, "keg", "install", "hello", "--from", cache, "--root", root2)
    assert code == 0 and "already in" in out


def test_gc_and_list_on_an_empty_root_create_nothing(
    tmp_path: object, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = os.path.join(str(tmp_path), "empty")
    os.mkdir(empty)
    assert run(capsys, "gc", "--root", empty)[1] == "removed 0 store paths (0.0 kB), kept 0\n"
    assert run(capsys, "gen", "list", "--root", empty)[1].startswith("no generations in ")
    assert os.listdir(empty) == []
