"""Work done in a forked child comes back as rows; a dying child is an error."""

from __future__ import annotations

import os

import pytest

from undistro.agent._forked import in_child
from undistro.errors import ApplyError


def test_rows_come_back_in_order() -> None:
    assert [row[:2] for row in in_child(lambda: ([i, str(i), 0] for i in range(3)))] == [
        [0, "0"],
        [1, "1"],
        [2, "2"],
    ]
    rows = list(in_child(lambda: [[os.getpid()]]))
    assert rows[0][0] != os.getpid()  # it really ran elsewhere


def test_child_memory_does_not_stay_in_the_parent() -> None:
    def rss_kb() -> int:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))

    before = rss_kb()
    list(in_child(lambda: [[len([object() for _ in range(500_000)])]]))
    assert rss_kb() - before < 5_000


def test_a_crashing_child_is_an_apply_error(capfd: pytest.CaptureFixture[str]) -> None:
    def boom() -> list[list[int]]:
        raise RuntimeError("kaput")

    with pytest.raises(ApplyError, match="exit status 70"):
        list(in_child(boom))
    assert "kaput" in capfd.readouterr().err
