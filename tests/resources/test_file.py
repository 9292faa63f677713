"""file: pure plans as tables, then real convergence under a temp root."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests.conftest import PolicyDir
from tests.engine.helpers import converge, statuses
from undistro.resources._paths import PathState
from undistro.resources.file import File, Proven, WriteFile


def make(**values: object) -> File:
    res = File.from_table({"path": "/etc/x", **values})
    assert isinstance(res, File)
    return res


def lstat_of(fmt: int, *, mode: int = 0o644, links: int = 1) -> os.stat_result:
    return os.stat_result((fmt | mode, 1, 1, links, 0, 0, 6, 0, 0, 0))


def state(
    kind: str,
    *,
    mode: int = 0o644,
    sha: str | None = None,
    uid: int = 0,
    st: os.stat_result | None = None,
) -> PathState:
    s = PathState("/r/etc/x", kind, mode, uid, 0, st=st)
    s.sha256 = sha
    s.want_uid = 0
    s.want_gid = 0
    return s


HELLO = make(content="hello\n")


@pytest.mark.parametrize(
    ("desired", "current", "expected"),
    [
        (HELLO, state("absent"), ["create file (6 bytes, mode 0644)"]),
        (HELLO, state("file", sha=HELLO.sha256), []),
        (HELLO, state("file", sha="0" * 64), ["update file (6 bytes, mode 0644)"]),
        (
            make(content="hello\n", mode="0600"),
            state("file", sha=HELLO.sha256),
            ["chmod 0644 -> 0600"],
        ),
        (
            make(content="a", mode="0600"),
            state("file", sha="0" * 64),
            ["update file (1 bytes, mode 0600)"],
        ),
        (HELLO, state("symlink"), ["replace symlink with file (6 bytes, mode 0644)"]),
        (HELLO, state("directory"), ["refuse: /r/etc/x is a directory, not a file"]),
        (make(ensure="absent"), state("file"), ["remove file"]),
        (make(ensure="absent"), state("absent"), []),
        (make(), state("file", sha="0" * 64), []),  # no content given: existence only
        (make(), state("absent"), ["create file (0 bytes, mode 0644)"]),
        (HELLO, Proven(os.stat("/"), HELLO.sha256 or ""), []),
        # A second hard link: the file gets its own inode, never a chmod in
        # place (which would change the other name too).
        (
            HELLO,
            state("file", sha=HELLO.sha256, st=lstat_of(stat.S_IFREG, links=2)),
            ["replace file (2 hard links) with its own copy"],
        ),
        (
            make(mode="0600"),
            state("file", st=lstat_of(stat.S_IFREG, links=3)),
            ["replace file (3 hard links) with its own copy"],
        ),
        (make(), state("file", st=lstat_of(stat.S_IFREG, links=2)), []),  # nothing to change
        (
            HELLO,
            state("other", st=lstat_of(stat.S_IFIFO)),
            ["refuse: /r/etc/x is a FIFO, not a file"],
        ),
        (
            HELLO,
            state("other", st=lstat_of(stat.S_IFBLK)),
            ["refuse: /r/etc/x is a block device, not a file"],
        ),
    ],
)
def test_plan_is_a_pure_table(desired: File, current: PathState, expected: list[str]) -> None:
    assert [a.summary for a in desired.plan(current)] == expected


def test_owner_change_plans_a_chown() -> None:
    res = make(content="hello\n", owner="root")
    current = state("file", sha=HELLO.sha256, uid=1000)
    assert [a.summary for a in res.plan(current)] == ["chown root:"]


def test_diff_is_shown_unless_sensitive() -> None:
    current = state("file", sha="0" * 64)
    current.content = b"old\n"
    (write,) = make(content="new\n").plan(current)
    assert isinstance(write, WriteFile)
    diff = write.diff() or ""
    assert "-old" in diff and "+new" in diff
    (secret,) = make(content="new\n", sensitive=True).plan(current)
    assert "new" not in (secret.diff() or "")


def test_converges_content_mode_and_is_then_kept(policy: PolicyDir, root: Path) -> None:
    policy.resources(
        """
        [[file]]
        path = "/etc/app.conf"
        content = "port = 80\\n"
        mode = "0640"
        """
    )
    first = converge(policy, root)
    assert statuses(first) == {"file:/etc/app.conf": "repaired"}
    target = root / "etc/app.conf"
    assert target.read_text() == "port = 80\n"
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert statuses(converge(policy, root)) == {"file:/etc/app.conf": "kept"}

    target.write_text("port = 8080\n")
    assert statuses(converge(policy, root)) == {"file:/etc/app.conf": "repaired"}
    assert target.read_text() == "port = 80\n"

    os.chmod(target, 0o666)
    assert statuses(converge(policy, root)) == {"file:/etc/app.conf": "repaired"}
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_drift_that_keeps_size_and_mtime_of_another_inode_is_seen(
    policy: PolicyDir, root: Path
) -> None:
    policy.resources('[[file]]\npath = "/etc/a"\ncontent = "aaaa"\n')
    converge(policy, root)
    target = root / "etc/a"
    st = target.stat()
    replacement = root / "etc/a.new"
    replacement.write_text("bbbb")
    os.utime(replacement, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.rename(replacement, target)
    assert statuses(converge(policy, root)) == {"file:/etc/a": "repaired"}
    assert target.read_text() == "aaaa"


def test_source_and_template(policy: PolicyDir, root: Path) -> None:
    policy.write("undistro.toml", 'name = "t"\n[vars]\ngreeting = "hi"\n')
    policy.write("files/static.txt", "static\n")
    policy.write("templates/t.j2", "{{ greeting }} {{ who }} on {{ facts.arch }}\n")
    policy.resources(
        """
        [[file]]
        path = "/etc/static"
        source = "static.txt"

        [[file]]
        path = "/etc/templated"
        template = "t.j2"
        vars = { who = "there" }
        """
    )
    converge(policy, root)
    assert (root / "etc/static").read_text() == "static\n"
    assert (root / "etc/templated").read_text() == f"hi there on {os.uname().machine}\n"


def test_absent_removes(policy: PolicyDir, root: Path) -> None:
    (root / "etc").mkdir()
    (root / "etc/old").write_text("x")
    policy.resources('[[file]]\npath = "/etc/old"\nensure = "absent"\n')
    assert statuses(converge(policy, root)) == {"file:/etc/old": "repaired"}
    assert not (root / "etc/old").exists()
    assert statuses(converge(policy, root)) == {"file:/etc/old": "kept"}


def test_directory_in_the_way_fails_and_is_left_alone(policy: PolicyDir, root: Path) -> None:
    (root / "etc/x").mkdir(parents=True)
    policy.resources('[[file]]\npath = "/etc/x"\ncontent = "y"\n')
    summary = converge(policy, root)
    assert statuses(summary) == {"file:/etc/x": "failed"}
    assert "is a directory" in (summary.results["file:/etc/x"].error or "")
    assert (root / "etc/x").is_dir()
