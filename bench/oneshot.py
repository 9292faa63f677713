"""One-shot runs of undistro and its peers on the same N-file scenario.

For each tool and N, a *sequence* is: a fresh root and fresh tool state; the
first run (no file exists); a no-op run (nothing changed); one file edited
by hand; the drift-repair run. Every run's result is checked (all N files
with the right content and mode) outside the timings. Sequences repeat
until --repeat runs or the cell's --budget of seconds is spent, at least
once, so the slow peers are measured fewer times; then one more sequence
runs under `strace -f -c` for the syscall counts.

    PYTHONPATH=src python -m bench.oneshot --tools undistro,cfengine,puppet,ansible \\
        --sizes 100,1000,10000 --repeat 5

Writes bench/results/oneshot-<time>.json and .md and prints the markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._measure import RunFailed, Sample, parse_strace_summary, run, traced
from bench._report import PHASES, Cell, machine, markdown
from bench._tools import Tool, Undistro, peers
from bench.scenario import TOOLS, WRITERS, Layout, Scenario, drift, prepare_root, verify

RESULTS = Path(__file__).resolve().parent / "results"


def sequence(
    tool: Tool, scenario: Scenario, base: Path, log: Path, timeout: float, trace: bool
) -> dict[str, Sample]:
    """First run, no-op run, drift repair on a fresh root; each result verified."""
    if base.exists():
        shutil.rmtree(base)
    root, state = base / "root", base / "state"
    prepare_root(scenario, root)
    entry = WRITERS[tool.name](scenario, base / "policy", root)
    tool.prepare(state)
    samples = {}
    for phase in PHASES:
        if phase == "repair":
            drift(scenario, root)
        cmd = tool.command(entry, root, state)
        if trace:
            cmd = traced(cmd, base / f"{phase}.strace")
        samples[phase] = run(cmd, env=tool.env(state), cwd=base, log=log, timeout=timeout)
        problems = verify(scenario, root)
        if problems:
            raise RunFailed(
                f"after the {phase} run {len(problems)} of {scenario.n} promises are broken, "
                f"e.g. {problems[0]} (see {log})"
            )
    return samples


def measure(tool: Tool, scenario: Scenario, work: Path, args: argparse.Namespace) -> Cell:
    """Repeated sequences within the budget, then one traced sequence."""
    cell = Cell(tool.name, scenario.n)
    base = work / f"{tool.name}-{scenario.n}"
    log = work / f"{tool.name}-{scenario.n}.log"
    started = time.monotonic()
    try:
        while len(cell.samples["first"]) < args.repeat:
            for phase, sample in sequence(tool, scenario, base, log, args.timeout, False).items():
                cell.samples[phase].append(sample)
            _progress(f"{tool.name} N={scenario.n} run {cell.runs}: " + _brief(cell, -1))
            if time.monotonic() - started > args.budget:
                break
        if not args.no_strace:
            sequence(tool, scenario, base, log, args.timeout, True)
            for phase in PHASES:
                text = (base / f"{phase}.strace").read_text()
                cell.syscalls[phase] = parse_strace_summary(text)
    except (RunFailed, subprocess.SubprocessError, OSError) as exc:
        cell.error = str(exc)
        _progress(f"{tool.name} N={scenario.n}: FAILED: {exc}")
    return cell


def warm_up(tools: list[Tool], work: Path, args: argparse.Namespace) -> dict[str, str]:
    """One unmeasured 3-file sequence per tool; the tools that failed it.

    It fills the page cache and Python's bytecode caches, so that the first
    measured run is not billed for what only a freshly installed tool pays,
    and it finds a broken tool in seconds instead of after the others' runs.
    """
    broken = {}
    for tool in tools:
        try:
            sequence(
                tool,
                Scenario(3, args.layout),
                work / f"{tool.name}-warm-up",
                work / f"{tool.name}-warm-up.log",
                args.timeout,
                False,
            )
        except (RunFailed, subprocess.SubprocessError, OSError) as exc:
            broken[tool.name] = str(exc)
            _progress(f"{tool.name}: warm-up FAILED: {exc}")
    return broken


def _brief(cell: Cell, index: int) -> str:
    samples = {phase: cell.samples[phase][index] for phase in PHASES}
    return ", ".join(f"{p} {s.wall:.2f} s/{s.rss_mb:.0f} MB" for p, s in samples.items())


def _progress(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def _filesystem(path: Path) -> str:
    """The type of the file system holding path (fsync costs depend on it)."""
    best, kind = "", "unknown"
    with open("/proc/mounts") as mounts:
        for line in mounts:
            _, point, fstype, *_ = line.split()
            inside = str(path).startswith(point.rstrip("/") + "/") or str(path) == point
            if inside and len(point) >= len(best):
                best, kind = point, fstype
    return kind


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.oneshot",
        description=__doc__.split("\n\n")[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n"
        "  # the peers only, quick look\n"
        "  python -m bench.oneshot --tools cfengine,puppet --sizes 100 --repeat 1\n"
        "  # the full comparison, undistro from the lead's venv\n"
        "  PYTHONPATH=src python -m bench.oneshot --undistro '.venv/bin/python -m undistro.cli'",
    )
    parser.add_argument("--tools", default=",".join(TOOLS), help="default: all four")
    parser.add_argument("--sizes", default="100,1000,10000", help="values of N")
    parser.add_argument("--repeat", type=int, default=5, help="sequences per cell (default 5)")
    parser.add_argument(
        "--budget",
        type=float,
        default=120,
        help="stop repeating a cell after this many seconds (default 120; always >= 1 run)",
    )
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    parser.add_argument("--layout", type=Layout.parse, default=Layout(), help="default 100:1000")
    parser.add_argument(
        "--undistro",
        default=f"{sys.executable} -m undistro.cli",
        help="command that runs undistro (default: this interpreter -m undistro.cli)",
    )
    parser.add_argument(
        "--ansible-max-n", type=int, default=100, help="largest N for ansible (default 100)"
    )
    parser.add_argument("--no-strace", action="store_true", help="skip the syscall counts")
    parser.add_argument("--workdir", type=Path, help="default: a new directory in /var/tmp")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results directory")
    parser.add_argument(
        "--render", type=Path, metavar="JSON", help="only print the markdown of a saved run"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.render:
        saved = json.loads(args.render.read_text())
        cells = [Cell.from_json(c) for c in saved["cells"]]
        print(
            markdown(
                cells,
                command=saved["command"],
                versions=saved["versions"],
                info=saved["machine"],
                fs=saved.get("filesystem", "unknown"),
            ),
            end="",
        )
        return 0
    available: dict[str, Tool] = {"undistro": Undistro.from_command(args.undistro), **peers()}
    names = [t for t in args.tools.split(",") if t]
    unknown = sorted(set(names) - set(available))
    if unknown:
        print(f"oneshot: unknown tools {unknown}; choose from {list(available)}", file=sys.stderr)
        return 2
    tools = [available[t] for t in names]
    sizes = [int(s) for s in args.sizes.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="undistro-bench-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    versions = {t.name: t.version() for t in tools}
    load_at_start = " ".join(f"{x:.2f}" for x in os.getloadavg())
    cells = []
    try:
        broken = warm_up(tools, work, args)
        for n in sizes:
            scenario = Scenario(n, args.layout)
            for tool in tools:
                limit = args.ansible_max_n if tool.name == "ansible" else tool.max_n
                if tool.name in broken:
                    cells.append(Cell(tool.name, n, error=f"warm-up failed: {broken[tool.name]}"))
                elif limit is None or n <= limit:
                    cells.append(measure(tool, scenario, work, args))
        command = "python -m bench.oneshot " + shlex.join(argv)
        info = {**machine(), "load_average_start": load_at_start}
        fs = _filesystem(work)
        report = markdown(cells, command=command, versions=versions, info=info, fs=fs)
    finally:
        if args.keep or any(c.error for c in cells):
            _progress(f"work directory and logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / time.strftime("oneshot-%Y%m%d-%H%M%S")
    stem.with_suffix(".md").write_text(report)
    stem.with_suffix(".json").write_text(
        json.dumps(
            {
                "command": command,
                "layout": str(args.layout),
                "filesystem": fs,
                "machine": info,
                "versions": versions,
                "cells": [c.to_json() for c in cells],
            },
            indent=1,
        )
        + "\n"
    )
    print(report)
    _progress(f"results: {stem}.md and .json")
    return 1 if any(c.error for c in cells) else 0


if __name__ == "__main__":
    raise SystemExit(main())
