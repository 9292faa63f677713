"""user and group edit the root's account databases atomically."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PolicyDir
from tests.engine.helpers import converge, statuses


def seed(root: Path) -> None:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "group").write_text("root:x:0:\nusers:x:100:\n")
    (etc / "gshadow").write_text("root:*::\nusers:*::\n")


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def test_group_created_with_free_system_gid_then_kept(policy: PolicyDir, root: Path) -> None:
    seed(root)
    policy.resources('[[group]]\nname = "www"\nsystem = true\nmembers = []\n')
    assert statuses(converge(policy, root)) == {"group:www": "repaired"}
    assert "www:x:999:" in lines(root / "etc/group")
    assert "www:!::" in lines(root / "etc/gshadow")
    assert statuses(converge(policy, root)) == {"group:www": "kept"}


def test_user_with_private_group_home_and_supplementary_groups(
    policy: PolicyDir, root: Path
) -> None:
    seed(root)
    policy.resources(
        """
        [[user]]
        name = "ada"
        uid = 1500
        home = "/home/ada"
        manage_home = true
        shell = "/bin/bash"
        comment = "Ada"
        groups = ["users"]
        password = "$6$salt$hash"
        """
    )
    assert statuses(converge(policy, root)) == {"user:ada": "repaired"}
    assert "ada:x:1500:1500:Ada:/home/ada:/bin/bash" in lines(root / "etc/passwd")
    assert "ada:x:1500:" in lines(root / "etc/group")
    assert "users:x:100:ada" in lines(root / "etc/group")
    assert any(line.startswith("ada:$6$salt$hash:") for line in lines(root / "etc/shadow"))
    home = root / "home/ada"
    assert home.is_dir() and home.stat().st_uid == 1500
    assert statuses(converge(policy, root)) == {"user:ada": "kept"}
    assert (root / "etc/shadow").stat().st_mode & 0o777 == 0o640

    # drift: someone changes the shell and drops the membership
    passwd = root / "etc/passwd"
    passwd.write_text(
        passwd.read_text()
        .replace("/bin/bash\n", "/bin/sh\n")
        .replace("root:/root:/bin/sh", "root:/root:/bin/bash")
    )
    group = root / "etc/group"
    group.write_text(group.read_text().replace("users:x:100:ada", "users:x:100:"))
    summary = converge(policy, root)
    assert summary.results["user:ada"].actions == ["shell /bin/sh -> /bin/bash; groups - -> users"]
    assert "ada:x:1500:1500:Ada:/home/ada:/bin/bash" in lines(passwd)
    assert "users:x:100:ada" in lines(group)


def test_user_requires_its_declared_group_first(policy: PolicyDir, root: Path) -> None:
    seed(root)
    policy.resources(
        """
        [[user]]
        name = "svc"
        group = "svc"
        system = true

        [[group]]
        name = "svc"
        gid = 990
        """
    )
    summary = converge(policy, root)
    assert list(summary.results) == ["group:svc", "user:svc"]
    assert "svc:x:999:990::/home/svc:/bin/sh" in lines(root / "etc/passwd")


def test_user_absent_is_removed_everywhere(policy: PolicyDir, root: Path) -> None:
    seed(root)
    (root / "etc/passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\nold:x:1001:100::/home/old:/bin/sh\n"
    )
    (root / "etc/group").write_text("root:x:0:\nusers:x:100:old\n")
    policy.resources('[[user]]\nname = "old"\nensure = "absent"\n')
    converge(policy, root)
    assert not any(line.startswith("old:") for line in lines(root / "etc/passwd"))
    assert "users:x:100:" in lines(root / "etc/group")


def test_file_owned_by_a_user_of_the_same_policy(policy: PolicyDir, root: Path) -> None:
    seed(root)
    policy.resources(
        """
        [[file]]
        path = "/srv/app.conf"
        content = "x"
        owner = "app"
        group = "app"

        [[user]]
        name = "app"
        uid = 1200
        """
    )
    summary = converge(policy, root)
    assert list(summary.results) == ["user:app", "file:/srv/app.conf"]
    st = (root / "srv/app.conf").stat()
    assert (st.st_uid, st.st_gid) == (1200, 1200)


def test_group_plan_repairs_gshadow_alone() -> None:
    from undistro.resources.group import Group, GroupState

    group = Group.from_table({"name": "web"})
    row = ["web", "x", "1000", "alice"]
    assert group.plan(GroupState(row, ["web", "!", "", "alice"])) == []
    for gshadow in (None, ["web", "!", "", ""], ["web", "!", "", "alice,bob"]):
        (action,) = group.plan(GroupState(row, gshadow))
        assert action.summary == "gshadow entry in step with /etc/group"
    absent = Group.from_table({"name": "web", "ensure": "absent"})
    assert absent.plan(GroupState(None, None)) == []
    assert [a.summary for a in absent.plan(GroupState(None, ["web", "!", "", ""]))] == [
        "delete group"
    ]


def test_user_plan_home_defaults() -> None:
    from undistro.resources.user import User

    def makes(**table: object) -> bool:
        return User.from_table({"name": "u", **table}).makes_home

    assert makes(home="/home/u") and makes() and makes(system=True, home="/var/lib/u")
    assert not makes(system=True)
    assert not makes(home="/home/u", manage_home=False)
    assert not makes(home="/nonexistent")
