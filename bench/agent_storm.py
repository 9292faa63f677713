"""The agent under an event storm: time to convergence after the storm ends,
peak RSS, CPU, and SIGTERM latency in the middle of a storm; beside a
one-shot ``undistro apply`` that repairs the same drift.

    PYTHONPATH=src /work/main/.venv/bin/python bench/agent_storm.py [--files 10000]
        [--storm 1000] [--rounds 10] [--git 1000]

Phases, on one agent managing ``--files`` files (100 per directory):

* **storm**: ``--storm`` managed files rewritten ``--rounds`` times each, as
  fast as one Python loop can (open(O_TRUNC) + write + close);
* **git checkout**: the last ``--git`` managed files are a git working tree
  of ``ROOT/srv/bench``: ``git checkout -f`` of a commit that changes
  every one of them;
* **applies**: two ``undistro apply`` through the agent at once while a
  managed file drifts at 100 Hz;
* **SIGTERM**: a writer thread rewrites the storm files in a loop; SIGTERM
  is sent mid-storm and the time to the agent's exit is measured.

Convergence is polled by this script (reading the files; the agent itself
never polls): the clock runs from the storm's last write to the moment every
file holds its promised content. Peak RSS is the kernel's high-water mark
(``VmHWM``), reset through ``/proc/PID/clear_refs`` just before each storm;
CPU is the agent's utime+stime from the storm's start to the agent going
quiet. The one-shot figures apply the same drift with no agent running.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _agent import SRC, Agent, make_policy, rss_mb
from _measure import run as measure_run

GIT_ENV = {
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@localhost",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@localhost",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--storm", type=int, default=1000, help="files rewritten in the storm")
    parser.add_argument("--rounds", type=int, default=10, help="rewrites of each storm file")
    parser.add_argument("--git", type=int, default=1000, help="files changed by git checkout")
    parser.add_argument("--limit", type=float, default=120, help="give up converging after (s)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ubench-storm-") as tmp:
        top = Path(tmp)
        root = top / "root"
        root.mkdir()
        paths = make_policy(top / "p", args.files)
        storm = [root / p.lstrip("/") for p in paths[: args.storm]]
        tree = [root / p.lstrip("/") for p in paths[len(paths) - args.git :]]
        named = paths[: args.storm] + paths[len(paths) - args.git :]
        want = {f: f"{p}\n" for f, p in zip(storm + tree, named, strict=True)}
        rows: list[tuple[str, str, str, str, str]] = []
        agent = Agent(top / "p", root)
        try:
            idle = rss_mb(agent.settle()["pid"])
            git = GitTree(top / "git", root / "srv/bench", tree) if args.git else None
            rows.append(storm_phase(agent, storm, args.rounds, want, args.limit, idle))
            if git is not None:
                rows.append(git_phase(agent, git, want, args.limit, idle))
            applies = applies_phase(agent, top, root, storm[0])
            sigterm = sigterm_phase(agent, storm)
        finally:
            agent.stop()
        oneshot = [oneshot_storm(top, root, storm, args.rounds, want)]
        if git is not None:
            oneshot.append(oneshot_git(top, root, git, want))
    print(f"agent: {args.files} managed files, idle RSS {idle:.1f} MB\n")
    print("| workload | converged after the storm | peak RSS (x idle) | CPU | checks |")
    print("|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print(
        f"\ntwo `undistro apply` through the agent during 100 Hz drift: answered after"
        f" {applies[0]:.2f} s and {applies[1]:.2f} s; agent peak RSS {applies[2]:.1f} MB"
    )
    print(f"SIGTERM during a storm: exit status {sigterm[0]} after {sigterm[1] * 1000:.0f} ms\n")
    print("| one-shot `undistro apply` of the same drift | wall | CPU | peak RSS |")
    print("|---|---|---|---|")
    for row2 in oneshot:
        print("| " + " | ".join(row2) + " |")


def storm_phase(
    agent: Agent, files: list[Path], rounds: int, want: dict[Path, str], limit: float, idle: float
) -> tuple[str, str, str, str, str]:
    before = _mark(agent)
    rewrite(files, rounds)
    return _converge(agent, f"{len(files)} files x {rounds} rewrites", before, want, limit, idle)


def git_phase(
    agent: Agent, git: GitTree, want: dict[Path, str], limit: float, idle: float
) -> tuple[str, str, str, str, str]:
    before = _mark(agent)
    status = git.checkout("changed")
    label = f"`git checkout` of {len(git.files)} files"
    if status != 0:
        label += " (git met the agent's repairs: exit 1)"
    return _converge(agent, label, before, want, limit, idle)


def applies_phase(
    agent: Agent, top: Path, root: Path, drifting: Path
) -> tuple[float, float, float]:
    """Two applies through the agent at once while a file drifts at 100 Hz:
    the seconds until each is answered, and the agent's peak RSS (MB)."""
    agent.settle()
    agent.reset_peak()
    stop = threading.Event()

    def drift() -> None:
        while not stop.is_set():
            drifting.write_text("drift\n")
            time.sleep(0.01)

    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(top / "p"), "--root", str(root), "-q"]
    env = {**os.environ, "PYTHONPATH": SRC}
    writer = threading.Thread(target=drift, daemon=True)
    writer.start()
    try:
        started = time.monotonic()
        procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
        took = []
        for proc in procs:
            if proc.wait(600) != 0:
                raise SystemExit(f"an apply through the agent failed: exit {proc.returncode}")
            took.append(time.monotonic() - started)
    finally:
        stop.set()
        writer.join()
    return took[0], took[1], agent.peak_rss_mb()


