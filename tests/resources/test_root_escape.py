"""Nothing under ``--root`` may lead a write out of the root (issue 8).

Each test is a reproduction through the CLI (or a real agent process) that
wrote outside the root before paths were resolved by ``undistro._rootfs``.
"""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.agent.conftest import AgentProc, wait_until
from tests.agent.conftest import agent as agent  # the fixture, shared with the agent tests
from tests.conftest import PolicyDir, RunCli
from undistro._rootfs import PathRefused, RootFS, confined, is_temp_name, temp_name
from undistro.state import StateStore


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A host directory that must stay untouched (beside the root)."""
    path = tmp_path / "outside"
    path.mkdir()
    return path


def untouched(directory: Path) -> None:
    assert sorted(os.listdir(directory)) == [], f"written outside the root: {directory}"


def inside(root: Path, host_path: Path | str) -> Path:
    """Where an absolute link target lands when the root is taken as ``/``."""
    return root / str(host_path).lstrip("/")


# -- a symlink in the root pointing out of it ------------------------------


def test_symlinked_etc_keeps_a_file_inside_the_root(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    (root / "etc").symlink_to(outside)
    policy.resources('[[file]]\npath = "/etc/esc.conf"\ncontent = "x\\n"\n')
    code, _, err = cli("apply", policy, "--root", root, "-q")
    assert code == 0, err
    untouched(outside)
    # The absolute target is taken inside the root, as RESOLVE_IN_ROOT does.
    assert (inside(root, outside) / "esc.conf").read_text() == "x\n"
    # and a no-op stays a no-op through the link.
    code, out, _ = cli("apply", policy, "--root", root)
    assert code == 0 and "repaired" not in out.replace("0 repaired", "")


def test_dotdot_in_a_link_target_stops_at_the_root(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    # ROOT/etc -> ../outside (relative) and ROOT/up -> ../../../../..: '..'
    # never climbs above the root.
    (root / "etc").symlink_to("../outside")
    (root / "up").symlink_to("../../../../../../..")
    policy.resources(
        '[[file]]\npath = "/etc/esc.conf"\ncontent = "x\\n"\n'
        '[[file]]\npath = "/up/esc2.conf"\ncontent = "y\\n"\n'
    )
    code, _, err = cli("apply", policy, "--root", root, "-q")
    assert code == 0, err
    untouched(outside)
    assert (root / "outside" / "esc.conf").read_text() == "x\n"
    assert (root / "esc2.conf").read_text() == "y\n"
    assert not (root.parent / "esc2.conf").exists()


def test_symlinked_etc_keeps_account_databases_inside_the_root(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    (root / "etc").symlink_to(outside)
    policy.resources('[[group]]\nname = "web"\ngid = 3001\n')
    code, _, err = cli("apply", policy, "--root", root, "-q")
    assert code == 0, err
    untouched(outside)  # neither group nor .pwd.lock
    assert "web:x:3001:" in (inside(root, outside) / "group").read_text()


def test_state_dir_behind_a_symlink_out_of_the_root_is_refused(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    (root / "var").symlink_to(outside)
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "x\\n"\n')
    code, _, err = cli("apply", policy, "--root", root)
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert f"{root}/var is a symlink to {outside}, out of the root" in lines[0]
    untouched(outside)
    assert not (root / "etc" / "motd").exists()  # nothing changed


def test_node_config_behind_a_symlink_out_of_the_root_is_refused(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    (outside / "node.toml").write_text('policy = "/nonexistent"\n')
    (root / "etc").mkdir()
    (root / "etc" / "undistro").symlink_to(outside)
    policy.resources('[[file]]\npath = "/etc/motd"\ncontent = "x\\n"\n')
    code, _, err = cli("apply", policy, "--root", root)
    assert code != 0
    assert err.count("\n") == 1 and f"{root}/etc/undistro is a symlink to {outside}" in err
    assert not (root / "etc" / "motd").exists()


def test_a_symlink_inside_the_root_is_followed_inside_it(
    cli: RunCli, policy: PolicyDir, root: Path
) -> None:
    # /var/run -> /run, as on every Debian: the state dir below it is fine.
    (root / "run").mkdir()
    (root / "var").mkdir()
    (root / "var" / "run").symlink_to("/run")
    policy.resources('[[file]]\npath = "/var/run/app.pid"\ncontent = "1\\n"\n')
    code, _, err = cli("apply", policy, "--root", root, "-q")
    assert code == 0, err
    assert (root / "run" / "app.pid").read_text() == "1\n"


# -- the policy's own symlink -------------------------------------------------


def test_policy_symlink_to_a_host_dir_does_not_write_on_the_host(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    policy.resources(
        f'[[symlink]]\npath = "/srv/link"\ntarget = "{outside}"\n'
        '[[file]]\npath = "/srv/link/x"\ncontent = "x\\n"\nrequires = ["symlink:/srv/link"]\n'
    )
    # A path inside a path the policy manages as a symlink is refused at
    # validation (only a directory holds other paths): nothing is written,
    # on the host or in the root.
    code, out, err = cli("apply", policy, "--root", root, "-q")
    assert code == 2 and out == "", err
    assert err.count("\n") == 1 and "which symlink:/srv/link manages as a symlink" in err
    untouched(outside)
    assert not (root / "srv").exists()


# -- a declared directory replaced by a symlink -----------------------------


DECLARED = (
    '[[directory]]\npath = "/etc/d"\nmode = "0755"\n'
    '[[file]]\npath = "/etc/d/s.conf"\ncontent = "s\\n"\nmode = "0644"\n'
)


def test_declared_directory_replaced_by_a_symlink_fails_its_files(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    policy.resources(DECLARED)
    assert cli("apply", policy, "--root", root, "-q")[0] == 0
    (root / "etc" / "d").rename(root / "etc" / "d.moved")
    (root / "etc" / "d").symlink_to(outside)
    code, out, _ = cli("apply", policy, "--root", root)
    assert code != 0
    assert "directory:/etc/d" in out and "is a symlink, not a directory" in out
    untouched(outside)
    # Checked alone (as the agent does on an event), the file fails too.
    from undistro.engine import Engine
    from undistro.policy import load_node, load_policy

    node = load_node(str(root), None, ())
    compiled = load_policy(str(policy), node, node.facts())
    store = StateStore(str(root / "var/lib/undistro"))
    summary = Engine(compiled, root=str(root), state=store, facts=node.facts()).run(
        ["file:/etc/d/s.conf"]
    )
    result = summary.results["file:/etc/d/s.conf"]
    assert result.status == "failed"
    assert "is a symlink, but the policy declares a directory there" in (result.error or "")
    untouched(outside)


def test_agent_never_repairs_a_file_through_a_swapped_in_symlink(
    agent: AgentProc, outside: Path
) -> None:
    (agent.policy / "policy").mkdir(parents=True)
    (agent.policy / "undistro.toml").write_text('name = "escape"\n')
    (agent.policy / "policy" / "main.toml").write_text(DECLARED)
    agent.start()
    assert agent.path("/etc/d/s.conf").read_text() == "s\n"
    agent.path("/etc/d").rename(agent.path("/etc/d.moved"))
    agent.path("/etc/d").symlink_to(outside)
    wait_until(lambda: "failed directory:/etc/d" in agent.log(), what="directory failed")

    def file_checked() -> bool:  # skipped results are not logged, only shown
        state = agent.status()["resources"].get("file:/etc/d/s.conf", {}).get("state")
        return state in ("failed", "skipped")

    wait_until(file_checked, what="file checked")
    # Poke the file's parent as a writer would: still nothing outside.
    (agent.path("/etc/d.moved") / "s.conf").write_text("drift\n")
    untouched(outside)
    status = agent.status()["resources"]
    assert status["file:/etc/d/s.conf"]["state"] in ("failed", "skipped"), status
    assert agent.terminate() == 0
    untouched(outside)


# -- hard links ------------------------------------------------------------


def test_hard_linked_file_gets_its_own_inode_not_a_chmod(
    cli: RunCli, policy: PolicyDir, root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "shadow"  # stands for /etc/shadow, elsewhere on the fs
    victim.write_text("root:secret\n")
    victim.chmod(0o640)
    (root / "etc").mkdir()
    os.link(victim, root / "etc" / "app.conf")
    policy.resources(
        '[[file]]\npath = "/etc/app.conf"\ncontent = "root:secret\\n"\nmode = "0644"\n'
    )
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, err
    assert "own copy" in out
    assert stat.S_IMODE(victim.stat().st_mode) == 0o640  # the other name kept its mode
    managed = (root / "etc" / "app.conf").stat()
    assert stat.S_IMODE(managed.st_mode) == 0o644 and managed.st_nlink == 1
    assert victim.stat().st_nlink == 1
    # Writes through the other name no longer reach the managed file.
    victim.write_text("changed\n")
    assert (root / "etc" / "app.conf").read_text() == "root:secret\n"


def test_hard_linked_file_without_content_is_copied_for_a_mode_change(
    cli: RunCli, policy: PolicyDir, root: Path, tmp_path: Path
) -> None:
    victim = tmp_path / "victim"
    victim.write_bytes(b"\x00binary\xff")
    victim.chmod(0o600)
    (root / "etc").mkdir()
    os.link(victim, root / "etc" / "keep")
    policy.resources('[[file]]\npath = "/etc/keep"\nmode = "0644"\n')
    code, _, err = cli("apply", policy, "--root", root, "-q")
    assert code == 0, err
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600
    assert (root / "etc" / "keep").read_bytes() == b"\x00binary\xff"
    assert stat.S_IMODE((root / "etc" / "keep").stat().st_mode) == 0o644


# -- special files, loops, long names ------------------------------------------


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return subprocess.run(
        [sys.executable, "-m", "undistro.cli", *argv],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": src},
    )


@pytest.mark.parametrize("kind", ["fifo", "chardev", "socket"])
def test_special_file_where_a_file_is_declared_is_refused_unopened(
    policy: PolicyDir, root: Path, kind: str
) -> None:
    (root / "etc").mkdir()
    target = root / "etc" / "x.conf"
    if kind == "fifo":
        os.mkfifo(target)
    elif kind == "chardev":
        if os.geteuid() != 0:
            pytest.skip("machine limit: making a device node needs root")
        os.mknod(target, 0o600 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null
    else:
        import socket

        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(target))
        sock.close()
    policy.resources('[[file]]\npath = "/etc/x.conf"\ncontent = "x\\n"\n')
    for command in ("plan", "apply"):
        proc = _run([command, str(policy), "--root", str(root)])  # a hang is a timeout
        assert proc.returncode != 0 or command == "plan"
        word = {"fifo": "FIFO", "chardev": "character device", "socket": "socket"}[kind]
        assert f"is a {word}, not a file" in proc.stdout + proc.stderr
        assert "Traceback" not in proc.stderr
    assert not stat.S_ISREG(target.lstat().st_mode)


def test_symlink_loop_fails_without_escaping(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    (root / "etc").mkdir()
    (root / "etc" / "a").symlink_to("b")
    (root / "etc" / "b").symlink_to("/etc/a")
    policy.resources('[[file]]\npath = "/etc/a/x"\ncontent = "x\\n"\n')
    code, out, err = cli("apply", policy, "--root", root)
    assert code != 0
    assert "Too many levels of symbolic links" in out
    assert "Traceback" not in out + err


def test_name_at_name_max_is_written(cli: RunCli, policy: PolicyDir, root: Path) -> None:
    name = "n" * 255
    policy.resources(
        f'[[file]]\npath = "/d/{name}"\ncontent = "x\\n"\n'
        f'[[symlink]]\npath = "/d/{"l" * 255}"\ntarget = "{name}"\n'
    )
    code, out, err = cli("apply", policy, "--root", root)
    assert code == 0, out + err
    assert (root / "d" / name).read_text() == "x\n"
    assert os.readlink(root / "d" / ("l" * 255)) == name
    assert [n for n in os.listdir(root / "d") if n.startswith(".")] == []


# -- a link swapped in between probe and write ----------------------------------


def test_symlink_swapped_in_after_probe_is_not_written_through(
    cli: RunCli,
    policy: PolicyDir,
    root: Path,
    outside: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from undistro.resources.file import File

    (root / "etc").mkdir()
    policy.resources('[[file]]\npath = "/etc/esc.conf"\ncontent = "x\\n"\n')
    plan = File.plan

    def swap_then_plan(self: File, state: object) -> object:
        # Between the probe (done) and the write (next): ROOT/etc becomes
        # a link out of the root.
        (root / "etc").rename(root / "etc.old")
        (root / "etc").symlink_to(outside)
        return plan(self, state)  # type: ignore[arg-type]

    monkeypatch.setattr(File, "plan", swap_then_plan)
    cli("apply", policy, "--root", root, "-q")
    untouched(outside)
    # The write went to the directory that was probed, wherever it now is.
    assert (root / "etc.old" / "esc.conf").read_text() == "x\n"


def test_leftover_temp_files_of_a_killed_run_are_swept(
    cli: RunCli, policy: PolicyDir, root: Path
) -> None:
    policy.resources(
        '[[file]]\npath = "/etc/a"\ncontent = "a\\n"\n'
        # A managed name that happens to match the pattern is never swept.
        '[[file]]\npath = "/etc/.b.undistro-tmp"\ncontent = "b\\n"\n'
    )
    assert cli("apply", policy, "--root", root, "-q")[0] == 0
    stale = [root / "etc" / ".a~123-0badcafe.undistro-tmp", root / "etc" / ".a.undistro-tmp"]
    for path in stale:
        path.write_text("half")
    (root / "var/lib/undistro/apply.unfinished").touch()  # as a SIGKILL leaves it
    assert cli("apply", policy, "--root", root, "-q")[0] == 0
    assert sorted(os.listdir(root / "etc")) == [".b.undistro-tmp", "a"]


# -- the resolver itself (undistro._rootfs) ---------------------------------------


def _fds_into(root: Path) -> int:
    """How many of this process's fds point into ``root``."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}").startswith(str(root))
        except OSError:
            continue
    return count


