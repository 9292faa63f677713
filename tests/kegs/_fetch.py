"""Run one of the scripts that fill the source cache from Debian's archive."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def fetch_sources(argv: list[str], *, needed_by: str, timeout: float) -> None:
    """Run ``argv`` in the repository; its exit 3 means the archive could not
    be reached and skips with the script's whole account of which file failed
    (under CI=true the suite's conftest makes that skip a failure)."""
    proc = subprocess.run(
        argv, cwd=REPO, capture_output=True, text=True, timeout=timeout, check=False
    )
    if proc.returncode == 3:
        why = " | ".join(proc.stderr.strip().splitlines())
        pytest.skip(f"Debian source archive unreachable, {needed_by} needs it: {why}")
    assert proc.returncode == 0, proc.stderr
