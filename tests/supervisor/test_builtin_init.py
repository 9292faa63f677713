"""run_as_init as PID 1 of a fresh pid namespace: reaps orphans, forwards signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from .builtin_harness import SRC, gone

INIT = """\
import os, signal, subprocess, sys, time
from undistro.supervisor import run_as_init

OUT = sys.argv[1]

def write(name, text):
    with open(f"{OUT}/{name}.tmp", "w") as f:
        f.write(text)
    os.rename(f"{OUT}/{name}.tmp", f"{OUT}/{name}")

def main():
    # /proc is the host's, so /proc/self names host pids.
    write("main", os.readlink("/proc/self"))
    # A double fork: the grandchild is orphaned to PID 1 and exits in 0.3 s.
    subprocess.run(["/bin/sh", "-c", f"(readlink /proc/self > {OUT}/orphan.tmp;"
                    f" mv {OUT}/orphan.tmp {OUT}/orphan; exec sleep 0.3) &"], check=True)
    got = []
    signal.signal(signal.SIGHUP, lambda s, f: got.append("HUP"))
    signal.signal(signal.SIGTERM, lambda s, f: got.append("TERM"))
    while "TERM" not in got:
        signal.pause()
    write("got", " ".join(got))
    return 7

assert os.getpid() == 1
write("init", os.readlink("/proc/self"))
sys.exit(run_as_init(main, grace=1))
"""


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare (util-linux)")
def test_init_reaps_orphans_and_forwards_signals(tmp_path: Path) -> None:
    script = tmp_path / "init.py"
    script.write_text(INIT)
    proc = subprocess.Popen(
        ["unshare", "--pid", "--fork", sys.executable, str(script), str(tmp_path)],
        env={**os.environ, "PYTHONPATH": SRC},
        stderr=subprocess.PIPE,
        text=True,
    )
    try:

        def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr
                time.sleep(0.02)

        wait_for(lambda: (tmp_path / "init").exists() and (tmp_path / "orphan").exists())
        init = int((tmp_path / "init").read_text())
        orphan = int((tmp_path / "orphan").read_text())
        # The orphan belongs to our init, which must reap it: no zombie left behind.
        wait_for(lambda: not os.path.exists(f"/proc/{orphan}"))
        os.kill(init, signal.SIGHUP)
        time.sleep(0.2)
        os.kill(init, signal.SIGTERM)
        assert proc.wait(timeout=10) == 7
        assert (tmp_path / "got").read_text() == "HUP TERM"
        assert gone(int((tmp_path / "main").read_text()))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
