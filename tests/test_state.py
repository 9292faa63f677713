"""The state store's promises: a no-op run reads no managed file and writes
nothing; fingerprints make a one-shot run about one lstat per file."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PolicyDir

N = 200

needs_strace = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")


def write_policy(policy: PolicyDir) -> None:
    policy.resources(
        "".join(
            f'[[file]]\npath = "/data/f{i:03d}"\ncontent = "content {i}"\nmode = "0644"\n\n'
            for i in range(N)
        )
    )


def traced_apply(policy: PolicyDir, root: Path, tmp_path: Path) -> str:
    log = tmp_path / "strace.log"
    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(policy), "--root", str(root), "-q"]
    subprocess.run(
        ["strace", "-f", "-qq", "-e", "trace=%file,%desc", "-o", str(log), *cmd],
        check=True,
        capture_output=True,
    )
    return log.read_text()


@needs_strace
def test_no_op_reads_no_managed_file_and_writes_nothing(
    policy: PolicyDir, root: Path, tmp_path: Path
) -> None:
    write_policy(policy)
    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(policy), "--root", str(root), "-q"]
    subprocess.run(cmd, check=True, capture_output=True)
    subprocess.run(cmd, check=True, capture_output=True)  # settles the WAL index
    trace = traced_apply(policy, root, tmp_path)
    # Managed paths are reached through their parent's dir fd (undistro._rootfs):
    # by a full path or by a bare name relative to an fd.
    data = rf'"({re.escape(str(root / "data"))}/)?f\d+"'
    assert not re.search(rf"open(at)?\(.*{data}", trace), "a managed file was opened"
    lstats = re.findall(rf"(newfstatat|lstat|statx)\(.*{data}", trace)
    assert len(lstats) == N  # exactly one per managed file
    for call in ("rename", "unlink", "fsync", "fdatasync", "syncfs", "mkdir"):
        assert not re.search(rf"^\d+\s+{call}", trace, re.M), f"no-op made a {call}"
    written = re.findall(r'^\d+\s+openat\(.*"([^"]+)".*O_(WRONLY|RDWR)', trace, re.M)
    assert [w for w in written if not w[0].endswith("-shm") and not w[0].endswith("-wal")] == []


@needs_strace
def test_drift_costs_one_read_of_the_drifted_file(
    policy: PolicyDir, root: Path, tmp_path: Path
) -> None:
    write_policy(policy)
    subprocess.run(
        [sys.executable, "-m", "undistro.cli", "apply", str(policy), "--root", str(root), "-q"],
        check=True,
        capture_output=True,
    )
    (root / "data/f007").write_text("drift")
    trace = traced_apply(policy, root, tmp_path)
    # Opened by name relative to the parent's dir fd (or by full path).
    data = re.escape(str(root / "data"))
    opened = re.findall(rf'openat\((?:\d+|AT_FDCWD), "(?:{data}/)?(\.?f\d+[^"]*)"', trace)
    assert len(set(opened)) == 2, opened
    tmp = next(name for name in opened if name != "f007")
    assert re.fullmatch(r"\.f007~\d+-[0-9a-f]{6}-[0-9a-f]+\.undistro-tmp", tmp)
    assert (root / "data/f007").read_text() == "content 7"


@needs_strace
def test_first_run_syncs_once_per_wave_not_once_per_file(
    policy: PolicyDir, root: Path, tmp_path: Path
) -> None:
    write_policy(policy)
    trace = traced_apply(policy, root, tmp_path)
    # SQLite's own syncs while creating the store; none per managed file.
    fsyncs = re.findall(r"^\d+\s+(?:fsync|fdatasync)\((\d+)", trace, re.M)
    assert len(fsyncs) < 25
    # and no per-file cost creeps in elsewhere (a retried failing import
    # once added five stat calls per file hashed)
    stats = re.findall(r"^\d+\s+(?:newfstatat|stat|lstat|statx)\(", trace, re.M)
    assert len(stats) < 4 * N + 1500
    assert 1 <= len(re.findall(r"^\d+\s+syncfs\(", trace, re.M)) <= 4
    assert len(os.listdir(root / "data")) == N


def test_a_store_left_half_created_is_read_as_empty_and_completed(
    policy: PolicyDir, root: Path
) -> None:
    """What a full disk left behind before the schema was one transaction:
    the tables, but ``user_version`` 0. Such a store holds no data (nothing
    was written before the version); it must not be refused for ever."""
    import sqlite3

    from undistro.state import _SCHEMA

    state = root / "var/lib/undistro"
    state.mkdir(parents=True)
    db = sqlite3.connect(state / "state.db")
    db.executescript(_SCHEMA)
    db.close()
    write_policy(policy)
    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(policy), "--root", str(root), "-q"]
    first = subprocess.run(cmd, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    again = subprocess.run(cmd, capture_output=True, text=True, check=True)
    assert f"{N} kept" in again.stdout
    db = sqlite3.connect(state / "state.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == 1
