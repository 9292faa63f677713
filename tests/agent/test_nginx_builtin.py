"""Debian's real nginx under the builtin backend, driven by a real agent.

What an operator relies on: a config nginx rejects never reaches the running
master (``validate``), a good one is reloaded in place (same master pid),
a killed master comes back on the promised config, a refresh that failed
stays owed until it succeeds (across agent restarts), and a change to
``reload`` alone restarts nothing. nginx listens on loopback only, on a free
port, with its pid, logs and temp files in the test's tmp dir; every process
started is killed by pid at the end.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import NGINX, Nginx, alive, short_tmp
from tests.agent.conftest import AgentProc, run_cli, wait_until

pytestmark = pytest.mark.skipif(not os.path.exists(NGINX), reason="nginx not installed")


@pytest.fixture
def world() -> Iterator[tuple[AgentProc, Nginx]]:
    with short_tmp() as tmp:
        policy = tmp / "policy"
        (policy / "policy").mkdir(parents=True)
        (policy / "undistro.toml").write_text('name = "nginx"\n')
        agent = AgentProc(policy, tmp / "root", tmp / "agent.log")
        nginx = Nginx(tmp, tmp / "root")
        try:
            yield agent, nginx
        finally:
            agent.kill()
            nginx.kill()


def write(agent: AgentProc, text: str) -> None:
    target = agent.policy / "policy" / "main.toml"
    tmp = target.with_suffix(".tmp")
    tmp.write_text(text)
    os.rename(tmp, target)


def service(agent: AgentProc) -> dict[str, object]:
    reply = json.loads(run_cli("services", "--root", str(agent.root), "--json").stdout)
    return dict(reply["services"].get("nginx", {}))


def journal(agent: AgentProc, rid: str = "service:nginx") -> str:
    return run_cli("log", "--root", str(agent.root), "--resource", rid, "--limit", "500").stdout


def promise(agent: AgentProc, rid: str) -> dict[str, object]:
    return dict(agent.status()["resources"].get(rid, {}))


def serving(nginx: Nginx, body: str, timeout: float = 10) -> None:
    wait_until(lambda: nginx.get() == body, timeout, f"nginx serving {body!r}")


def started(agent: AgentProc, nginx: Nginx, body: str, **extra: str) -> int:
    write(agent, nginx.tables(body, **extra))
    agent.start()
    serving(nginx, body)
    pid = service(agent)["pid"]
    assert isinstance(pid, int) and alive(pid)
    return pid


def test_rejected_config_never_reaches_nginx_and_a_fixed_one_is_reloaded(
    world: tuple[AgentProc, Nginx],
) -> None:
    agent, nginx = world
    master = started(agent, nginx, "v1")
    conf = agent.path(nginx.conf)
    good = conf.read_text()
    rejected = nginx.tables("v2").replace(
        "access_log off;", "access_log off;\\n    bogus_directive on;"
    )
    write(agent, rejected)
    wait_until(lambda: promise(agent, f"file:{nginx.conf}").get("state") == "failed", 30, "failed")
    error = str(promise(agent, f"file:{nginx.conf}")["error"])
    assert "validate: nginx exited 1" in error and "bogus_directive" in error, error
    assert conf.read_text() == good, "a rejected config replaced the old one"
    # the candidate goes once judged (a second check of the same policy may be judging one)
    wait_until(lambda: not [p for p in conf.parent.iterdir() if p.name.startswith(".")], 10)
    assert service(agent)["pid"] == master
    assert nginx.get() == "v1"
    assert "reloaded (" not in journal(agent), "a rejected config was notified"
    log = journal(agent, f"file:{nginx.conf}")
    assert "failed" in log and "bogus_directive" in log, log

    write(agent, nginx.tables("v3"))
    serving(nginx, "v3")
    assert service(agent)["pid"] == master, "reloaded by a restart, not in place"
    assert nginx.reloads() == 1
    assert alive(master)
    wait_until(lambda: "reloaded (SIGHUP)" in journal(agent), what="reload journalled")
    assert "repaired file:" in journal(agent, f"file:{nginx.conf}").split("bogus_directive")[-1]


def test_kill9_of_the_master_with_a_tampered_config_comes_back_on_the_promised_one(
    world: tuple[AgentProc, Nginx],
) -> None:
    """The operator's report: config tampered and master killed at the same
    moment. nginx must come back on the repaired file, and no reload may be
    owed to (or fail against) a service that is restarting anyway."""
    agent, nginx = world
    master = started(agent, nginx, "v1")
    conf = agent.path(nginx.conf)
    tampered = conf.read_text().replace('"v1\\n"', '"evil\\n"')
    conf.write_text(tampered)
    os.killpg(master, signal.SIGKILL)
    wait_until(lambda: service(agent).get("pid") not in (None, master), 20, "a new master")
    serving(nginx, "v1")
    time.sleep(0.5)  # whatever the agent would do about the tamper, it has done
    assert nginx.get() == "v1"
    assert "evil" not in conf.read_text()
    status = agent.status()
    assert status["promises"].get("failed", 0) == 0, status["resources"]
    log = journal(agent)
    assert "signal SIGKILL" in log and "spawned" in log, log
    assert "reload failed" not in log, log
    assert "refresh owed" not in agent.log()


def test_a_repair_back_to_the_content_nginx_started_with_owes_no_reload(
    world: tuple[AgentProc, Nginx],
) -> None:
    agent, nginx = world
    master = started(agent, nginx, "v1")
    conf = agent.path(nginx.conf)
    good = conf.read_text()
    conf.write_text(good.replace('"v1\\n"', '"drift\\n"'))
    wait_until(lambda: conf.read_text() == good, 10, "repaired")
    wait_until(lambda: f"repaired file:{nginx.conf}" in agent.log(), what="journalled")
    time.sleep(0.3)
    assert nginx.reloads() == 0, "reloaded for a repair back to what it runs"
    assert "reloaded (" not in journal(agent)
    assert service(agent)["pid"] == master
    assert nginx.get() == "v1"


def test_a_failed_reload_stays_owed_across_an_agent_restart_until_it_succeeds(
    world: tuple[AgentProc, Nginx],
) -> None:
    agent, nginx = world
    deny = nginx.prefix / "deny-reload"
    # Fails while ``deny`` exists: the daemon is fine, its reload is not.
    reload = [
        "/bin/sh",
        "-c",
        f'if [ -e {deny} ]; then exit 3; fi; exec kill -HUP "$MAINPID"',
    ]
    extra = f"reload = {json.dumps(reload)}\n"
    master = started(agent, nginx, "v1", service_extra=extra)
    deny.touch()
    write(agent, nginx.tables("v2", service_extra=extra))
    wait_until(lambda: promise(agent, "service:nginx").get("state") == "failed", 30, "failed")
    error = str(promise(agent, "service:nginx")["error"])
    assert "reload command exited 3" in error and "refresh owed" in error, error
    assert nginx.get() == "v1"
    wait_until(lambda: "reload failed: command exited 3" in journal(agent), what="journalled")
    assert nginx.reloads() == 0
    plan = run_cli("plan", str(agent.policy), "--root", str(agent.root))
    assert "service:nginx: would repair (refresh owed)" in plan.stdout, plan.stdout
    assert "refresh: reload service nginx" in plan.stdout

    agent.kill()  # the owed refresh must outlive the agent
    deny.unlink()
    agent.start()
    serving(nginx, "v2")
    assert service(agent)["pid"] == master, "the owed refresh restarted nginx"
    assert nginx.reloads() == 1
    assert promise(agent, "service:nginx").get("state") == "repaired"
    applied = run_cli("apply", str(agent.policy), "--root", str(agent.root))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "0 repaired, 0 failed" in applied.stdout, applied.stdout


def test_a_change_to_reload_alone_does_not_restart_nginx(
    world: tuple[AgentProc, Nginx],
) -> None:
    agent, nginx = world
    master = started(agent, nginx, "v1")
    extra = 'reload = ["/bin/sh", "-c", "exec kill -HUP \\"$MAINPID\\""]\nstop_timeout = 5\n'
    write(agent, nginx.tables("v1", service_extra=extra))
    wait_until(
        lambda: "update service nginx in place, no restart" in agent.log(), 10, "updated in place"
    )
    assert service(agent)["pid"] == master
    assert alive(master)
    assert "spec updated in place" in journal(agent)
    # The new spec is the one in force: a change of config now reloads.
    write(agent, nginx.tables("v2", service_extra=extra))
    serving(nginx, "v2")
    assert service(agent)["pid"] == master


def test_every_state_change_of_nginx_is_journalled(world: tuple[AgentProc, Nginx]) -> None:
    agent, nginx = world
    master = started(agent, nginx, "v1")
    os.killpg(master, signal.SIGKILL)
    wait_until(lambda: service(agent).get("pid") not in (None, master), 20, "a new master")
    serving(nginx, "v1")
    write(agent, nginx.tables("v2"))
    serving(nginx, "v2")
    words = ("spawned, pid", "signal SIGKILL; restart in", "reloaded (SIGHUP)")
    wait_until(lambda: all(w in journal(agent) for w in words), what=f"journalled: {words}")
    log = journal(agent)
    assert log.count("spawned, pid") == 2, log
    assert "backoff" in log and "running" in log, log


def test_plan_says_the_candidate_will_be_validated(tmp_path: Path) -> None:
    nginx = Nginx(tmp_path, tmp_path / "root")
    policy = tmp_path / "p"
    (policy / "policy").mkdir(parents=True)
    (policy / "undistro.toml").write_text('name = "v"\n')
    table = nginx.tables("v1").split("[[service]]")[0].replace('notify = ["service:nginx"]', "")
    (policy / "policy" / "main.toml").write_text(table)
    plan = run_cli("plan", str(policy), "--root", str(tmp_path / "root"))
    assert plan.returncode == 0, plan.stderr
    assert "validated by nginx before the rename" in plan.stdout, plan.stdout