def test_temp_names_are_unique_and_fit_name_max() -> None:
    names = {temp_name("motd") for _ in range(1000)}
    assert len(names) == 1000 and all(is_temp_name(n) for n in names)
    assert all(n.startswith(".motd~") for n in names)
    for long in ("n" * 255, "é" * 200):
        name = temp_name(long)
        assert len(os.fsencode(name)) <= 255 and is_temp_name(name)


def test_temp_names_differ_in_a_forked_child() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.write(write, temp_name("x").encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 300).decode()
    os.close(read)
    assert child.split("~")[1].split("-")[:2] != temp_name("x").split("~")[1].split("-")[:2]


def test_forty_links_resolve_and_forty_one_are_a_loop(root: Path) -> None:
    (root / "end").mkdir()
    for n, count in ((40, "ok"), (41, "loop")):
        chain = root / f"c{n}"
        chain.mkdir()
        (chain / "l0").symlink_to("/end")  # absolute: the root's /end
        for i in range(1, n):
            (chain / f"l{i}").symlink_to(f"l{i - 1}")
        with RootFS(str(root)) as fs:
            if count == "ok":
                os.close(fs.open(f"/c{n}/l{n - 1}/f", os.O_WRONLY | os.O_CREAT))
                assert (root / "end" / "f").exists()
            else:
                with pytest.raises(OSError, match="Too many levels"):
                    fs.open(f"/c{n}/l{n - 1}/f", os.O_WRONLY | os.O_CREAT)


