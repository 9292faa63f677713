"""The agent supervising ``[[service]]`` resources: real agents, real services.

Each test runs in a short temp dir (notify socket paths must fit in 107
bytes) and kills the agent and every service process it started, by pid.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._services import alive, service_cmd, short_tmp, started, wait_started
from tests.agent.conftest import AgentProc, run_cli, wait_until
from tests.agent.test_idle import ALLOWED, _settled
from tests.supervisor._idle import idle_syscalls


@pytest.fixture
def world() -> Iterator[tuple[Path, AgentProc]]:
    with short_tmp() as tmp:
        policy = tmp / "policy"
        (policy / "policy").mkdir(parents=True)
        (policy / "undistro.toml").write_text('name = "services"\n')
        agent = AgentProc(policy, tmp / "root", tmp / "agent.log")
        try:
            yield tmp, agent
        finally:
            agent.kill()


def write(agent: AgentProc, text: str) -> None:
    target = agent.policy / "policy" / "main.toml"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, target)


def service_status(agent: AgentProc, name: str) -> dict[str, Any]:
    result = run_cli("services", "--root", str(agent.root), "--json")
    assert result.returncode == 0, result.stderr
    reply = json.loads(result.stdout)
    assert reply["source"] == "agent"
    return reply["services"].get(name, {})


def promise(agent: AgentProc, rid: str) -> dict[str, object]:
    return agent.status()["resources"].get(rid, {})


def test_crash_restarts_with_backoff(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "crash", delay=0.05)
    write(
        agent,
        f'[[service]]\nname = "crashy"\ncommand = {cmd}\n'
        "restart_delay = 0.2\ncrash_loop_limit = 50\n",
    )
    agent.start()
    pids = wait_started(tmp, 4)
    starts = [(tmp / "pids" / str(p)).stat().st_mtime for p in pids[:4]]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # 0.2 s, 0.4 s, 0.8 s of backoff (plus the 0.05 s each run lasts)
    assert gaps[0] >= 0.2 and gaps[1] >= 0.4 and gaps[2] >= 0.8, gaps
    assert gaps[1] > gaps[0] * 1.5 and gaps[2] > gaps[1] * 1.5, gaps
    assert "exited 1; restart in 0.2s" in agent.log()
    assert service_status(agent, "crashy")["restarts"] >= 3


def test_crash_loop_fails_the_promise_and_is_journalled(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "crash", delay=0.0)
    write(
        agent,
        f'[[service]]\nname = "loop"\ncommand = {cmd}\n'
        "restart_delay = 0.02\ncrash_loop_limit = 3\n",
    )
    agent.start(ready=False)
    wait_until(lambda: "ready:" in agent.log(), 30, "ready")
    wait_until(lambda: promise(agent, "service:loop").get("state") == "failed", what="failed")
    assert "crash loop" in str(promise(agent, "service:loop")["error"])
    count = len(started(tmp))
    time.sleep(0.5)
    assert len(started(tmp)) == count, "retried after the crash-loop limit"
    log = run_cli("log", "--root", str(agent.root), "--resource", "service:loop")
    assert "failed" in log.stdout and "crash loop" in log.stdout, log.stdout
    assert service_status(agent, "loop")["phase"] == "failed"


def test_config_drift_is_repaired_before_the_restart_it_triggers(
    world: tuple[Path, AgentProc],
) -> None:
    tmp, agent = world
    conf = agent.path("/etc/app.conf")
    cmd = service_cmd(tmp, "serve", config=str(conf))
    tables = (
        '[[file]]\npath = "/etc/app.conf"\ncontent = "port={port}\\n"\nmode = "0644"\n'
        'notify = ["service:app"]\n\n'
        f'[[service]]\nname = "app"\ncommand = {cmd}\nreadiness = "notify"\n'
        'requires = ["file:/etc/app.conf"]\n'
    )
    write(agent, tables.format(port=8080))
    agent.start()
    (first,) = wait_started(tmp)
    logfile = agent.path("/var/lib/undistro/services/builtin/app.log")
    wait_until(lambda: "config: port=8080" in logfile.read_text(), what="first config")
    # Drift, repaired back to the very content the service started with: it
    # owes no restart (the process never read the drift).
    conf.write_text("port=6666\n")
    wait_until(lambda: agent.log().count("repaired file:/etc/app.conf") == 2, what="repaired")
    assert conf.read_text() == "port=8080\n"
    time.sleep(0.3)
    assert started(tmp) == [first] and alive(first), "restarted for a harmless repair"
    # A new content is a refresh: the restart comes after the file is in place.
    write(agent, tables.format(port=9090))
    _, second = wait_started(tmp, 2)
    wait_until(lambda: f"started {second}" in logfile.read_text(), what="restarted")
    wait_until(lambda: "ready" in logfile.read_text().split(f"started {second}")[1])
    text = logfile.read_text()
    assert "config: port=6666" not in text, "a service started on drifted configuration"
    assert text.split(f"started {second}")[0].endswith("config: port=9090\n"), text
    assert not alive(first)
    wait_until(lambda: "refresh: restart service app" in agent.log(), what="journalled")


def test_stop_timeout_kills_the_whole_group(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "ignore-term")
    write(agent, f'[[service]]\nname = "stubborn"\ncommand = {cmd}\nstop_timeout = 0.5\n')
    agent.start()
    main, child = wait_started(tmp, 2)
    began = time.monotonic()
    result = run_cli("service", "stop", "stubborn", "--root", str(agent.root))
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert "stopped" in result.stdout
    assert took >= 0.5, "SIGKILL before stop_timeout"
    wait_until(lambda: not alive(main) and not alive(child), 5, "group killed")


def test_service_commands_through_the_agent(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "serve", delay=0.1)
    write(agent, f'[[service]]\nname = "web"\ncommand = {cmd}\nreadiness = "notify"\n')
    agent.start()
    (first,) = started(tmp)
    status = service_status(agent, "web")
    assert (status["phase"], status["pid"], status["ready"]) == ("running", first, True)
    result = run_cli("service", "restart", "web", "--root", str(agent.root))
    assert result.returncode == 0, result.stderr
    _, second = started(tmp)
    assert f"pid {second}" in result.stdout and not alive(first)
    assert service_status(agent, "web")["restarts"] == 1
    result = run_cli("service", "reload", "web", "--root", str(agent.root))
    assert result.returncode == 0, result.stderr
    logs = lambda: run_cli("logs", "web", "--root", str(agent.root)).stdout  # noqa: E731
    wait_until(lambda: "reloaded" in logs(), what="SIGHUP seen")
    result = run_cli("service", "start", "nosuch", "--root", str(agent.root))
    assert result.returncode != 0
    assert result.stderr.strip() == "undistro: no service 'nosuch' in the policy"


def test_agent_kill9_and_restart_readopts_without_duplicate(
    world: tuple[Path, AgentProc],
) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "serve", delay=0.1)
    write(agent, f'[[service]]\nname = "keep"\ncommand = {cmd}\nreadiness = "notify"\n')
    agent.start()
    (pid,) = started(tmp)
    agent.kill()
    assert alive(pid), "the service died with its supervisor"
    agent.start()
    wait_until(lambda: "service:keep: adopted" in agent.log(), what="adopted")
    assert started(tmp) == [pid], "a duplicate was started"
    status = service_status(agent, "keep")
    assert (status["pid"], status["phase"]) == (pid, "running")
    # Still supervised: a crash is seen and restarted.
    os.kill(pid, signal.SIGKILL)
    wait_started(tmp, 2)


def test_service_removed_from_the_policy_is_stopped(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp)
    write(
        agent,
        f'[[service]]\nname = "a"\ncommand = {cmd}\n\n[[service]]\nname = "b"\ncommand = {cmd}\n',
    )
    agent.start()
    wait_started(tmp, 2)
    pa, pb = (service_status(agent, name)["pid"] for name in ("a", "b"))
    write(agent, f'[[service]]\nname = "a"\ncommand = {cmd}\n')
    wait_until(lambda: "stopped service b: it left the policy" in agent.log(), what="retired")
    wait_until(lambda: not alive(pb), 5, "b stopped")
    assert alive(pa)
    assert sorted(started(tmp)) == sorted([pa, pb])  # a was kept, not restarted
    listed = json.loads(run_cli("services", "--root", str(agent.root), "--json").stdout)
    assert set(listed["services"]) == {"a"}


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="strace not installed (.ci/apt)")
def test_idle_agent_with_5_services_makes_no_syscalls(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "serve", delay=0.05)
    write(
        agent,
        "\n".join(
            f'[[service]]\nname = "s{i}"\ncommand = {cmd}\nreadiness = "notify"\n' for i in range(5)
        ),
    )
    agent.start()
    wait_started(tmp, 5)
    _settled(agent)
    calls = idle_syscalls(agent.pid, 10)
    extra = {name: n for name, n in calls.items() if name not in ALLOWED}
    assert extra == {}, calls
    # Still supervising after being watched: a crash is restarted.
    os.kill(started(tmp)[0], signal.SIGKILL)
    wait_started(tmp, 6)


def test_crash_restart_converges_requirements_first(world: tuple[Path, AgentProc]) -> None:
    """ "init calls CM": before the supervisor restarts a crashed service, the
    agent converges what it requires (here an unguarded exec that stamps a
    file each time it runs), so the restart happens on converged state."""
    tmp, agent = world
    stamps = agent.path("/var/stamps")
    cmd = service_cmd(tmp, "serve", delay=0.05)
    write(
        agent,
        '[[exec]]\nname = "prepare"\n'
        'command = "echo run >> \\"$UNDISTRO_ROOT/var/stamps\\""\nshell = true\n\n'
        f'[[service]]\nname = "db"\ncommand = {cmd}\nreadiness = "notify"\n'
        'requires = ["exec:prepare"]\n',
    )
    agent.path("/var").mkdir(parents=True)
    agent.start()
    (first,) = started(tmp)
    assert stamps.read_text() == "run\n"
    os.kill(first, signal.SIGKILL)
    _, second = wait_started(tmp, 2)
    assert stamps.read_text() == "run\nrun\n", "restarted without converging its requirements"
    assert stamps.stat().st_mtime_ns <= (tmp / "pids" / str(second)).stat().st_mtime_ns
    wait_until(lambda: "before restarting service:db" in agent.log(), what="journalled cause")


def test_policy_change_restarts_the_service_with_its_new_spec(
    world: tuple[Path, AgentProc],
) -> None:
    tmp, agent = world
    cmd = service_cmd(tmp, "serve", delay=0.05)
    table = f'[[service]]\nname = "env"\ncommand = {cmd}\nreadiness = "notify"\n'
    write(agent, table + 'environment = { LEVEL = "1" }\n')
    agent.start()
    (first,) = started(tmp)
    write(agent, table + 'environment = { LEVEL = "2" }\n')
    _, second = wait_started(tmp, 2)
    wait_until(lambda: "restart (spec changed) service env" in agent.log(), what="restart")
    with open(f"/proc/{second}/environ", "rb") as f:
        assert b"LEVEL=2" in f.read().split(b"\0")
    assert not alive(first)


def test_agent_as_init_forwards_sigterm(world: tuple[Path, AgentProc]) -> None:
    tmp, agent = world
    write(agent, f'[[service]]\nname = "i"\ncommand = {service_cmd(tmp)}\n')
    agent.start("--init")
    (pid,) = wait_started(tmp)
    assert agent.status()["pid"] != agent.pid  # the agent runs in the init's child
    assert agent.terminate() == 0  # SIGTERM to the init, forwarded to the agent
    assert "undistro agent: stopped" in agent.log()
    assert alive(pid)  # not PID 1: the services outlive the agent, as without --init
