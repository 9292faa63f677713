"""Accounts edited by undistro pass the shadow suite's own checkers.

``pwck -r`` and ``grpck -r`` run as real processes with ``-R ROOT``: they
chroot, so the homes, shells and members they look up are the root's. Given
the root's files as arguments instead, both still resolve homes and users on
the host (``group web: no user alice``): only ``pwck -r -q FILES`` (no home
checks) is usable that way, and is run too. The root starts
as a minimal Debian 12 (base-passwd's accounts, shadow files as debootstrap
leaves them) that both checkers pass, so any complaint is ours.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PolicyDir, RunCli

# /usr/share/base-passwd/{passwd,group}.master of Debian 12, passwords "x".
PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
games:x:5:60:games:/usr/games:/usr/sbin/nologin
man:x:6:12:man:/var/cache/man:/usr/sbin/nologin
mail:x:8:8:mail:/var/mail:/usr/sbin/nologin
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
backup:x:34:34:backup:/var/backups:/usr/sbin/nologin
_apt:x:42:65534::/nonexistent:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
"""
GROUPS = (
    "root:0 daemon:1 bin:2 sys:3 adm:4 tty:5 disk:6 lp:7 mail:8 man:12 proxy:13 kmem:15 "
    "dialout:20 cdrom:24 sudo:27 audio:29 www-data:33 backup:34 operator:37 shadow:42 "
    "utmp:43 video:44 plugdev:46 staff:50 games:60 users:100 nogroup:65534"
)
LOGIN_DEFS = "UID_MIN 1000\nUID_MAX 60000\nGID_MIN 1000\nGID_MAX 60000\nNONEXISTENT /nonexistent\n"

ISSUE_POLICY = """
[[group]]
name = "web"

[[group]]
name = "ops"
gid = 2001

[[user]]
name = "alice"
groups = ["web", "ops"]
home = "/home/alice"

[[user]]
name = "svc"
system = true
"""


@pytest.fixture(autouse=True)
def _checkers() -> None:
    if not (shutil.which("pwck") and shutil.which("grpck")):
        pytest.skip("passwd (pwck, grpck) not installed")


def debian_root(root: Path, *, gshadow: bool = True, shadow_group: bool = True) -> Path:
    etc = root / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(PASSWD)
    names = [entry.split(":") for entry in GROUPS.split()]
    if not shadow_group:
        names = [n for n in names if n[0] != "shadow"]
    (etc / "group").write_text("".join(f"{n}:x:{gid}:\n" for n, gid in names))
    users = [line.split(":") for line in PASSWD.splitlines()]
    (etc / "shadow").write_text("".join(f"{u[0]}:*:19500:0:99999:7:::\n" for u in users))
    if gshadow:
        (etc / "gshadow").write_text("".join(f"{n}:*::\n" for n, _ in names))
    for name in ("shadow", "gshadow"):
        if (etc / name).exists():
            os.chmod(etc / name, 0o640)
            os.chown(etc / name, 0, 42 if shadow_group else 0)
    (etc / "login.defs").write_text(LOGIN_DEFS)
    for user in users:
        if user[5] != "/nonexistent":
            (root / user[5].lstrip("/")).mkdir(parents=True, exist_ok=True)
    for program in {u[6] for u in users} | {"/bin/sh"}:  # useradd's default shell
        shell = root / program.lstrip("/")
        shell.parent.mkdir(parents=True, exist_ok=True)
        shell.write_text("")
        shell.chmod(0o755)
    return root


def check(root: Path) -> list[str]:
    """Every complaint of pwck -r and grpck -r about the root's accounts."""
    complaints = []
    for argv in (
        ["pwck", "-r", "-R", str(root)],
        ["grpck", "-r", "-R", str(root)],
        # The files as arguments: -q keeps pwck off the host's homes.
        ["pwck", "-r", "-q", str(root / "etc/passwd"), str(root / "etc/shadow")],
    ):
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        out = [line for line in (proc.stdout + proc.stderr).splitlines() if line]
        out = [line for line in out if not line.endswith(": no changes")]
        if proc.returncode != 0 or out:
            complaints.append(f"{' '.join(argv[:2])} (exit {proc.returncode}): {out}")
    return complaints


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def summary(out: str) -> str:
    return next(line for line in out.splitlines() if "resources checked" in line)


def test_seed_root_is_clean_and_a_broken_one_is_not(root: Path) -> None:
    """The baseline: without it, a clean check after apply proves nothing."""
    debian_root(root)
    assert check(root) == []
    with (root / "etc/group").open("a") as f:
        f.write("web:x:1000:alice\n")
    complaints = check(root)
    assert any("no matching group file entry in" in c for c in complaints), complaints


