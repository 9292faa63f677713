"""One run changes a root at a time: two one-shot applies, or an apply and
the agent, exclude each other through STATE_DIR/run.lock (real processes)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PolicyDir

UNDISTRO = [sys.executable, "-m", "undistro.cli"]

# Appends "start PID", sleeps, appends "end PID": two runs of it that overlap
# leave "start a, start b, ..." in the log, runs that exclude each other never.
SLOW_EXEC = """
[[exec]]
name = "slow"
command = 'echo start $$ >> "$UNDISTRO_ROOT/runs.log"; sleep 1.5; echo end $$ >> "$UNDISTRO_ROOT/runs.log"'
shell = true
"""


def start(*args: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*UNDISTRO, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def wait_for(predicate: object, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def runs_in_order(log: Path) -> list[str]:
    """The log's lines, checked to be start/end pairs that never overlap."""
    lines = log.read_text().split("\n")[:-1]
    for i in range(0, len(lines), 2):
        started, ended = lines[i].split(), lines[i + 1].split()
        assert started[0] == "start" and ended == ["end", started[1]], lines
    return lines


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    """Processes a test starts; any still running at the end are killed by pid."""
    started: list[subprocess.Popen[str]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_two_applies_of_2000_files_started_together_both_converge(
    policy: PolicyDir, root: Path, procs: list[subprocess.Popen[str]]
) -> None:
    n = 2000
    policy.resources(
        "".join(
            f'[[file]]\npath = "/data/d{i % 20}/f{i:05d}"\ncontent = "hello {i}"\n\n'
            for i in range(n)
        )
    )
    args = ("apply", policy, "--root", root, "-q")
    procs += [start(*args), start(*args)]
    results = [finish(p) for p in procs]
    for code, out, err in results:
        assert code == 0, err
        assert "Traceback" not in err
        assert " 0 failed" in out, out
    repaired = sorted(int(re.search(r"(\d+) repaired", out).group(1)) for _, out, _ in results)  # type: ignore[union-attr]
    assert repaired == [0, n]  # the second found the first's work done
    for i in range(0, n, 7):
        assert (root / f"data/d{i % 20}/f{i:05d}").read_text() == f"hello {i}"
    assert [f for d in (root / "data").iterdir() for f in os.listdir(d) if f[0] == "."] == []


def test_the_second_apply_waits_saying_for_whom(
    policy: PolicyDir, root: Path, procs: list[subprocess.Popen[str]]
) -> None:
    policy.resources(SLOW_EXEC)
    log = root / "runs.log"
    first = start("apply", policy, "--root", root, "-q")
    procs.append(first)
    wait_for(lambda: log.exists(), "the first apply to run its command")
    second = start("apply", policy, "--root", root, "-q")
    procs.append(second)
    code, _, err = finish(second)
    assert code == 0, err
    assert finish(first)[0] == 0
    waits = [line for line in err.splitlines() if "waiting" in line]
    assert len(waits) == 1, err  # said once
    assert f"waiting for pid {first.pid} (undistro.cli apply" in waits[0]
    assert "run.lock" in waits[0]
    assert len(runs_in_order(log)) == 4


def test_no_wait_refuses_at_once_naming_the_holder_and_changes_nothing(
    policy: PolicyDir, root: Path, procs: list[subprocess.Popen[str]]
) -> None:
    policy.resources(
        SLOW_EXEC + '\n[[file]]\npath = "/etc/x"\ncontent = "x"\nrequires = ["exec:slow"]\n'
    )
    log = root / "runs.log"
    first = start("apply", policy, "--root", root, "-q")
    procs.append(first)
    wait_for(lambda: log.exists(), "the first apply to run its command")
    began = time.monotonic()
    second = start("apply", policy, "--root", root, "-q", "--no-wait")
    procs.append(second)
    code, out, err = finish(second)
    assert time.monotonic() - began < 1.4  # did not wait for the 1.5 s command
    assert code == 1 and out == ""
    assert err.splitlines() == [err.strip()] and "Traceback" not in err
    assert err.startswith(f"undistro: pid {first.pid} (undistro.cli apply")
    assert "not waiting" in err
    assert finish(first)[0] == 0
    assert len(runs_in_order(log)) == 2  # only the first ran it


def test_an_apply_and_the_agent_exclude_each_other(
    policy: PolicyDir, root: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """The agent's start-up converge holds the run lock: an apply started
    meanwhile (the agent's socket is not up yet) waits for the agent's pid
    instead of running the same command at the same time; and an agent
    started while an apply runs waits for it."""
    policy.resources(SLOW_EXEC)
    log = root / "runs.log"
    agent = start("agent", policy, "--root", root)
    procs.append(agent)
    wait_for(lambda: log.exists(), "the agent's start-up converge")
    apply = start("apply", policy, "--root", root, "-q")
    procs.append(apply)
    code, _, err = finish(apply)
    assert code == 0, err
    assert f"waiting for pid {agent.pid} (undistro.cli agent" in err
    agent.send_signal(signal.SIGTERM)
    assert finish(agent, timeout=30)[0] == 0
    assert len(runs_in_order(log)) == 4

    log.unlink()
    apply = start("apply", policy, "--root", root, "-q")
    procs.append(apply)
    wait_for(lambda: log.exists(), "the apply to run its command")
    agent = start("agent", policy, "--root", root)
    procs.append(agent)
    wait_for(lambda: len(log.read_text().splitlines()) >= 3, "the agent's converge")
    agent.send_signal(signal.SIGTERM)
    assert finish(agent, timeout=30)[0] == 0
    assert finish(apply)[0] == 0
    assert len(runs_in_order(log)) == 4


def test_a_run_waiting_for_the_lock_can_be_stopped(
    policy: PolicyDir, root: Path, procs: list[subprocess.Popen[str]]
) -> None:
    """A daemon must honour SIGTERM without waiting for someone else's
    apply: ``Engine.stop_waiting`` makes a waiting run give up at once."""
    import threading

    from undistro.engine import Engine
    from undistro.errors import RunLockedError
    from undistro.policy import load_node, load_policy
    from undistro.state import StateStore

    policy.resources(SLOW_EXEC.replace("sleep 1.5", "sleep 3"))
    log = root / "runs.log"
    holder = start("apply", policy, "--root", root, "-q")
    procs.append(holder)
    wait_for(lambda: log.exists(), "the apply to run its command")
    node = load_node(str(root))
    state_dir = str(root / "var/lib/undistro")
    engine = Engine(
        load_policy(str(policy), node, node.facts(), cache_dir=state_dir),
        root=str(root),
        state=StateStore(state_dir),
        facts=node.facts(),
    )
    raised: list[BaseException] = []

    def run() -> None:
        try:
            engine.run()
        except BaseException as exc:
            raised.append(exc)

    waiter = threading.Thread(target=run)
    waiter.start()
    time.sleep(0.3)
    assert waiter.is_alive()  # waiting for the holder
    stopped = time.monotonic()
    engine.stop_waiting()
    waiter.join(timeout=2)
    assert not waiter.is_alive() and time.monotonic() - stopped < 0.5
    assert len(raised) == 1 and isinstance(raised[0], RunLockedError)
    assert f"pid {holder.pid}" in str(raised[0])
    assert finish(holder)[0] == 0
    assert len(runs_in_order(log)) == 2  # the stopped run did nothing
