"""The one-shot benchmark's results: medians, the machine, markdown tables."""

from __future__ import annotations

import os
import platform
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench._measure import Sample, group_syscalls

PHASES = ("first", "noop", "repair")
PHASE_TITLES = {"first": "first run", "noop": "no-op", "repair": "drift repair"}


@dataclass
class Cell:
    """One tool at one N: repeated samples per phase and one traced run."""

    tool: str
    n: int
    samples: dict[str, list[Sample]] = field(default_factory=lambda: {p: [] for p in PHASES})
    syscalls: dict[str, dict[str, int]] = field(default_factory=dict)
    error: str | None = None

    @property
    def runs(self) -> int:
        return min(len(s) for s in self.samples.values())

    def median(self, phase: str) -> Sample | None:
        """Each figure's median on its own (the fastest run need not be the leanest)."""
        samples = self.samples[phase]
        if not samples:
            return None
        return Sample(
            statistics.median(s.wall for s in samples),
            statistics.median(s.cpu for s in samples),
            statistics.median(s.rss_mb for s in samples),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Cell:
        """The inverse of to_json, so a saved run can be re-rendered."""
        cell = cls(data["tool"], data["n"], error=data["error"])
        for phase, figures in data["phases"].items():
            cell.samples[phase] = [Sample(**s) for s in figures["samples"]]
            if figures["syscalls"] is not None:
                cell.syscalls[phase] = figures["syscalls"]
        return cell

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "n": self.n,
            "error": self.error,
            "runs": self.runs,
            "phases": {
                phase: {
                    "samples": [asdict(s) for s in self.samples[phase]],
                    "median": asdict(m) if (m := self.median(phase)) else None,
                    "syscalls": self.syscalls.get(phase),
                    "syscall_groups": group_syscalls(self.syscalls[phase])
                    if phase in self.syscalls
                    else None,
                }
                for phase in PHASES
            },
        }


def machine() -> dict[str, str]:
    """What the figures were measured on, for the reader to compare with theirs."""
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        for line in info:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as info:
        mem_kb = int(info.readline().split()[1])
    try:
        debian = Path("/etc/debian_version").read_text().strip()
    except OSError:
        debian = "not Debian"
    return {
        "cpus": str(len(os.sched_getaffinity(0))),
        "cpu_model": cpu,
        "memory": f"{mem_kb / 1024 / 1024:.0f} GiB",
        "debian": debian,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "load_average": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }


def markdown(
    cells: list[Cell], *, command: str, versions: dict[str, str], info: dict[str, str], fs: str
) -> str:
    """The results as the markdown that goes into docs/benchmarks.md."""
    lines = [
        f"Command: `{command}`",
        "",
        f"Machine: {info['cpus']} CPUs ({info['cpu_model']}), {info['memory']}, "
        f"Debian {info['debian']}, kernel {info['kernel']}, work directory on {fs}; "
        f"load average {info.get('load_average_start', '?')} at the start, "
        f"{info['load_average']} at the end (the machine is shared: prefer CPU s to wall s).",
        "",
        "Versions: " + "; ".join(f"{tool} {v}" for tool, v in versions.items()) + ".",
        "",
        "| tool | N | phase | runs | wall s (median) | CPU s | peak RSS MB "
        "| wall ÷ undistro | CPU ÷ undistro |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    base = {
        (c.n, p): m for c in cells if c.tool == "undistro" for p in PHASES if (m := c.median(p))
    }
    for cell in cells:
        if cell.error and not cell.runs:
            lines.append(f"| {cell.tool} | {cell.n} | — | 0 | failed: {cell.error} | | | | |")
            continue
        for phase in PHASES:
            m = cell.median(phase)
            if m is None:
                continue
            ref = base.get((cell.n, phase))
            ratio = (
                f"{m.wall / ref.wall:.1f}x | {m.cpu / ref.cpu:.1f}x"
                if ref and cell.tool != "undistro"
                else " | "
            )
            lines.append(
                f"| {cell.tool} | {cell.n} | {PHASE_TITLES[phase]} | {cell.runs} | "
                f"{m.wall:.3f} | {m.cpu:.3f} | {m.rss_mb:.1f} | {ratio} |"
            )
    if any(c.syscalls for c in cells):
        lines += _syscall_table(cells) + _marginal(cells)
    failures = [c for c in cells if c.error]
    if failures:
        lines += ["", *(f"- {c.tool} N={c.n}: {c.error}" for c in failures)]
    return "\n".join(lines) + "\n"


def _syscall_table(cells: list[Cell]) -> list[str]:
    lines = [
        "",
        "System calls of one traced sequence (`strace -f -c`, whole process tree):",
        "",
        "| tool | N | phase | stat-family per file | open | read | write | fsync-family "
        "| rename | all syscalls | most frequent |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for cell in cells:
        for phase in PHASES:
            calls = cell.syscalls.get(phase)
            if calls is None:
                continue
            g = group_syscalls(calls)
            top = ", ".join(
                f"{name} {count}"
                for name, count in sorted(calls.items(), key=lambda kv: -kv[1])[:3]
            )
            lines.append(
                f"| {cell.tool} | {cell.n} | {PHASE_TITLES[phase]} | {g['stat'] / cell.n:.2f} | "
                f"{g['open']} | {g['read']} | {g['write']} | {g['sync']} | {g['rename']} | "
                f"{g['total']} | {top} |"
            )
    return lines


_SLOPE_GROUPS = ("stat", "open", "read", "write", "sync")


def _marginal(cells: list[Cell]) -> list[str]:
    """Syscalls per *extra* file between a tool's smallest and largest traced N.

    Per-file figures at small N are mostly start-up (an interpreter, a
    runtime, fact discovery); the slope is what each managed file costs.
    """
    rows = []
    for tool in dict.fromkeys(c.tool for c in cells):
        traced = sorted((c for c in cells if c.tool == tool and c.syscalls), key=lambda c: c.n)
        if len(traced) < 2 or traced[0].n == traced[-1].n:
            continue
        small, large = traced[0], traced[-1]
        for phase in PHASES:
            if phase not in small.syscalls or phase not in large.syscalls:
                continue
            a, b = group_syscalls(small.syscalls[phase]), group_syscalls(large.syscalls[phase])
            per = {k: (b[k] - a[k]) / (large.n - small.n) for k in a}
            rows.append(
                f"| {tool} | {small.n}→{large.n} | {PHASE_TITLES[phase]} | "
                # round + 0.0 turns a tiny negative slope into 0.00, not -0.00
                + " | ".join(f"{round(per[k], 2) + 0.0:.2f}" for k in _SLOPE_GROUPS)
                + f" | {per['total']:.1f} |"
            )
    if not rows:
        return []
    return [
        "",
        "Syscalls per extra managed file (slope between the smallest and largest N):",
        "",
        "| tool | N | phase | stat-family | open | read | write | fsync-family | all |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
        *rows,
    ]
