"""Timelines against a real agent: start, change the world, expect repaired."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests._drift import drifts, replace
from tests.agent.conftest import AgentProc, wait_until, write_policy
from undistro.state import StateStore

MOTD = "/etc/motd"
FILES = {MOTD: "hello\n", "/etc/app/app.conf": "port = 80\n"}


def _started(agent: AgentProc, files: dict[str, str] = FILES, **kw: str) -> AgentProc:
    write_policy(agent.policy, files, **kw)
    return agent.start()


def _repaired(agent: AgentProc, path: str, content: str) -> None:
    target = agent.path(path)

    def ok() -> bool:
        try:
            st = target.lstat()
            return target.read_text() == content and st.st_mode & 0o7777 == 0o644
        except OSError:
            return False

    wait_until(ok, what=f"{path} repaired")


def _journal(agent: AgentProc) -> list:
    return StateStore(agent.state_dir).journal(limit=1000)


@drifts
def test_drift_of_a_managed_file_is_repaired(agent: AgentProc, drift, flag) -> None:
    _started(agent)
    before = agent.status()["events"]["repairs"]
    drift(agent.path(MOTD))
    _repaired(agent, MOTD, "hello\n")
    wait_until(lambda: agent.status()["events"]["repairs"] > before, what="repair counted")
    entry = [e for e in _journal(agent) if e.resource == f"file:{MOTD}"][-1]
    assert entry.outcome == "repaired"
    assert entry.cause.startswith(flag)
    assert entry.cause.endswith(str(agent.path(MOTD)))
    # Only the drifted resource was checked for that event.
    assert "motd" not in agent.status()["resources"]["file:/etc/app/app.conf"]["cause"]


def test_unmanaged_file_in_purged_directory_is_removed(agent: AgentProc) -> None:
    _started(agent, {"/etc/app/conf.d/a.conf": "a\n"}, purge_dir="/etc/app/conf.d")
    stray = agent.path("/etc/app/conf.d/stray.conf")
    stray.write_text("not declared\n")
    wait_until(lambda: not stray.exists(), what="stray removed")
    assert agent.path("/etc/app/conf.d/a.conf").read_text() == "a\n"


def test_broken_policy_keeps_the_old_one_then_the_fix_applies(agent: AgentProc) -> None:
    _started(agent)
    main = agent.policy / "policy" / "main.toml"
    good = main.read_text()
    replace(main, good + '\n[[file]]\npath = "/etc/new"\ncontent = "x"\nmode = "999"\n')
    wait_until(lambda: agent.status()["policy"]["last_error"], what="policy rejected")
    error = agent.status()["policy"]["last_error"]
    assert "policy/main.toml" in error and "mode" in error
    assert "policy rejected, keeping the previous one" in agent.log()
    assert any(e.outcome == "policy-error" for e in _journal(agent))
    assert not agent.path("/etc/new").exists()
    # The old policy is still enforced.
    agent.path(MOTD).write_text("drift\n")
    _repaired(agent, MOTD, "hello\n")
    # Fixing it applies the new policy, and only then.
    replace(main, good + '\n[[file]]\npath = "/etc/new"\ncontent = "new\\n"\nmode = "0644"\n')
    _repaired(agent, "/etc/new", "new\n")
    status = agent.status()
    assert status["policy"]["last_error"] is None
    assert status["policy"]["resources"] == 3
    assert status["events"]["reloads"] == 1


def test_a_released_resource_is_no_longer_enforced(agent: AgentProc) -> None:
    _started(agent)
    write_policy(agent.policy, {MOTD: "hello\n"})
    wait_until(lambda: agent.status()["policy"]["resources"] == 1, what="swap")
    conf = agent.path("/etc/app/app.conf")
    conf.write_text("mine now\n")
    agent.path(MOTD).write_text("drift\n")
    _repaired(agent, MOTD, "hello\n")  # the event for conf came first, and was ignored
    assert conf.read_text() == "mine now\n"


@pytest.mark.slow
def test_burst_of_writes_is_coalesced(agent: AgentProc) -> None:
    _started(agent)
    before = agent.status()["events"]
    target = agent.path(MOTD)
    writes = 10_000
    for i in range(writes):
        with open(target, "w") as f:
            f.write(f"write {i}\n")
    _repaired(agent, MOTD, "hello\n")
    wait_until(lambda: agent.status()["events"]["events"] > before["events"], what="counted")
    after = agent.status()["events"]
    checks = after["checks"] - before["checks"]
    # The agent drains the whole queue per wake-up: measured ~6 writes per check here.
    assert 1 <= checks < writes / 2, checks
    assert after["events"] - before["events"] > checks


def test_queue_overflow_triggers_a_full_check(agent: AgentProc) -> None:
    _started(agent)
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    os.kill(agent.pid, signal.SIGSTOP)
    try:
        noise = agent.path("/etc/app")
        for i in range(limit + 100):
            (noise / f"n{i}").touch()
        agent.path(MOTD).write_text("lost in the overflow\n")  # its event is dropped
    finally:
        os.kill(agent.pid, signal.SIGCONT)
    _repaired(agent, MOTD, "hello\n")
    status = agent.status()
    assert status["events"]["overflows"] == 1, status["events"]
    rescans = [e for e in _journal(agent) if e.outcome == "rescan"]
    assert rescans and "overflow" in rescans[-1].cause


def test_moved_away_parent_directory_is_recreated_and_watched_again(
    agent: AgentProc, tmp_path: Path
) -> None:
    _started(agent)
    conf = agent.path("/etc/app/app.conf")
    os.rename(conf.parent, tmp_path / "gone")
    _repaired(agent, "/etc/app/app.conf", "port = 80\n")
    conf.write_text("drift again\n")
    _repaired(agent, "/etc/app/app.conf", "port = 80\n")


def test_sigterm_exits_cleanly(agent: AgentProc) -> None:
    _started(agent)
    assert agent.terminate() == 0
    assert "stopped" in agent.log()
    assert not os.path.exists(os.path.join(agent.state_dir, "agent.sock"))


def test_changes_made_while_down_are_repaired_at_start(agent: AgentProc) -> None:
    _started(agent)
    assert agent.terminate() == 0
    agent.path(MOTD).write_text("edited while down\n")
    agent.path("/etc/app/app.conf").chmod(0o600)
    agent.start()
    _repaired(agent, MOTD, "hello\n")
    _repaired(agent, "/etc/app/app.conf", "port = 80\n")
    causes = {e.resource: e.cause for e in _journal(agent)[-2:]}
    assert causes == {"file:/etc/motd": "agent start", "file:/etc/app/app.conf": "agent start"}


def test_sighup_reloads(agent: AgentProc) -> None:
    _started(agent)
    os.kill(agent.pid, signal.SIGHUP)
    wait_until(lambda: agent.status()["policy"]["resources"] == 2, what="still serving")
    assert agent.proc is not None and agent.proc.poll() is None


def test_idle_agent_converges_nothing_and_audit_is_off(agent: AgentProc) -> None:
    _started(agent)
    status = agent.status()
    assert status["audit_every"] is None
    assert sum(status["promises"].values()) == 2
    assert status["rss_bytes"] > 0 and status["uptime_s"] >= 0