def test_issue_policy_passes_pwck_and_grpck(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    debian_root(root)
    assert check(root) == []
    policy.resources(ISSUE_POLICY)
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert check(root) == []
    gshadow = lines(root / "etc/gshadow")
    assert {"web:!::alice", "ops:!::alice", "alice:!::", "svc:!::"} <= set(gshadow)
    assert "ops:x:2001:alice" in lines(root / "etc/group")
    alice = next(line.split(":") for line in lines(root / "etc/passwd") if line[:6] == "alice:")
    home = (root / "home/alice").stat()
    assert (home.st_uid, home.st_gid) == (int(alice[2]), int(alice[3]))
    assert stat.S_IMODE(home.st_mode) == 0o700 and stat.S_ISDIR(home.st_mode)
    assert not (root / "home/svc").exists()  # a system user gets no home unasked
    for name in ("shadow", "gshadow"):
        st = (root / "etc" / name).stat()
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, 42), name

    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 0 and "4 kept, 0 repaired" in summary(out), out


def test_removal_leaves_the_checkers_clean(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    debian_root(root)
    policy.resources(ISSUE_POLICY)
    assert cli("apply", policy, "--root", root)[0] == 0
    policy.resources(
        """
        [[group]]
        name = "web"
        ensure = "absent"

        [[user]]
        name = "alice"
        ensure = "absent"

        [[user]]
        name = "svc"
        system = true
        """
    )
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert check(root) == []
    gshadow = lines(root / "etc/gshadow")
    assert not any(line.startswith("web:") for line in gshadow)
    assert "ops:!::" in gshadow  # alice's membership went with her
    assert not any(line.startswith("alice:") for line in lines(root / "etc/passwd"))
    assert (root / "home/alice").is_dir()  # a home is data: never removed
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 0 and "3 kept, 0 repaired" in summary(out), out


def test_gshadow_administrators_and_password_are_kept(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    debian_root(root)
    gshadow = root / "etc/gshadow"
    gshadow.write_text(gshadow.read_text().replace("staff:*::\n", "staff:$6$s$h:root:\n"))
    policy.resources('[[user]]\nname = "alice"\ngroups = ["staff"]\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert "staff:$6$s$h:root:alice" in lines(gshadow)
    assert check(root) == []
    assert (root / "home/alice").is_dir()  # a person's default home is made too


def test_drifted_gshadow_is_repaired(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    """What the issue's machine looked like after the old code ran."""
    debian_root(root)
    policy.resources(ISSUE_POLICY)
    assert cli("apply", policy, "--root", root)[0] == 0
    gshadow = root / "etc/gshadow"
    gshadow.write_text(
        "".join(
            line + "\n"
            for line in lines(gshadow)
            if not line.startswith(("svc:", "alice:", "ops:"))
        ).replace("web:!::alice", "web:!::")
    )
    assert check(root) != []
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 0, out
    assert "gshadow" in out
    assert check(root) == []


@pytest.mark.parametrize("shadow_group", [True, False])
def test_missing_gshadow_is_created_for_every_group(
    policy: PolicyDir, root: Path, cli: RunCli, shadow_group: bool
) -> None:
    debian_root(root, gshadow=False, shadow_group=shadow_group)
    policy.resources(ISSUE_POLICY)
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    st = (root / "etc/gshadow").stat()
    if shadow_group:
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o640, 0, 42)
    else:
        assert (stat.S_IMODE(st.st_mode), st.st_uid) == (0o600, 0)
    groups = [line.split(":")[0] for line in lines(root / "etc/group")]
    assert [line.split(":")[0] for line in lines(root / "etc/gshadow")] == groups
    assert "root:!::" in lines(root / "etc/gshadow")
    assert check(root) == []


def test_home_mode_from_login_defs_and_skel_without_following_links(
    policy: PolicyDir, root: Path, cli: RunCli, tmp_path: Path
) -> None:
    debian_root(root)
    (root / "etc/login.defs").write_text(LOGIN_DEFS + "HOME_MODE\t0750\n")
    skel = root / "etc/skel"
    (skel / ".config").mkdir(parents=True)
    (skel / ".bashrc").write_text("# rc\n")
    (skel / ".config/app").write_text("x")
    (skel / ".config/app").chmod(0o600)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret\n")
    (skel / "linked-dir").symlink_to(outside)
    (skel / "linked-file").symlink_to(outside / "secret")
    os.mkfifo(skel / "fifo")
    policy.resources('[[user]]\nname = "bob"\nuid = 1500\nhome = "/srv/bob"\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert "create home /srv/bob (mode 0750)" in out
    home = root / "srv/bob"
    assert stat.S_IMODE(home.stat().st_mode) == 0o750
    assert (home / ".bashrc").read_text() == "# rc\n"
    app = (home / ".config/app").stat()
    assert (app.st_uid, app.st_gid, stat.S_IMODE(app.st_mode)) == (1500, 1500, 0o600)
    assert os.readlink(home / "linked-dir") == str(outside)  # a link, not a copy
    assert os.lstat(home / "linked-file").st_uid == 1500
    assert not (home / "fifo").exists()
    assert sorted(p.name for p in root.joinpath("srv").iterdir()) == ["bob"]  # no temp left
    assert check(root) == []


def test_manage_home_false_and_nonexistent_make_no_home(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    debian_root(root)
    policy.resources(
        """
        [[user]]
        name = "carol"
        home = "/home/carol"
        manage_home = false

        [[user]]
        name = "dave"
        home = "/nonexistent"
        """
    )
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert not (root / "home/carol").exists() and not (root / "nonexistent").exists()
    code, out, _ = cli("apply", policy, "--root", root)
    assert "2 kept" in summary(out)


def test_home_managed_by_a_directory_is_left_to_it(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    debian_root(root)
    policy.resources(
        """
        [[user]]
        name = "app"
        system = true
        home = "/var/lib/app"

        [[directory]]
        path = "/var/lib/app"
        owner = "app"
        mode = "0755"
        """
    )
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert "create home" not in out
    assert stat.S_IMODE((root / "var/lib/app").stat().st_mode) == 0o755


def test_home_in_the_way_fails_with_one_line(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    debian_root(root)
    (root / "home").mkdir()
    (root / "home/erin").write_text("a file where the home goes\n")
    policy.resources('[[user]]\nname = "erin"\n')
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 1
    assert "/home/erin exists and is not a directory" in out
    assert (root / "home/erin").read_text() == "a file where the home goes\n"


NAMESPACE_SCRIPT = r"""
set -e
scratch=$1; policy=$2; shift 2
mount -t tmpfs tmpfs "$scratch"
for d in etc home; do
    mkdir "$scratch/$d.up" "$scratch/$d.work"
    mount -t overlay overlay \
        -o "lowerdir=/$d,upperdir=$scratch/$d.up,workdir=$scratch/$d.work" "/$d"
done
check() { echo "== $1"; pwck -r 2>&1 || true; grpck -r 2>&1 || true; }
check before
echo "== apply"
"$@" apply "$policy" --state-dir "$scratch/state" 2>&1 || echo "apply exit $?"
check after
stat -c '%U:%G %a' /home/alice
"""


def test_issue_scenario_on_the_host_itself(policy: PolicyDir, tmp_path: Path) -> None:
    """The issue's run, without --root: the host's own /etc and /home,
    each under a throw-away overlay in a private mount namespace, and the
    checkers run with no arguments, as an operator runs them."""
    if shutil.which("unshare") is None:
        pytest.skip("util-linux (unshare) not installed")
    if os.geteuid() != 0:
        pytest.skip("machine limit: mount namespaces need root")
    exe = shutil.which("undistro", path=os.path.dirname(sys.executable))
    assert exe is not None, "the console script is installed beside the interpreter"
    policy.resources(ISSUE_POLICY)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", NAMESPACE_SCRIPT]
    proc = subprocess.run(
        [*argv, "sh", str(scratch), str(policy), exe],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if "overlay" in proc.stderr and proc.returncode != 0:
        pytest.skip(f"machine limit: no overlayfs in a mount namespace: {proc.stderr.strip()}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    sections = {}
    for part in proc.stdout.split("== ")[1:]:
        title, _, body = part.partition("\n")
        sections[title] = body
    before = {line for line in sections["before"].splitlines() if "no changes" not in line}
    apply_out, after_out = sections["apply"], sections["after"]
    assert "0 failed" in apply_out and "apply exit" not in apply_out, apply_out
    after = [line for line in after_out.splitlines()[:-1] if "no changes" not in line]
    assert [line for line in after if line not in before] == []
    assert after_out.splitlines()[-1] == "alice:alice 700"
    assert not os.path.exists("/home/alice")  # the overlay went with the namespace


def test_home_under_a_symlink_out_of_the_root_stays_in_the_root(
    policy: PolicyDir, root: Path, cli: RunCli, tmp_path: Path
) -> None:
    """ROOT/home -> /outside resolves as if ROOT were / (RESOLVE_IN_ROOT):
    the home is made at ROOT/outside/mallory, never on the host."""
    debian_root(root)
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / "home").symlink_to(outside)
    policy.resources('[[user]]\nname = "mallory"\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert list(outside.iterdir()) == []
    assert (root / str(outside).lstrip("/") / "mallory").is_dir()


def test_home_killed_half_way_is_rebuilt(policy: PolicyDir, root: Path, cli: RunCli) -> None:
    """A run killed while copying the skeleton left its temp home behind."""
    debian_root(root)
    (root / "etc/skel").mkdir()
    (root / "etc/skel/.profile").write_text("# profile\n")
    (root / "home").mkdir()
    stale = root / "home/.frank.undistro-tmp"
    stale.mkdir()
    (stale / "half").write_text("")
    policy.resources('[[user]]\nname = "frank"\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert sorted(p.name for p in (root / "home/frank").iterdir()) == [".profile"]
    assert sorted(p.name for p in (root / "home").iterdir()) == ["frank"]


@pytest.mark.parametrize(
    "table",
    [
        '[[user]]\nname = "eve"\nhome = "/home/e:0:0::/root:/bin/sh"\n',
        '[[user]]\nname = "eve"\nshell = "/bin/sh\\nroot2::0:0::/:/bin/sh"\n',
        '[[user]]\nname = "eve"\ngroups = ["users,root"]\n',
        '[[group]]\nname = "g"\nmembers = ["a\\nevil:x:0:"]\n',
    ],
)
def test_a_field_that_would_write_another_account_is_refused(
    policy: PolicyDir, root: Path, cli: RunCli, table: str
) -> None:
    debian_root(root)
    before = {p: p.read_bytes() for p in (root / "etc").iterdir() if p.is_file()}
    policy.resources(table)
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith("undistro: "), err
    assert "must not contain ':' or newlines" in err or "not a valid user/group name" in err
    assert {p: p.read_bytes() for p in (root / "etc").iterdir() if p.is_file()} == before


def test_disk_full_mid_edit_then_freed_converges_clean(
    policy: PolicyDir, tmp_path: Path, cli: RunCli
) -> None:
    """A full disk fails the accounts with one line each and leaves files
    the next run, once space is back, turns into a pwck/grpck-clean set."""
    if os.geteuid() != 0:
        pytest.skip("machine limit: mounting a tmpfs needs root")
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        debian_root(root)
        filler = root / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        policy.resources(ISSUE_POLICY)
        state = ["--state-dir", str(tmp_path / "state")]
        code, out, err = cli("apply", policy, "--root", root, *state)
        assert code == 1 and "Traceback" not in out + err, out + err
        assert "No space left on device" in out
        filler.unlink()
        code, out, err = cli("apply", policy, "--root", root, *state)
        assert code == 0, out + err
        assert check(root) == []
        assert sorted(p.name for p in (root / "etc").glob("*undistro-tmp")) == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_agent_repairs_a_removed_home_and_a_drifted_gshadow(tmp_path: Path) -> None:
    """A timeline with a real agent: converged and clean; the home removed
    and gshadow edited from outside; both repaired, clean again."""
    from tests.agent.conftest import AgentProc, wait_until

    root = tmp_path / "root"
    root.mkdir()
    debian_root(root)
    policy = PolicyDir(tmp_path / "p")
    policy.resources(ISSUE_POLICY)
    agent = AgentProc(policy.path, root, tmp_path / "agent.log")
    try:
        agent.start()
        home, gshadow = root / "home/alice", root / "etc/gshadow"
        wait_until(home.is_dir, what="alice's home")
        assert check(root) == []
        shutil.rmtree(home)
        wait_until(home.is_dir, what="alice's home re-made")
        gshadow.write_text(gshadow.read_text().replace("web:!::alice", "web:!::"))
        wait_until(lambda: "web:!::alice" in lines(gshadow), what="gshadow repaired")
        assert check(root) == [], agent.log()
        assert agent.terminate() == 0
    finally:
        agent.kill()


def test_a_shadow_file_caught_mid_rewrite_is_not_edited(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    """An editor writing /etc/shadow in place has just truncated it: writing
    back what was read would lock every account ('!') and lose its hashes."""
    debian_root(root)
    (root / "etc/shadow").write_text("")
    before = (root / "etc/passwd").read_bytes()
    policy.resources('[[user]]\nname = "alice"\n')
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 1 and "/etc/shadow is empty (being rewritten?): not edited" in out
    assert (root / "etc/shadow").read_text() == ""
    assert (root / "etc/passwd").read_bytes() == before


def test_a_symlinked_skel_is_not_followed(
    policy: PolicyDir, root: Path, cli: RunCli, tmp_path: Path
) -> None:
    debian_root(root)
    outside = tmp_path / "host-skel"
    outside.mkdir()
    (outside / ".host-only").write_text("x")
    (root / "etc/skel").symlink_to(outside)
    policy.resources('[[user]]\nname = "gina"\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert list((root / "home/gina").iterdir()) == []
    _, out, _ = cli("log", "--root", root, "--output")
    assert "/etc/skel is not a directory (a symlink?): home left empty" in out


def test_an_existing_home_is_left_alone_and_a_nested_skel_is_bounded(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    debian_root(root)
    (root / "home/hana").mkdir(parents=True)
    (root / "home/hana/notes").write_text("mine\n")
    deep = root / "etc/skel"
    for _ in range(40):
        deep = deep / "d"
    deep.mkdir(parents=True)
    policy.resources('[[user]]\nname = "hana"\n[[user]]\nname = "ian"\n')
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 1
    assert "create home /home/hana" not in out
    assert (root / "home/hana/notes").read_text() == "mine\n"
    assert "/etc/skel nests deeper than 32 directories: not copied" in out
    assert sorted(p.name for p in (root / "home").iterdir()) == ["hana"]  # no temp left


def test_kill_9_at_any_moment_then_apply_is_clean(policy: PolicyDir, tmp_path: Path) -> None:
    """SIGKILL an apply of 40 users and 10 groups at staggered moments; the
    files are each old or new, and the next apply makes them checker-clean."""
    exe = shutil.which("undistro", path=os.path.dirname(sys.executable))
    assert exe is not None
    tables = [f'[[group]]\nname = "g{i}"\n' for i in range(10)]
    tables += [
        f'[[user]]\nname = "u{i}"\ngroups = ["g{i % 10}", "g{(i + 3) % 10}"]\n' for i in range(40)
    ]
    policy.resources("\n".join(tables))
    reference = tmp_path / "reference"
    reference.mkdir()
    debian_root(reference)
    started = time.monotonic()
    subprocess.run([exe, "apply", str(policy), "--root", str(reference), "-q"], check=True)
    whole = time.monotonic() - started  # start-up included, as for the killed runs
    kills = 0
    for n, share in enumerate((0.3, 0.5, 0.7)):
        root = tmp_path / f"root{n}"
        root.mkdir()
        debian_root(root)
        argv = [exe, "apply", str(policy), "--root", str(root), "-q"]
        delay = whole * share
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(delay)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, 9)
            proc.wait(10)
            kills += 1
        for name in ("passwd", "group", "shadow", "gshadow"):
            text = (root / "etc" / name).read_text()
            assert text.endswith("\n") and text.startswith("root:"), name  # never torn
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        assert check(root) == [], n
    assert kills >= 1, "every apply finished before its kill"


def test_read_only_root_fails_accounts_with_one_line(
    policy: PolicyDir, tmp_path: Path, cli: RunCli
) -> None:
    if os.geteuid() != 0:
        pytest.skip("machine limit: mounting a tmpfs needs root")
    root = tmp_path / "ro"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(root)], check=True)
    try:
        debian_root(root)
        before = {p.name: p.read_bytes() for p in (root / "etc").iterdir() if p.is_file()}
        subprocess.run(["mount", "-o", "remount,ro", str(root)], check=True)
        policy.resources(ISSUE_POLICY)
        code, out, err = cli("apply", policy, "--root", root, "--state-dir", tmp_path / "s")
        assert code == 1 and "Traceback" not in out + err, out + err
        assert "Read-only file system" in out
        after = {p.name: p.read_bytes() for p in (root / "etc").iterdir() if p.is_file()}
        assert after == before
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_two_applies_at_once_lose_no_account(tmp_path: Path) -> None:
    """Each edit re-reads the files under the shadow lock: two one-shot
    applies of different accounts on one root both land, with distinct ids."""
    exe = shutil.which("undistro", path=os.path.dirname(sys.executable))
    assert exe is not None
    root = tmp_path / "root"
    root.mkdir()
    debian_root(root)
    procs = []
    for side in ("a", "b"):
        policy = PolicyDir(tmp_path / side)
        policy.resources("\n".join(f'[[user]]\nname = "{side}{i}"\n' for i in range(15)))
        argv = [exe, "apply", str(policy), "--root", str(root), "-q"]
        argv += ["--state-dir", str(tmp_path / f"state-{side}")]
        procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for proc in procs:
        out, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0, out
    users = [line.split(":") for line in lines(root / "etc/passwd")]
    made = {u[0]: u[2] for u in users if u[0][0] in "ab" and u[0][1:].isdigit()}
    assert len(made) == 30 and len(set(made.values())) == 30
    assert check(root) == []
