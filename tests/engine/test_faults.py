"""The state store under real faults: a full disk (a 2 MiB tmpfs), a
read-only root (a remounted tmpfs, a read-only bind mount), kill -9, and a
policy that tries to manage undistro's own state.

Each fault is real: the tests mount and unmount what they use (root is
needed to mount; without it the machine cannot run them).
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PolicyDir, RunCli

BIG = "a" * 100_000
STATE = "var/lib/undistro"


def undistro(*args: object, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A real ``undistro`` process (a fault must not be softened in-process)."""
    return subprocess.run(
        [sys.executable, "-m", "undistro.cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("undistro: "), proc.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True, capture_output=True)


def _umount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
        subprocess.run(["umount", "-l", str(path)], check=True)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB tmpfs, the root of the tests' runs."""
    if os.geteuid() != 0:
        pytest.skip("machine limit: mounting a tmpfs needs root")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    _mount("-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt))
    try:
        yield mnt
    finally:
        _umount(mnt)


def big_files(policy: PolicyDir, n: int = 30) -> None:
    policy.resources(
        "".join(f'[[file]]\npath = "/data/f{i:02d}"\ncontent = "{BIG}"\n\n' for i in range(n))
    )


def summary(proc: subprocess.CompletedProcess[str]) -> str:
    return proc.stdout.strip().splitlines()[-1]


# -- a full disk --------------------------------------------------------------


def test_disk_full_on_the_first_apply_recovers_once_space_is_freed(
    policy: PolicyDir, small_fs: Path
) -> None:
    big_files(policy)  # 3 MB of files on a 2 MiB file system
    first = undistro("apply", policy, "--root", small_fs, "-q")
    assert first.returncode == 1
    one_line_error(first, "state store", "full", "repairs stay on disk")
    # What it did is reported even so: some files written, the rest failed.
    assert re.search(r"30 resources checked — 0 kept, \d+ repaired, \d+ failed", summary(first))
    for f in (small_fs / "data").iterdir():
        if not f.name.startswith("."):  # a temp file may stay until the next run
            assert f.read_text() == BIG  # renamed into place whole, or not at all

    _mount("-o", "remount,size=8m", str(small_fs))  # space freed
    again = undistro("apply", policy, "--root", small_fs, "-q")
    assert again.returncode == 0, again.stderr
    assert "0 failed" in summary(again)
    noop = undistro("apply", policy, "--root", small_fs, "-q")
    assert "30 kept" in summary(noop), noop.stdout + noop.stderr
    assert sorted(os.listdir(small_fs / "data")) == [f"f{i:02d}" for i in range(30)]
    db = sqlite3.connect(small_fs / STATE / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    assert db.execute("SELECT count(*) FROM fingerprint").fetchone()[0] == 30


def test_disk_full_with_an_existing_store_is_one_line_and_keeps_it(
    policy: PolicyDir, small_fs: Path
) -> None:
    """The same change, with less and less room left: at some sizes the
    store cannot be read, at some the journal cannot be written, at others
    all goes through. Never a traceback; the store stays whole; the file is
    old or new; once there is room, a run converges."""

    def declare(content: str) -> None:
        policy.resources(f'[[file]]\npath = "/data/small"\ncontent = "{content}"\n')

    declare("first")
    assert undistro("apply", policy, "--root", small_fs, "-q").returncode == 0
    store = small_fs / STATE / "state.db"
    filler = small_fs / "filler"
    outcomes: set[str] = set()
    previous = "first"
    for slack_kib in range(4, 72, 4):
        with open(filler, "wb", buffering=0) as f:  # fill the file system to the brim...
            try:
                while f.write(b"\0" * 65536):
                    pass
            except OSError:
                pass
        os.truncate(filler, max(0, filler.stat().st_size - slack_kib * 1024))  # ...but this
        wanted = f"slack {slack_kib}"
        declare(wanted)
        proc = undistro("apply", policy, "--root", small_fs, "-q")
        assert "Traceback" not in proc.stderr, proc.stderr
        if proc.returncode == 0:
            outcomes.add("applied")
        else:
            assert proc.returncode == 1
            line = one_line_error(proc, "state store")
            outcomes.add("unread" if "cannot read" in line else "unrecorded")
        assert (small_fs / "data/small").read_text() in (previous, wanted)
        previous = (small_fs / "data/small").read_text()
        filler.unlink()
        db = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
        db.close()
    # The sweep must have gone through the journal write failing, or it
    # tested nothing of what it claims.
    assert "unrecorded" in outcomes, outcomes

    last = undistro("apply", policy, "--root", small_fs, "-q")
    assert last.returncode == 0, last.stderr
    assert (small_fs / "data/small").read_text() == wanted
    assert "1 kept" in summary(undistro("apply", policy, "--root", small_fs, "-q"))
    assert [n for n in os.listdir(small_fs / "data") if n.startswith(".")] == []


# -- a read-only root ---------------------------------------------------------


@pytest.fixture(params=["remount", "bind"])
def read_only(request: pytest.FixtureRequest, small_fs: Path, tmp_path: Path) -> Iterator[Path]:
    """The root the runs see, made read-only by ``_make_read_only``: the
    tmpfs itself, remounted read-only, or a bind mount of it made read-only
    (the file system stays writable through its other mount)."""
    if request.param == "remount":
        yield small_fs
        return
    view = tmp_path / "ro-view"
    view.mkdir()
    _mount("--bind", str(small_fs), str(view))
    try:
        yield view
    finally:
        _umount(view)


def _make_read_only(small_fs: Path, view: Path) -> None:
    if view == small_fs:
        _mount("-o", "remount,ro", str(small_fs))
    else:
        _mount("-o", "remount,bind,ro", str(view))


def test_read_only_fresh_root_apply_says_so_and_plan_works(
    policy: PolicyDir, small_fs: Path, read_only: Path
) -> None:
    policy.resources('[[file]]\npath = "/data/small"\ncontent = "x"\n')
    _make_read_only(small_fs, read_only)
    proc = undistro("apply", policy, "--root", read_only, "-q")
    assert proc.returncode == 1
    one_line_error(proc, "read-only")
    plan = undistro("plan", policy, "--root", read_only)
    assert plan.returncode == 0, plan.stderr
    assert "1 would repair" in summary(plan)


def test_read_only_converged_root_apply_says_so_plan_log_why_read(
    policy: PolicyDir, small_fs: Path, read_only: Path
) -> None:
    policy.resources('[[file]]\npath = "/data/small"\ncontent = "x"\n')
    assert undistro("apply", policy, "--root", read_only, "-q").returncode == 0
    policy.resources('[[file]]\npath = "/data/small"\ncontent = "y"\n')
    _make_read_only(small_fs, read_only)
    proc = undistro("apply", policy, "--root", read_only, "-q")
    assert proc.returncode == 1
    one_line_error(proc, "read-only")
    assert (small_fs / "data/small").read_text() == "x"
    plan = undistro("plan", policy, "--root", read_only)
    assert plan.returncode == 0, plan.stderr
    assert "1 would repair" in summary(plan)
    log = undistro("log", "--root", read_only)
    assert log.returncode == 0 and "file:/data/small" in log.stdout, log.stderr
    why = undistro("why", "/data/small", "--root", read_only)
    assert why.returncode == 0 and "policy/main.toml" in why.stdout, why.stderr


# -- the state is not the policy's --------------------------------------------


@pytest.mark.parametrize(
    ("table", "field", "what"),
    [
        ('[[file]]\npath = "/var/lib/undistro/state.db"\ncontent = "x"\n', "path", "state"),
        ('[[directory]]\npath = "/var/lib/undistro"\nmode = "0000"\n', "path", "state"),
        ('[[symlink]]\npath = "/var/lib/undistro/agent.sock"\ntarget = "/x"\n', "path", "state"),
        ('[[file]]\npath = "/opt/undistro/store/k/bin/sh"\ncontent = "x"\n', "path", "keg"),
        ('[[directory]]\npath = "/var"\npurge = true\n', "purge", "state"),
        ('[[directory]]\npath = "/opt"\npurge = true\n', "purge", "keg"),
    ],
)
def test_a_policy_managing_the_state_is_rejected_and_changes_nothing(
    policy: PolicyDir, root: Path, cli: RunCli, table: str, field: str, what: str
) -> None:
    policy.resources('[[file]]\npath = "/etc/first"\ncontent = "x"\n\n' + table)
    for command in ("apply", "plan"):
        code, out, err = cli(command, policy, "--root", root)
        assert code == 2, out + err
        lines = err.splitlines()
        assert len(lines) == 1, err
        assert lines[0].startswith("undistro: policy/main.toml: ")
        assert f"field '{field}'" in lines[0] and what in lines[0]
    assert not (root / "etc/first").exists()
    assert not (root / STATE / "state.db").exists()
    assert not (root / "var/lib/undistro/agent.sock").is_symlink()


def test_the_store_of_a_keg_resource_is_reserved_too(
    policy: PolicyDir, root: Path, cli: RunCli
) -> None:
    (policy.path / "recipes").mkdir()
    policy.resources(
        '[[keg]]\nname = "zlib"\nstore = "/srv/kegs"\n\n'
        '[[file]]\npath = "/srv/kegs/zlib/x"\ncontent = "x"\n'
    )
    code, _, err = cli("apply", policy, "--root", root)
    assert code == 2
    assert "file:/srv/kegs/zlib/x: field 'path'" in err and "keg store" in err


def test_the_state_dir_given_on_the_command_line_is_the_one_reserved(
    policy: PolicyDir, root: Path, cli: RunCli, tmp_path: Path
) -> None:
    elsewhere = tmp_path / "state"
    policy.resources(f'[[file]]\npath = "{elsewhere}/state.db"\ncontent = "x"\n')
    code, _, err = cli("apply", policy, "--state-dir", elsewhere)
    assert code == 2 and "inside the state directory" in err
    # Under a root, /var/lib/undistro is just a path when the state is elsewhere.
    policy.resources('[[file]]\npath = "/var/lib/undistro/state.db"\ncontent = "x"\n')
    code, _, err = cli("apply", policy, "--root", root, "--state-dir", elsewhere)
    assert code == 0, err


def test_the_agent_refuses_a_policy_managing_its_state(policy: PolicyDir, root: Path) -> None:
    policy.resources('[[file]]\npath = "/var/lib/undistro/state.db"\ncontent = "x"\n')
    proc = undistro("agent", policy, "--root", root, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "field 'path'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (root / STATE / "state.db").exists()


def test_the_reserved_store_is_the_kegs_default_store() -> None:
    from undistro.engine._reserved import DEFAULT_STORE
    from undistro.kegs import DEFAULT_STORE as KEGS_STORE
    from undistro.resources.keg import DEFAULT_STORE as RESOURCE_STORE

    assert DEFAULT_STORE == KEGS_STORE == RESOURCE_STORE


# -- kill -9 ------------------------------------------------------------------


@pytest.mark.slow
def test_kill_9_mid_apply_leaves_no_stale_lock_and_the_rerun_converges(
    policy: PolicyDir, root: Path
) -> None:
    n = 2000
    policy.resources(
        "".join(
            f'[[file]]\npath = "/data/d{i % 20}/f{i:04d}"\ncontent = "{i}"\n\n' for i in range(n)
        )
    )
    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(policy), "--root", str(root), "-q"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        marker = root / STATE / "apply.unfinished"
        deadline = time.monotonic() + 60
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        assert marker.exists(), "the apply never started changing files"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    # The lock died with its holder: --no-wait goes ahead at once.
    again = undistro("apply", policy, "--root", root, "-q", "--no-wait")
    assert again.returncode == 0, again.stderr
    assert "0 failed" in summary(again)
    for i in range(0, n, 97):
        assert (root / f"data/d{i % 20}/f{i:04d}").read_text() == str(i)
    leftovers = [f for d in (root / "data").iterdir() for f in os.listdir(d) if f[0] == "."]
    assert leftovers == []
    assert not marker.exists()


def test_a_read_only_store_with_a_leftover_wal_is_refused_not_read_stale(
    policy: PolicyDir, small_fs: Path
) -> None:
    """Immutable reads skip the WAL: a store whose -wal holds changes (its
    writer was killed) and whose -shm is gone must not be read as if the
    WAL were empty."""
    policy.resources('[[file]]\npath = "/data/small"\ncontent = "x"\n')
    assert undistro("apply", policy, "--root", small_fs, "-q").returncode == 0
    store = small_fs / STATE / "state.db"
    writer = subprocess.run(
        [
            sys.executable,
            "-c",
            "import os, sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
            "db.execute('PRAGMA wal_autocheckpoint=0')\n"
            'db.execute("INSERT INTO journal (time, run, resource, outcome, cause, actions)'
            " VALUES (1, 'r', 'file:/data/small', 'repaired', 'only in the wal', '')\")\n"
            "os._exit(0)  # killed: no checkpoint\n",
            str(store),
        ],
        check=True,
    )
    assert writer.returncode == 0
    (small_fs / STATE / "state.db-shm").unlink()
    _mount("-o", "remount,ro", str(small_fs))
    log = undistro("log", "--root", small_fs)
    assert log.returncode == 1
    one_line_error(log, "read-only", "write-ahead log")
    _mount("-o", "remount,rw", str(small_fs))
    log = undistro("log", "--root", small_fs)
    assert "only in the wal" in log.stdout


@pytest.mark.parametrize("link", ["var", "var/lib/undistro"])
def test_a_state_dir_symlinked_out_of_the_root_is_refused(
    policy: PolicyDir, root: Path, cli: RunCli, tmp_path: Path, link: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (root / link).parent.mkdir(parents=True, exist_ok=True)
    (root / link).symlink_to(outside)
    policy.resources('[[file]]\npath = "/etc/x"\ncontent = "x"\n')
    for command in ("apply", "plan", "log"):
        args = [command, policy, "--root", root] if command != "log" else [command, "--root", root]
        code, _, err = cli(*args)
        assert code == 2, err
        assert len(err.splitlines()) == 1 and "out of the root" in err, err
    assert list(outside.iterdir()) == []
    assert not (root / "etc/x").exists()