def test_dotdot_and_absolute_targets_stay_in_the_root(root: Path, outside: Path) -> None:
    (root / "a").mkdir()
    (root / "a" / "up").symlink_to("../../../../..")
    (root / "a" / "abs").symlink_to("/../../a/../..")
    (root / "a" / "host").symlink_to(outside)
    with RootFS(str(root)) as fs:
        for link in ("up", "abs", "host"):
            os.close(fs.open(f"/a/{link}/f-{link}", os.O_WRONLY | os.O_CREAT, parents=True))
    assert (root / "f-up").exists() and (root / "f-abs").exists()
    assert (inside(root, outside) / "f-host").exists()
    untouched(outside)


def test_guarded_directory_that_is_a_link_is_refused(root: Path) -> None:
    (root / "real").mkdir()
    (root / "d").symlink_to("real")  # inside the root, but declared a directory
    (root / "real" / "x").touch()
    with RootFS(str(root)) as fs:
        assert stat.S_ISREG(fs.lstat("/d/x").st_mode)  # unguarded: followed
        with pytest.raises(PathRefused, match="declares a directory"):
            fs.lstat("/d/x", ("/d",))
        with pytest.raises(PathRefused, match="declares a directory"):
            fs.create_temp("/d/x", ("/d",))
    assert os.listdir(root / "real") == ["x"]


