"""``undistro agent|status|reload`` and ``apply`` through a running agent."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import undistro.agent
from tests._drift import replace
from tests.agent.conftest import SRC, AgentProc, run_cli, wait_until, write_policy

FILES = {"/etc/motd": "hello\n"}


def test_public_surface() -> None:
    assert set(undistro.agent.__all__) == {
        "AGENT_RESOURCE",
        "Agent",
        "AgentError",
        "Converger",
        "Outcome",
        "socket_path",
        "try_agent",
    }
    assert undistro.agent.Agent.__name__ == "Agent"


def test_client_does_not_pull_in_asyncio() -> None:
    code = "import sys, undistro.agent; print('asyncio' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC}, capture_output=True
    )
    assert out.stdout.strip() == b"False", out.stderr


def test_socket_is_private(agent: AgentProc) -> None:
    write_policy(agent.policy, FILES)
    agent.start()
    mode = os.stat(os.path.join(agent.state_dir, "agent.sock")).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_status_with_and_without_an_agent(agent: AgentProc) -> None:
    write_policy(agent.policy, FILES)
    agent.start()
    out = run_cli("status", "--root", str(agent.root), "--all")
    assert out.returncode == 0, out.stderr
    assert f"agent pid {agent.pid}" in out.stdout
    assert "1 resources" in out.stdout and "file:/etc/motd" in out.stdout
    assert agent.terminate() == 0
    out = run_cli("status", "--root", str(agent.root))
    assert out.returncode == 0, out.stderr
    assert "no agent runs" in out.stdout and "file:/etc/motd" in out.stdout


def test_apply_goes_through_the_running_agent(agent: AgentProc) -> None:
    write_policy(agent.policy, FILES)
    agent.start()
    before = agent.status()
    out = run_cli("apply", str(agent.policy), "--root", str(agent.root))
    assert out.returncode == 0, out.stderr
    assert "1 resources checked — 1 kept" in out.stdout
    after = agent.status()
    # The agent itself did the checks: its counters moved, and the journal
    # shows no competing run from the command line.
    assert after["control_requests"] == before["control_requests"] + 2
    assert after["events"]["checks"] == before["events"]["checks"] + 1
    assert after["resources"]["file:/etc/motd"]["cause"] == "apply (via agent)"


def test_apply_of_another_policy_is_refused_while_an_agent_runs(agent: AgentProc, tmp_path):
    write_policy(agent.policy, FILES)
    agent.start()
    other = tmp_path / "other"
    write_policy(other, {"/etc/other": "x"})
    out = run_cli("apply", str(other), "--root", str(agent.root))
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "the agent runs policy" in out.stderr
    assert not agent.path("/etc/other").exists()


def test_reload_reports_acceptance_and_rejection(agent: AgentProc) -> None:
    write_policy(agent.policy, FILES)
    agent.start()
    out = run_cli("reload", "--root", str(agent.root))
    assert out.returncode == 0 and "1 resources" in out.stdout, out.stderr
    main = agent.policy / "policy" / "main.toml"
    replace(main, main.read_text() + "\n[[file]]\npath = 'relative'\n")
    out = run_cli("reload", "--root", str(agent.root))
    assert out.returncode == 2
    assert "path" in out.stderr and "absolute" in out.stderr
    assert agent.status()["policy"]["resources"] == 1


def test_reload_without_an_agent_fails_in_one_line(tmp_path) -> None:
    out = run_cli("reload", "--root", str(tmp_path))
    assert out.returncode == 1
    assert out.stderr.startswith("undistro: no agent runs") and out.stderr.count("\n") == 1


def test_invalid_policy_at_start_changes_nothing(agent: AgentProc) -> None:
    write_policy(agent.policy, {"/etc/motd": "x", "/etc/issue": "y"})
    main = agent.policy / "policy" / "main.toml"
    main.write_text(main.read_text().replace('"0644"', '"0999"', 1))
    out = run_cli("agent", str(agent.policy), "--root", str(agent.root), timeout=30)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "mode" in out.stderr
    assert os.listdir(agent.root) == []


def test_missing_policy_dir_is_one_line(tmp_path) -> None:
    out = run_cli("agent", str(tmp_path / "nope"), "--root", str(tmp_path), timeout=30)
    assert out.returncode == 2
    assert "policy directory not found" in out.stderr and out.stderr.count("\n") == 1


def test_second_agent_on_the_same_state_is_refused(agent: AgentProc, tmp_path) -> None:
    write_policy(agent.policy, FILES)
    agent.start()
    second = AgentProc(agent.policy, agent.root, tmp_path / "second.log")
    try:
        second.start(ready=False)
        assert second.proc is not None
        assert second.proc.wait(30) == 1
        assert "another agent already runs" in second.log()
    finally:
        second.kill()
    assert agent.status()["ok"]


def test_audit_every_from_the_node_config(agent: AgentProc) -> None:
    write_policy(agent.policy, FILES)
    node = agent.root / "etc" / "undistro" / "node.toml"
    node.parent.mkdir(parents=True)
    node.write_text("audit_every = 0.2\n")
    agent.start()
    assert agent.status()["audit_every"] == 0.2
    wait_until(lambda: agent.status()["resources"]["file:/etc/motd"]["cause"] == "audit")
