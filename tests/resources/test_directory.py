from __future__ import annotations

import stat
from pathlib import Path

from tests.conftest import PolicyDir
from tests.engine.helpers import converge, statuses
from undistro.resources._paths import PathState
from undistro.resources.directory import Directory


def test_plan_table() -> None:
    d = Directory.from_table({"path": "/srv", "mode": "0750"})
    assert [a.summary for a in d.plan(PathState("/r/srv", "absent"))] == [
        "create directory (mode 0750)"
    ]
    assert [a.summary for a in d.plan(PathState("/r/srv", "directory", 0o755, 0, 0))] == [
        "chmod 0755 -> 0750"
    ]
    assert [a.summary for a in d.plan(PathState("/r/srv", "file", 0o644, 0, 0))] == [
        "refuse: /r/srv is a file, not a directory"
    ]


def test_creates_with_parents_and_exact_mode(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[directory]]\npath = "/srv/app/data"\nmode = "0700"\n')
    assert statuses(converge(policy, root)) == {"directory:/srv/app/data": "repaired"}
    assert stat.S_IMODE((root / "srv/app/data").stat().st_mode) == 0o700
    assert statuses(converge(policy, root)) == {"directory:/srv/app/data": "kept"}


def test_purge_removes_only_unmanaged_entries(policy: PolicyDir, root: Path) -> None:
    confd = root / "etc/app/conf.d"
    confd.mkdir(parents=True)
    (confd / "stray.conf").write_text("x")
    (confd / "strays").mkdir()
    (confd / "strays/deep").write_text("x")
    policy.resources(
        """
        [[directory]]
        path = "/etc/app/conf.d"
        purge = true

        [[file]]
        path = "/etc/app/conf.d/10-main.conf"
        content = "main\\n"

        [[directory]]
        path = "/etc/app/conf.d/sub"
        """
    )
    summary = converge(policy, root)
    assert summary.results["directory:/etc/app/conf.d"].status == "repaired"
    assert sorted(p.name for p in confd.iterdir()) == ["10-main.conf", "sub"]
    assert statuses(converge(policy, root))["directory:/etc/app/conf.d"] == "kept"


def test_absent_directory_is_removed_with_its_content(policy: PolicyDir, root: Path) -> None:
    (root / "old/deep").mkdir(parents=True)
    policy.resources('[[directory]]\npath = "/old"\nensure = "absent"\n')
    converge(policy, root)
    assert not (root / "old").exists()


def test_bind_guards_every_declared_directory_above_a_path() -> None:
    from undistro.resources.file import File

    res = File.from_table({"path": "/etc/app/conf.d/x.conf", "content": ""})
    managed = {
        "/etc": "directory:/etc",
        "/etc/app/conf.d": "directory:/etc/app/conf.d",
        "/etc/app": "symlink:/etc/app",  # a declared link is followed (in the root)
        "/etc/app/conf.d/x.conf": "file:/etc/app/conf.d/x.conf",
    }
    res.bind(managed, {})
    assert sorted(res.guard) == ["/etc", "/etc/app/conf.d"]


def test_purge_never_lists_through_a_link_that_replaced_it(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[directory]]\npath = "/etc/app"\npurge = true\n')
    assert converge(policy, root).ok
    (root / "keep").mkdir()
    (root / "keep" / "precious").write_text("x")
    (root / "etc" / "app").rmdir()
    (root / "etc" / "app").symlink_to("/keep")
    summary = converge(policy, root)
    assert statuses(summary) == {"directory:/etc/app": "failed"}
    assert (root / "keep" / "precious").exists()
