"""What every refusal of a hostile policy must look like, checked in one place."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

import pytest

from tests.conftest import PolicyDir, RunCli

LINE_MAX = 300  # what a person reads in a log; errors.clip_line keeps to it


class Hang(BaseException):
    # Not an OSError (TimeoutError is one, and `except OSError` in the code
    # under test would swallow it) nor even an Exception.
    pass


@contextlib.contextmanager
def no_hang(seconds: float) -> Iterator[None]:
    """Fail, instead of wedging the suite, if the block runs past ``seconds``."""

    def alarm(signum: int, frame: FrameType | None) -> None:
        raise Hang(f"still running after {seconds} s: a hang")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def snapshot(top: Path) -> dict[str, tuple[int, int, int]]:
    """Every entry under ``top`` (not followed) with its mode, size, mtime."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            st = os.lstat(os.path.join(dirpath, name))
            out[os.path.relpath(os.path.join(dirpath, name), top)] = (
                st.st_mode,
                st.st_size,
                st.st_mtime_ns,
            )
    return out


Refused = Callable[..., list[str]]


@pytest.fixture
def refused(policy: PolicyDir, root: Path, cli: RunCli) -> Refused:
    """``refused(command="apply", within=S)``: run the command on the policy
    and assert the refusal is proper — exit 2, nothing on stdout, only
    one-line ``undistro:`` messages of at most LINE_MAX characters, no
    traceback, nothing changed in the root or the policy, done within S
    seconds. Returns the lines without their ``undistro: `` prefix."""

    def run(command: str = "apply", within: float = 20.0) -> list[str]:
        before = snapshot(policy.path)
        with no_hang(within):
            code, out, err = cli(command, policy, "--root", root)
        assert "Traceback" not in err
        assert (code, out) == (2, ""), err[:2000]
        lines = err.splitlines()
        assert lines, "a refusal must say why"
        for line in lines:
            assert line.startswith("undistro: "), line[:400]
            assert len(line) <= LINE_MAX, f"{len(line)} characters: {line[:400]}"
        assert os.listdir(root) == []  # not even the state directory
        assert snapshot(policy.path) == before
        return [line.removeprefix("undistro: ") for line in lines]

    return run