def test_metadata_changes_refuse_links_and_shared_inodes(root: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.write_text("x")
    other.chmod(0o600)
    os.link(other, root / "hard")
    (root / "soft").symlink_to(other)
    with RootFS(str(root)) as fs:
        with pytest.raises(PathRefused, match="2 hard links"):
            fs.set_meta("/hard", 0o644)
        with pytest.raises(PathRefused, match="is a symlink"):
            fs.set_meta("/soft", 0o644)
    assert stat.S_IMODE(other.stat().st_mode) == 0o600


def test_reading_a_fifo_is_refused_without_blocking(root: Path) -> None:
    os.mkfifo(root / "fifo")
    with RootFS(str(root)) as fs, pytest.raises(PathRefused, match="is a FIFO"):
        fs.read("/fifo")


def test_directory_fds_are_bounded_and_released(root: Path) -> None:
    for i in range(300):
        (root / f"d{i}").mkdir()
    fs = RootFS(str(root))
    for i in range(300):
        with pytest.raises(FileNotFoundError):
            fs.lstat(f"/d{i}/sub/x")
        assert _fds_into(root) <= 257  # the cache's limit and the root itself
    fs.close()
    assert _fds_into(root) == 0
    with RootFS(str(root)) as again:
        again.lstat("/d0")
    del again
    assert _fds_into(root) == 0


def test_confined_names_the_link_out_of_the_root(root: Path, outside: Path) -> None:
    (root / "var").mkdir()
    (root / "var" / "lib").symlink_to("../data")  # inside: fine
    assert confined(str(root), str(root / "var/lib/undistro")) == str(root / "var/lib/undistro")
    (root / "var" / "run").symlink_to("/run")  # the host's /run: out
    with pytest.raises(PathRefused, match=f"{root}/var/run is a symlink to /run, out of the root"):
        confined(str(root), str(root / "var/run/undistro"))


def test_without_proc_metadata_and_reads_still_refuse_what_they_must(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import undistro._rootfs as rootfs

    monkeypatch.setattr(rootfs, "_HAVE_PROC", False)  # a bare chroot
    (root / "f").write_text("data")
    os.mkfifo(root / "fifo")
    os.link(root / "f", tmp_path / "other")
    with RootFS(str(root)) as fs:
        assert fs.read("/f") == b"data"
        with pytest.raises(PathRefused, match="2 hard links"):
            fs.set_meta("/f", 0o600)
        os.unlink(tmp_path / "other")
        assert stat.S_IMODE(fs.set_meta("/f", 0o600, os.getuid(), -1).st_mode) == 0o600
        with pytest.raises(PathRefused, match="FIFO"):
            fs.read("/fifo")


def test_account_database_that_is_a_fifo_or_a_host_link_is_refused(
    policy: PolicyDir, root: Path
) -> None:
    (root / "etc").mkdir()
    os.mkfifo(root / "etc" / "group")  # open() of it used to block forever
    (root / "etc" / "passwd").symlink_to("/etc/passwd")  # the host's, read by name
    policy.resources('[[group]]\nname = "web"\ngid = 3001\n[[user]]\nname = "u"\nuid = 3001\n')
    proc = _run(["apply", str(policy), "--root", str(root)])
    assert proc.returncode != 0
    assert f"{root}/etc/group is a FIFO, not a file" in proc.stdout
    assert "Traceback" not in proc.stdout + proc.stderr
    assert stat.S_ISFIFO((root / "etc" / "group").lstat().st_mode)
    assert os.readlink(root / "etc" / "passwd") == "/etc/passwd"


def test_a_closed_rootfs_says_so(root: Path) -> None:
    fs = RootFS(str(root))
    fs.close()
    with pytest.raises(ValueError, match="closed"):
        fs.lstat("/etc/x")


def test_a_link_flipped_in_and_out_during_applies_never_leads_outside(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    import threading
    import time

    (root / "etc").mkdir()
    policy.resources(
        "".join(f'[[file]]\npath = "/etc/f{i:03d}"\ncontent = "{i}\\n"\n' for i in range(100))
    )
    stop = threading.Event()
    flips = 0

    def flip() -> None:
        nonlocal flips
        etc, aside = root / "etc", root / "etc.aside"

        made = iter(range(10**9))

        def clear_way() -> None:  # an apply made a fresh ROOT/etc meanwhile
            etc.rename(root / f"etc.made-{next(made)}")

        while not stop.is_set():
            etc.rename(aside)
            try:
                etc.symlink_to(outside)
            except FileExistsError:
                clear_way()
                etc.symlink_to(outside)
            if etc.is_symlink():
                etc.unlink()
            while True:
                try:
                    aside.rename(etc)
                    break
                except OSError:
                    clear_way()
            flips += 1

    swapped_ok = [False]

    def guarded_flip() -> None:
        flip()
        swapped_ok[0] = True  # the swapper ran to the end, not into an error

    swapper = threading.Thread(target=guarded_flip)
    swapper.start()
    try:
        deadline = time.monotonic() + 3
        runs = 0
        while time.monotonic() < deadline:
            with contextlib.suppress(FileNotFoundError):  # ROOT/etc is mid-flip
                for f in (root / "etc").glob("f00*"):
                    f.unlink(missing_ok=True)  # something to write each run
            cli("apply", policy, "--root", root, "-q", "--no-diff")
            runs += 1
    finally:
        stop.set()
        swapper.join()
    untouched(outside)
    assert runs >= 2 and flips > 10 and swapped_ok[0]


def test_a_home_behind_a_symlink_out_of_the_root_stays_inside(
    cli: RunCli, policy: PolicyDir, root: Path, outside: Path
) -> None:
    (root / "etc").mkdir()
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    (root / "etc/skel").mkdir()
    (root / "etc/skel/.profile").write_text("# skel\n")
    (root / "home").symlink_to(outside)
    policy.resources('[[user]]\nname = "alice"\nhome = "/home/alice"\n')
    code, _, err = cli("apply", policy, "--root", root, "-q")
    assert code == 0, err
    untouched(outside)
    made = inside(root, outside) / "alice"
    assert made.is_dir() and (made / ".profile").read_text() == "# skel\n"
