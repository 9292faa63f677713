"""The benchmark's measuring: rusage of real children, strace's summary."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import signal
import sys
from pathlib import Path

import pytest
from bench._measure import RunFailed, Sample, group_syscalls, parse_strace_summary, run, traced


def _python(code: str, tmp_path: Path, timeout: float = 60) -> Sample:
    return run(
        [sys.executable, "-c", code],
        env=os.environ,
        cwd=tmp_path,
        log=tmp_path / "log",
        timeout=timeout,
    )


def test_run_reports_the_childs_memory_and_cpu(tmp_path: Path) -> None:
    sample = _python("b = bytearray(64 << 20); b[::4096] = b'x' * len(b[::4096])", tmp_path)
    assert sample.rss_mb >= 64
    assert sample.cpu > 0
    assert sample.wall >= sample.cpu / 4


def test_nonzero_exit_is_a_failure_naming_the_log(tmp_path: Path) -> None:
    with pytest.raises(RunFailed, match="exit status 3"):
        _python("print('boom'); raise SystemExit(3)", tmp_path)
    assert "boom" in (tmp_path / "log").read_text()


def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "grandchild"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(pidfile)!r}, 'w').write(str(p.pid))\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(RunFailed, match="no exit after"):
        _python(code, tmp_path, timeout=2)
    grandchild = int(pidfile.read_text())
    try:
        pidfd = os.pidfd_open(grandchild)
    except ProcessLookupError:
        return  # already gone and reaped
    try:
        # SIGKILL is delivered asynchronously: wait (bounded) for the exit.
        exited, _, _ = select.select([pidfd], [], [], 10)
        assert exited, f"grandchild {grandchild} outlived its process group's SIGKILL"
    finally:
        with contextlib.suppress(ProcessLookupError):
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        os.close(pidfd)


def test_strace_summary_counts_a_real_run(tmp_path: Path) -> None:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (listed in .ci/apt/core.txt)")
    summary = tmp_path / "summary"
    code = "import os\nfor _ in range(50): os.stat('/')"
    run(
        traced([sys.executable, "-c", code], summary),
        env=os.environ,
        cwd=tmp_path,
        log=tmp_path / "log",
        timeout=60,
    )
    calls = parse_strace_summary(summary.read_text())
    groups = group_syscalls(calls)
    assert calls["execve"] >= 1
    assert groups["stat"] >= 50
    assert groups["total"] == sum(calls.values())


def test_strace_summary_parser_skips_headers_and_total() -> None:
    text = (
        "% time     seconds  usecs/call     calls    errors syscall\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        " 60.00    0.000060           6        10         2 newfstatat\n"
        " 40.00    0.000040           4        10           fsync\n"
        "------ ----------- ----------- --------- --------- ----------------\n"
        "100.00    0.000100           5        20         2 total\n"
    )
    assert parse_strace_summary(text) == {"newfstatat": 10, "fsync": 10}
