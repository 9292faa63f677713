"""Rendering a run for a person: what changed, why, and a one-line summary."""

from __future__ import annotations

from typing import TextIO

from undistro.engine import FAILED, KEPT, REPAIRED, SKIPPED, RunSummary


def print_run(
    summary: RunSummary, out: TextIO, *, show_diffs: bool = True, color: bool = False
) -> None:
    verbs = {
        REPAIRED: "would repair" if summary.dry_run else "repaired",
        FAILED: "FAILED",
        SKIPPED: "skipped",
    }
    marks = {REPAIRED: "~", FAILED: "!", SKIPPED: "-"}
    for result in summary.results.values():
        if result.status == KEPT:
            continue
        head = f"{marks[result.status]} {result.id}: {verbs[result.status]}"
        if result.refreshed:
            head += " (refresh owed)" if result.owed else " (notified)"
        out.write(_paint(head, result.status, color) + "\n")
        for action in result.actions:
            out.write(f"    {action}\n")
        if show_diffs:
            for diff in result.diffs():
                for line in diff.rstrip("\n").splitlines():
                    out.write(f"      {line}\n")
        if result.error:
            out.write(f"    error: {result.error}\n")
    out.write(summary_line(summary) + "\n")


def summary_line(summary: RunSummary) -> str:
    n = len(summary.results)
    word = "would repair" if summary.dry_run else "repaired"
    parts = [
        f"{summary.count(KEPT)} kept",
        f"{summary.count(REPAIRED)} {word}",
        f"{summary.count(FAILED)} failed",
        f"{summary.count(SKIPPED)} skipped",
    ]
    return f"{summary.policy}: {n} resources checked — {', '.join(parts)} ({summary.seconds:.3f} s)"


def _paint(text: str, status: str, color: bool) -> str:
    if not color:
        return text
    code = {REPAIRED: "33", FAILED: "31", SKIPPED: "90"}.get(status, "0")
    return f"\x1b[{code}m{text}\x1b[0m"
