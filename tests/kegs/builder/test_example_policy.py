"""examples/kegs, applied as a newcomer would: real hello and lua 5.4 built
offline from the example sources into one generation of a fresh root."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from undistro import cli
from undistro.kegs.generations import DEFAULT_PROFILE, Profile

from .conftest import REPO, remove_store


@pytest.mark.slow
def test_example_kegs_policy_applies_in_one_generation(
    example_cache: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(cli, "COMMAND_MODULES", ["undistro.commands.core"])
    policy = REPO / "examples" / "kegs"
    assert (policy / "sources").resolve() == Path(example_cache).resolve()
    try:
        assert cli.main(["apply", str(policy), "--root", str(tmp_path)]) == 0
        assert "1 kept, 1 repaired" in capsys.readouterr().out
        profile = Profile(str(tmp_path / DEFAULT_PROFILE.lstrip("/")), root=str(tmp_path))
        assert profile.numbers() == [1]
        assert sorted(k.name for k in profile.get(1).kegs) == ["hello", "lua"]
        bin_dir = tmp_path / DEFAULT_PROFILE.lstrip("/") / "current/bin"
        hello = subprocess.run([bin_dir / "hello"], capture_output=True, text=True, check=True)
        assert hello.stdout == "Hello, world!\n"
        lua = subprocess.run(
            [bin_dir / "lua", "-e", "print(_VERSION)"], capture_output=True, text=True, check=True
        )
        assert lua.stdout == "Lua 5.4\n"
        assert cli.main(["apply", str(policy), "--root", str(tmp_path)]) == 0
        assert "2 kept, 0 repaired" in capsys.readouterr().out
    finally:
        remove_store(str(tmp_path / "opt/undistro/store"))
