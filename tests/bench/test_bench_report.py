"""The benchmark report: medians, ratios to undistro, per-file syscall slopes."""

from __future__ import annotations

from bench._measure import Sample
from bench._report import PHASES, Cell, machine, markdown


def _cell(tool: str, n: int, walls: list[float], stats: int) -> Cell:
    cell = Cell(tool, n)
    for phase in PHASES:
        cell.samples[phase] = [Sample(w, w / 2, 10 * w) for w in walls]
        cell.syscalls[phase] = {"newfstatat": stats, "openat": n, "fsync": 1}
    return cell


def test_median_takes_each_figure_on_its_own() -> None:
    cell = Cell("x", 1)
    cell.samples["noop"] = [Sample(1, 9, 5), Sample(3, 1, 7), Sample(2, 5, 6)]
    assert cell.median("noop") == Sample(2, 5, 6)
    assert cell.median("first") is None


def test_markdown_shows_ratios_and_slopes() -> None:
    cells = [
        _cell("undistro", 100, [0.1, 0.2, 0.3], stats=1000),
        _cell("undistro", 1000, [0.5], stats=1900),
        _cell("peer", 100, [0.4, 0.4, 0.4], stats=5000),
        _cell("peer", 1000, [2.0], stats=50000),
    ]
    cells.append(Cell("broken", 100, error="peer: exit status 1"))
    text = markdown(cells, command="cmd", versions={"peer": "1.0"}, info=machine(), fs="ext4")
    lines = text.splitlines()
    assert "| peer | 100 | no-op | 3 | 0.400 | 0.200 | 4.0 | 2.0x | 2.0x |" in lines
    assert "| undistro | 100 | no-op | 3 | 0.200 | 0.100 | 2.0 |  |  |" in lines
    assert "| undistro | 100→1000 | no-op | 1.00 | 1.00 | 0.00 | 0.00 | 0.00 | 2.0 |" in lines
    assert "| peer | 100→1000 | first run | 50.00 | 1.00 | 0.00 | 0.00 | 0.00 | 51.0 |" in lines
    assert "| broken | 100 | — | 0 | failed: peer: exit status 1 | | | | |" in lines
    assert "- broken N=100: peer: exit status 1" in lines
