"""The agent under load and under hostile policies, with a real agent process.

The targets (converged within 1 s of a storm's end, RSS under 1.5x idle,
SIGTERM within 1 s) are measured by bench/agent_storm.py; these tests assert
what must hold on any machine, however loaded: the storm converges, memory
stays bounded, SIGTERM is honoured, callers are answered, a burst of policy
edits is one reload, and a policy that cannot be compiled is rejected
without taking the agent down.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests._drift import replace
from tests.agent.conftest import AgentProc, run_cli, wait_until, write_policy
from undistro.state import StateStore


def _files(n: int) -> dict[str, str]:
    return {f"/srv/d{i // 100}/f{i}": f"f{i}\n" for i in range(n)}


def _settled(agent: AgentProc) -> dict:
    """The status once the agent has nothing left to do."""

    def quiet() -> dict | None:
        status = agent.status()
        pending = status.get("pending", {})
        return None if pending.get("busy") or pending.get("dirty") else status

    wait_until(quiet, 120, "agent idle")
    time.sleep(0.3)
    return wait_until(quiet, 120, "agent idle")


def _proc_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} for {pid}")


def _rewrite(paths: list[Path], rounds: int) -> None:
    for i in range(rounds):
        data = f"storm {i}\n".encode()
        for p in paths:
            fd = os.open(p, os.O_WRONLY | os.O_TRUNC)
            os.write(fd, data)
            os.close(fd)


def _wrong(agent: AgentProc, files: dict[str, str]) -> list[str]:
    out = []
    for path, content in files.items():
        try:
            if agent.path(path).read_text() != content:
                out.append(path)
        except OSError:
            out.append(path)
    return out


def _no_tracebacks(agent: AgentProc) -> None:
    log = agent.log()
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]


@pytest.mark.slow
def test_storm_converges_and_memory_stays_bounded(agent: AgentProc) -> None:
    files = _files(2000)
    write_policy(agent.policy, files)
    agent.start()
    _settled(agent)
    idle_kb = _proc_kb(agent.pid, "VmRSS")
    Path(f"/proc/{agent.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    storm = dict(list(files.items())[:500])
    _rewrite([agent.path(p) for p in storm], 10)
    wait_until(lambda: not _wrong(agent, storm), 120, "storm repaired")
    status = _settled(agent)
    assert not _wrong(agent, files)
    peak_kb = _proc_kb(agent.pid, "VmHWM")
    assert peak_kb < 2 * idle_kb + 20 * 1024, (idle_kb, peak_kb)
    events = status["events"]
    # Every storm file was repaired at least once, and the agent did not
    # chase its own renames: its repairs' events were recognised.
    assert events["repairs"] >= 500
    assert events["own_writes"] >= 500
    assert status["pending"]["waiting"] == 0
    _no_tracebacks(agent)


def _storm_until(paths: list[Path], stop: threading.Event) -> threading.Thread:
    def loop() -> None:
        while not stop.is_set():
            _rewrite(paths, 1)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    return thread


@pytest.mark.slow
def test_sigterm_during_a_storm_exits_cleanly(agent: AgentProc) -> None:
    files = _files(2000)
    write_policy(agent.policy, files)
    agent.start()
    stop = threading.Event()
    writer = _storm_until([agent.path(p) for p in list(files)[:500]], stop)
    try:
        time.sleep(1.0)
        assert agent.status()["events"]["repairs"] > 0  # busy, not idle
        sent = time.monotonic()
        assert agent.proc is not None
        agent.proc.send_signal(signal.SIGTERM)
        code = agent.proc.wait(10)
        took = time.monotonic() - sent
    finally:
        stop.set()
        writer.join()
    assert code == 0, agent.log()[-2000:]
    # The latency itself is a benchmark figure (bench/agent_storm.py: 33-990 ms);
    # this bound only says the pass was cut short. 4.8 s was seen on a fresh
    # Debian 12 sharing 2 cores with a second full suite and two CPython builds.
    assert took < 8, took
    assert "stopped" in agent.log()
    _no_tracebacks(agent)


def test_two_applies_through_the_agent_during_drift_both_return(agent: AgentProc) -> None:
    files = _files(300)
    write_policy(agent.policy, files)
    agent.start()
    drifting = agent.path("/srv/d0/f0")
    stop = threading.Event()

    def drift() -> None:
        while not stop.is_set():
            drifting.write_text("drift\n")
            time.sleep(0.01)  # 100 Hz

    threads = [threading.Thread(target=drift, daemon=True)]
    results: list[subprocess.CompletedProcess[str]] = []

    def apply() -> None:
        results.append(run_cli("apply", str(agent.policy), "--root", str(agent.root), "-q"))

    threads += [threading.Thread(target=apply) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for t in threads[1:]:
            t.join(120)
            assert not t.is_alive(), "an apply through the agent never returned"
    finally:
        stop.set()
        threads[0].join()
    assert len(results) == 2
    for out in results:
        assert out.returncode == 0, out.stderr
        assert "300 resources checked" in out.stdout, out.stdout
    assert agent.status()["pending"]["waiting"] == 0, "a caller is left waiting"
    wait_until(lambda: drifting.read_text() == "f0\n", what="last drift repaired")


def test_sed_i_burst_on_the_policy_coalesces_reloads(agent: AgentProc) -> None:
    write_policy(agent.policy, {"/etc/motd": "rev-0\n"})
    agent.start()
    main = agent.policy / "policy" / "main.toml"
    for i in range(40):
        subprocess.run(["sed", "-i", f"s/rev-{i}$/rev-{i + 1}/", str(main)], check=True)
    wait_until(lambda: agent.path("/etc/motd").read_text() == "rev-40\n", 30, "last edit applied")
    status = _settled(agent)
    events = status["events"]
    # Coalesced: one compile at a time and the newest edit wins, so reloads
    # follow compiles, not edits: fewer reloads than edits, however fast a
    # compile is (forked by the zygote ~15 ms, ~10 reloads for these 40 edits;
    # exec'd ~80 ms, ~3), and the last edit is the one in force (above).
    assert 1 <= events["reloads"] < 40, events
    assert events["rejected_policies"] == 0, status["policy"]
    assert events["scratch_events"] >= 40  # sed's temp files were seen, and ignored
    _no_tracebacks(agent)


def _rejected_then_old_policy_enforced(agent: AgentProc) -> str:
    status = wait_until(
        lambda: (s := agent.status())["policy"]["last_error"] and s, 90, "policy rejected"
    )
    error = status["policy"]["last_error"]
    assert status["events"]["rejected_policies"] >= 1
    assert status["policy"]["resources"] == 1
    entries = StateStore(agent.state_dir).journal(limit=100)
    assert any(e.outcome == "policy-error" for e in entries)
    # The old policy is still enforced, and promptly.
    agent.path("/etc/motd").write_text("drift\n")
    wait_until(lambda: agent.path("/etc/motd").read_text() == "hello\n", 10, "repaired")
    assert not agent.path("/etc/bomb").exists()
    out = run_cli("status", "--root", str(agent.root), timeout=20)
    assert out.returncode == 0 and "policy rejected" in out.stdout, out
    _no_tracebacks(agent)
    return str(error)


def test_template_exhausting_memory_is_a_rejected_policy(agent: AgentProc) -> None:
    write_policy(agent.policy, {"/etc/motd": "hello\n"})
    agent.start()
    (agent.policy / "templates").mkdir()
    (agent.policy / "templates" / "bomb.j2").write_text("{{ 'a' * 10**12 }}\n")
    main = agent.policy / "policy" / "main.toml"
    bomb = '\n[[file]]\npath = "/etc/bomb"\ntemplate = "bomb.j2"\nmode = "0644"\n'
    replace(main, main.read_text() + bomb)
    error = _rejected_then_old_policy_enforced(agent)
    assert "\n" not in error.strip(), error


def test_fifo_as_a_policy_file_is_rejected_and_never_wedges(agent: AgentProc) -> None:
    write_policy(agent.policy, {"/etc/motd": "hello\n"})
    agent.start()
    fifo = agent.policy / "policy" / ".fifo.tmp"
    os.mkfifo(fifo)
    os.rename(fifo, agent.policy / "policy" / "fifo.toml")  # moved_to: a settled change
    # While the compile is blocked (or refused), the agent keeps working.
    agent.path("/etc/motd").write_text("drift\n")
    wait_until(lambda: agent.path("/etc/motd").read_text() == "hello\n", 10, "repaired meanwhile")
    _rejected_then_old_policy_enforced(agent)
    assert agent.terminate(10) == 0


def test_sigterm_during_the_start_up_converge_exits_cleanly(agent: AgentProc) -> None:
    write_policy(agent.policy, _files(3000))
    agent.start(ready=False)
    wait_until(lambda: "resources" in agent.log(), 60, "policy loaded")
    assert agent.terminate(10) == 0, agent.log()
    assert "ready:" not in agent.log()  # it stopped in the middle, as asked
    _no_tracebacks(agent)


def _compile_children(policy: Path) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if str(policy).encode() not in cmdline:
                continue
            # Exec'd (python -m undistro.agent._compile), or forked by the
            # agent's zygote (named compile-policy, the agent's cmdline).
            if b"undistro.agent._compile" in cmdline or _comm(entry) == "compile-policy":
                found.append(int(entry))
    return found


def _comm(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_blocked_compile_dies_with_a_killed_agent(agent: AgentProc) -> None:
    write_policy(agent.policy, {"/etc/motd": "hello\n"})
    agent.start()
    fifo = agent.policy / "policy" / ".fifo.tmp"
    os.mkfifo(fifo)
    os.rename(fifo, agent.policy / "policy" / "fifo.toml")
    children = wait_until(lambda: _compile_children(agent.policy), 10, "a compile child")
    agent.kill()  # SIGKILL: no chance to clean up

    def gone() -> bool:
        return not any(_alive(pid) for pid in _compile_children(agent.policy))

    try:
        wait_until(gone, 10, "the compile child gone")
    finally:
        for pid in _compile_children(agent.policy):
            os.kill(pid, signal.SIGKILL)
    assert children
