"""kill -9 during an apply of 1,000 files: every file is old or new, never torn."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import PolicyDir

N = 1000
OLD, NEW = "old-" * 100, "new-" * 100


@pytest.mark.slow
def test_kill_9_during_apply_leaves_each_file_old_or_new(policy: PolicyDir, root: Path) -> None:
    def write_policy(body: str) -> None:
        policy.resources(
            "".join(
                f'[[file]]\npath = "/data/d{i % 10}/f{i:04d}"\ncontent = "{body}"\n\n'
                for i in range(N)
            )
        )

    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(policy), "--root", str(root), "-q"]
    write_policy(OLD)
    subprocess.run(cmd, check=True, capture_output=True)

    killed_mid_run = 0
    converged = OLD
    for attempt in range(6):
        body = NEW if converged == OLD else OLD
        write_policy(body)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        # Kill once the run is seen writing (a temp file or a file already
        # new), a little later each attempt; a fixed sleep let a quiet fresh
        # machine finish every run before the kill.
        _wait_until_writing(root, body, proc, after=attempt * 0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        killed_mid_run += proc.returncode == -signal.SIGKILL
        for i in range(N):
            text = (root / f"data/d{i % 10}/f{i:04d}").read_text()
            assert text in (OLD, NEW), f"f{i:04d} torn: {text[:20]!r}"
        # A later run converges fully and sweeps the killed run's temp files,
        # even those of files it finds already right: every other time the
        # policy is reverted to what was there before the killed run.
        if attempt % 2:
            write_policy(converged)
        else:
            converged = body
        subprocess.run(cmd, check=True, capture_output=True)
        for i in range(N):
            assert (root / f"data/d{i % 10}/f{i:04d}").read_text() == converged
        leftovers = [
            n for d in range(10) for n in os.listdir(root / f"data/d{d}") if n.startswith(".")
        ]
        assert leftovers == []
    assert killed_mid_run > 0


def _wait_until_writing(root: Path, body: str, proc: subprocess.Popen[bytes], after: float) -> None:
    deadline = time.monotonic() + 30
    while proc.poll() is None and time.monotonic() < deadline:
        for d in range(10):
            folder = root / f"data/d{d}"
            for name in os.listdir(folder):
                if name.startswith(".") or (
                    d == 0 and name == "f0000" and (folder / name).read_text() == body
                ):
                    time.sleep(after)
                    return
