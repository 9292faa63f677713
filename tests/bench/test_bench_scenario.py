"""The benchmark's scenario generator writes policies each tool accepts.

Timings are never asserted here; these tests only check that the four
policies promise the same N files and that each tool's own parser takes
them (when the tool is installed: bench/setup installs them).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from bench._tools import Tool, Undistro, peers
from bench.scenario import (
    FILE_BYTES,
    WRITERS,
    Layout,
    Scenario,
    drift,
    prepare_root,
    under,
    verify,
)

SMALL = Scenario(3, Layout(files_per_dir=2, files_per_policy_file=2))


def _write(tool: str, tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    prepare_root(SMALL, root)
    return WRITERS[tool](SMALL, tmp_path / "policy", root), root


def test_layout_spreads_files_over_dirs_and_policy_files() -> None:
    big = Scenario(10_000)
    assert len(big.dirs) == 1 + 100
    assert [len(part) for part in big.parts] == [1000] * 10
    assert big.files[-1].path == "/bench/d99/f10000"
    assert all(len(f.content) == FILE_BYTES for f in big.files[:5])


def test_undistro_policy_is_toml_promising_every_file(tmp_path: Path) -> None:
    policy, _ = _write("undistro", tmp_path)
    assert tomllib.loads((policy / "undistro.toml").read_text()) == {"name": "bench"}
    tables = []
    for path in sorted((policy / "policy").glob("*.toml")):
        tables += tomllib.loads(path.read_text())["file"]
    assert len(list((policy / "policy").glob("*.toml"))) == 2
    assert tables == [{"path": f.path, "content": f.content, "mode": "0644"} for f in SMALL.files]


def test_root_starts_with_directories_and_no_files(tmp_path: Path) -> None:
    root = tmp_path / "root"
    prepare_root(SMALL, root)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*")) == [
        "bench",
        "bench/d00",
        "bench/d01",
    ]
    assert len(verify(SMALL, root)) == 3


def test_verify_sees_exactly_the_drifted_file(tmp_path: Path) -> None:
    root = tmp_path / "root"
    prepare_root(SMALL, root)
    for f in SMALL.files:
        under(root, f.path).write_text(f.content)
        under(root, f.path).chmod(0o644)
    assert verify(SMALL, root) == []
    changed = drift(SMALL, root)
    assert verify(SMALL, root) == [f"{changed}: wrong content"]


def test_layout_parse_rejects_bad_text() -> None:
    assert Layout.parse("10:50") == Layout(10, 50)
    for text in ("10", "a:b", "0:5", "5:-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="layout"):
            Layout.parse(text)


def _tools() -> dict[str, Tool]:
    return {"undistro": Undistro.from_command(f"{sys.executable} -m undistro.cli"), **peers()}


@pytest.mark.parametrize("name", sorted(_tools()))
def test_policy_passes_the_tools_own_parser(name: str, tmp_path: Path) -> None:
    """undistro plans it; the peers' parsers (when installed) accept it."""
    tool = _tools()[name]
    program = tool.check_command(tmp_path, tmp_path)[0]
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed (bench/setup installs it)")
    entry, _ = _write(name, tmp_path)
    state = tmp_path / "state"
    tool.prepare(state)
    subprocess.run(
        tool.check_command(entry, state),
        env=tool.env(state),
        check=True,
        capture_output=True,
        timeout=120,
    )
