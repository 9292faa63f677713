from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import PolicyDir
from tests.engine.helpers import converge, statuses


def test_link_created_retargeted_and_kept(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[symlink]]\npath = "/etc/current"\ntarget = "v1"\n')
    assert statuses(converge(policy, root)) == {"symlink:/etc/current": "repaired"}
    assert os.readlink(root / "etc/current") == "v1"
    assert statuses(converge(policy, root)) == {"symlink:/etc/current": "kept"}
    os.unlink(root / "etc/current")
    os.symlink("elsewhere", root / "etc/current")
    assert statuses(converge(policy, root)) == {"symlink:/etc/current": "repaired"}
    assert os.readlink(root / "etc/current") == "v1"


def test_regular_file_replaced_only_with_force(policy: PolicyDir, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/current").write_text("data")
    policy.resources('[[symlink]]\npath = "/etc/current"\ntarget = "v1"\n')
    summary = converge(policy, root)
    assert summary.results["symlink:/etc/current"].status == "failed"
    assert "force = true" in (summary.results["symlink:/etc/current"].error or "")
    assert (root / "etc/current").read_text() == "data"
    policy.resources('[[symlink]]\npath = "/etc/current"\ntarget = "v1"\nforce = true\n')
    assert statuses(converge(policy, root)) == {"symlink:/etc/current": "repaired"}
    assert os.readlink(root / "etc/current") == "v1"


def test_directory_is_never_replaced(policy: PolicyDir, root: Path) -> None:
    (root / "etc/current").mkdir(parents=True)
    policy.resources('[[symlink]]\npath = "/etc/current"\ntarget = "v1"\nforce = true\n')
    assert statuses(converge(policy, root)) == {"symlink:/etc/current": "failed"}
    assert (root / "etc/current").is_dir()


def test_hard_linked_link_is_made_anew_for_an_owner_change(
    policy: PolicyDir, root: Path, tmp_path: Path
) -> None:
    (root / "l").symlink_to("t")
    os.link(root / "l", tmp_path / "other", follow_symlinks=False)
    policy.resources('[[symlink]]\npath = "/l"\ntarget = "t"\nowner = 1234\n')
    assert converge(policy, root).ok
    assert (root / "l").lstat().st_uid == 1234 and (root / "l").lstat().st_nlink == 1
    assert (tmp_path / "other").lstat().st_uid != 1234