def sigterm_phase(agent: Agent, files: list[Path]) -> tuple[int, float]:
    """SIGTERM while a writer keeps the agent busy: (exit status, seconds)."""
    stop = threading.Event()
    writer = threading.Thread(target=_rewrite_until, args=(files, stop), daemon=True)
    writer.start()
    try:
        time.sleep(1.0)  # well inside the storm
        sent = time.monotonic()
        agent.proc.send_signal(signal.SIGTERM)
        try:
            code = agent.proc.wait(30)
        except subprocess.TimeoutExpired:
            code = -9
        return code, time.monotonic() - sent
    finally:
        stop.set()
        writer.join()


def oneshot_storm(
    top: Path, root: Path, files: list[Path], rounds: int, want: dict[Path, str]
) -> tuple[str, str, str, str]:
    rewrite(files, rounds)
    return _apply(top, root, f"{len(files)} files after {rounds} rewrites each", want)


def oneshot_git(
    top: Path, root: Path, git: GitTree, want: dict[Path, str]
) -> tuple[str, str, str, str]:
    git.checkout("changed")
    return _apply(top, root, f"{len(git.files)} files after `git checkout`", want)


# -- helpers ----------------------------------------------------------------------


class GitTree:
    """A repository whose working tree is the managed files' directory.

    Commit ``promised`` is the policy's content, commit ``changed``
    rewrites every one. It is built in a scratch copy (the agent must not
    repair it meanwhile) and then checked out with ``--work-tree`` onto the
    managed tree, as a deployment by git would do."""

    def __init__(self, scratch: Path, work_tree: Path, files: list[Path]) -> None:
        self.git_dir, self.work_tree, self.files = scratch / ".git", work_tree, files
        rel = [str(f.relative_to(work_tree)) for f in files]
        for name, f in zip(rel, files, strict=True):
            (scratch / name).parent.mkdir(parents=True, exist_ok=True)
            (scratch / name).write_text(f.read_text())
        self._git(scratch, "init", "-q")
        self._git(scratch, "add", *rel)
        self._git(scratch, "commit", "-qm", "promised")
        self._git(scratch, "tag", "promised")
        for name in rel:
            (scratch / name).write_text(f"changed by git {name}\n")
        self._git(scratch, "commit", "-qam", "changed")
        self._git(scratch, "tag", "changed")
        self._git(scratch, "checkout", "-qf", "promised")

    def checkout(self, ref: str) -> int:
        """``git checkout -f REF`` on the managed tree; git's exit status.

        git unlinks each file and creates it with O_EXCL: when the agent's
        repair lands in between, git says "File exists" for that file and
        exits 1. That is the race a real deployment would meet; the files
        are rewritten (or repaired) either way."""
        return self._git(self.work_tree, f"--git-dir={self.git_dir}",
                         f"--work-tree={self.work_tree}", "checkout", "-qf", ref,
                         check=False)  # fmt: skip

    @staticmethod
    def _git(where: Path, *argv: str, check: bool = True) -> int:
        env = {**os.environ, **GIT_ENV}
        done = subprocess.run(["git", "-C", str(where), *argv], check=check, env=env,
                              stderr=subprocess.DEVNULL)  # fmt: skip
        return done.returncode


def rewrite(files: list[Path], rounds: int) -> None:
    for i in range(rounds):
        data = f"storm {i}\n".encode()
        for f in files:
            fd = os.open(f, os.O_WRONLY | os.O_TRUNC | os.O_CREAT, 0o644)
            os.write(fd, data)
            os.close(fd)


def _rewrite_until(files: list[Path], stop: threading.Event) -> None:
    i = 0
    while not stop.is_set():
        rewrite(files[i % len(files) : i % len(files) + 50], 1)
        i += 50


def _mark(agent: Agent) -> tuple[float, int]:
    """Reset the agent's RSS high-water mark; its CPU and check count now."""
    agent.reset_peak()
    return agent.cpu_seconds(), agent.status()["events"]["checks"]


def _converge(
    agent: Agent,
    label: str,
    before: tuple[float, int],
    want: dict[Path, str],
    limit: float,
    idle: float,
) -> tuple[str, str, str, str, str]:
    ended = time.monotonic()
    wrong = list(want)
    while wrong and time.monotonic() - ended < limit:
        wrong = [f for f in wrong if _read(f) != want[f]]
        time.sleep(0.005)
    took = time.monotonic() - ended
    status = agent.settle(limit)
    peak = agent.peak_rss_mb()
    cpu = agent.cpu_seconds() - before[0]
    checks = status["events"]["checks"] - before[1]
    child = status["child_max_rss_bytes"] / 2**20
    done = (
        f"{took:.2f} s" if not wrong else f"NOT converged: {len(wrong)} wrong after {limit:.0f} s"
    )
    longest = status["pending"]["longest_pass_s"]
    return (
        label,
        done,
        f"{peak:.1f} MB ({peak / idle:.2f}x); forked checks {child:.1f} MB",
        f"{cpu:.2f} s",
        f"{checks} (longest pass {longest:.2f} s)",
    )


def _apply(top: Path, root: Path, label: str, want: dict[Path, str]) -> tuple[str, str, str, str]:
    cmd = [sys.executable, "-m", "undistro.cli", "apply", str(top / "p"), "--root", str(root), "-q"]
    env = {**os.environ, "PYTHONPATH": SRC}
    sample = measure_run(cmd, env=env, cwd=top, log=top / "oneshot.log", timeout=600)
    wrong = [f for f in want if _read(f) != want[f]]
    if wrong:
        raise SystemExit(f"one-shot apply left {len(wrong)} files wrong, e.g. {wrong[0]}")
    return label, f"{sample.wall:.2f} s", f"{sample.cpu:.2f} s", f"{sample.rss_mb:.1f} MB"


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


if __name__ == "__main__":
    main()
