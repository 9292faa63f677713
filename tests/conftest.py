"""Shared fixtures: a policy written into a temp dir, a temp root, the CLI."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from undistro.cli import main


class PolicyDir:
    """A policy directory under tmp_path, written file by file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.write("undistro.toml", 'name = "test"\n')

    def write(self, rel: str, text: str) -> Path:
        target = self.path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(textwrap.dedent(text))
        return target

    def resources(self, text: str, rel: str = "policy/main.toml") -> Path:
        return self.write(rel, text)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


@pytest.fixture
def policy(tmp_path: Path) -> PolicyDir:
    return PolicyDir(tmp_path / "policy")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    return path


RunCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> RunCli:
    """Run ``undistro ARGS`` in-process; returns (exit code, stdout, stderr)."""

    def run(*args: str | os.PathLike[str]) -> tuple[int, str, str]:
        try:
            code = main([os.fspath(a) for a in args])
        except SystemExit as exc:  # argparse usage errors
            code = int(exc.code or 0)
        out, err = capsys.readouterr()
        return code, out, err

    return run
