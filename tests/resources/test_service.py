"""``[[service]]``: the pure plan as a table, validation, and one-shot runs
with real processes (builtin and s6 backends)."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests._services import alive, service_cmd, short_tmp, started, wait_started
from undistro.errors import ValidationError
from undistro.resources.service import (
    ReloadService,
    RestartService,
    Service,
    ServiceState,
)


def svc(**extra: object) -> Service:
    table: dict[str, object] = {"name": "web", "command": ["/bin/true"], **extra}
    resource = Service.from_table(table)
    assert isinstance(resource, Service)
    return resource


def kinds(actions: list[object]) -> list[str]:
    return [type(a).__name__ for a in actions]


UP = ServiceState("running", 42, True, None)

PLAN_TABLE = [
    # (fields, probed state, actions)
    ({}, ServiceState(None, None, False, None), ["StartService"]),
    ({}, UP, []),
    ({}, ServiceState("starting", 42, True, None), ["StartService"]),  # waits for ready
    ({}, ServiceState("backoff", None, True, None), []),  # the supervisor restarts it
    ({}, ServiceState("failed", None, True, None), ["StartService"]),
    ({}, ServiceState("stopped", None, True, None), ["StartService"]),
    ({}, ServiceState("running", 42, False, None), ["StartService"]),  # spec changed
    ({}, ServiceState(None, None, False, "s6"), ["StopService", "StartService"]),
    ({"readiness": "exit"}, ServiceState("stopped", None, True, None, done=True), []),
    (
        {"readiness": "exit"},
        ServiceState("stopped", None, False, None, done=True),
        ["StartService"],
    ),
    ({"running": False}, UP, ["StopService"]),
    ({"running": False}, ServiceState("stopped", None, True, None), []),
    ({"running": False}, ServiceState(None, None, False, None), []),
    ({"enabled": False}, ServiceState(None, None, False, None), []),
    ({"enabled": False}, UP, []),
    # reload, restart policy, timeouts changed: the process stays
    ({}, ServiceState("running", 42, True, None, updated=False), ["UpdateService"]),
    ({}, ServiceState("backoff", None, True, None, updated=False), ["UpdateService"]),
]


@pytest.mark.parametrize(("fields", "state", "expected"), PLAN_TABLE)
def test_plan_table(fields: dict[str, object], state: ServiceState, expected: list[str]) -> None:
    assert kinds(svc(**fields).plan(state)) == expected


def test_plan_says_why_it_restarts() -> None:
    (action,) = svc().plan(ServiceState("running", 42, False, None))
    assert action.summary == "restart (spec changed) service web (builtin)"


REFRESH_TABLE = [
    ({}, UP, [RestartService]),
    ({"on_notify": "reload"}, UP, [ReloadService]),
    ({}, ServiceState(None, None, False, None), []),  # starting anyway, with the new config
    ({"running": False}, ServiceState("stopped", None, True, None), []),
    ({"enabled": False}, UP, []),
    # it read the notifying files as they are now: a repair back to them owes nothing
    ({}, ServiceState("running", 42, True, None, read_inputs=True), []),
    # a restart is pending: it will read the repaired files
    ({"on_notify": "reload"}, ServiceState("backoff", None, True, None), []),
    # spawned before the repair, perhaps, and not ready yet
    ({"on_notify": "reload"}, ServiceState("starting", 42, True, None), [RestartService]),
    # an in-place update does not stand for the refresh
    (
        {"on_notify": "reload"},
        ServiceState("running", 42, True, None, updated=False),
        [ReloadService],
    ),
]


@pytest.mark.parametrize(("fields", "state", "expected"), REFRESH_TABLE)
def test_refresh_table(
    fields: dict[str, object], state: ServiceState, expected: list[type]
) -> None:
    assert [type(a) for a in svc(**fields).refresh(state)] == expected


def test_spec_maps_the_fields() -> None:
    spec = svc(
        command="exec sleep 1",
        shell=True,
        restart="always",
        restart_delay=0.5,
        crash_loop_limit=3,
        stop_signal="SIGINT",
        stop_timeout=2,
        reload=["/bin/kill", "-USR1", "$MAINPID"],
        readiness="notify",
        environment={"A": "1"},
        working_directory="/srv",
        log_max_bytes=4096,
        log_keep=2,
    ).spec("/tmp/r")
    assert spec.argv == ("/bin/sh", "-c", "exec sleep 1")
    assert (spec.restart, spec.restart_delay, spec.crash_loop_limit) == ("always", 0.5, 3)
    assert (spec.stop_signal, spec.stop_timeout, spec.readiness) == ("SIGINT", 2.0, "notify")
    assert spec.reload_command == ("/bin/kill", "-USR1", "$MAINPID")
    assert spec.reload_signal is None
    assert spec.working_directory == "/tmp/r/srv"
    assert spec.environment == {"A": "1", "UNDISTRO_ROOT": "/tmp/r"}
    assert (spec.log_max_bytes, spec.log_keep) == (4096, 2)
    assert svc(reload="USR2").spec("/").reload_signal == "SIGUSR2"
    assert svc().watches()[0] == ("service", "web")
    assert svc(user="www", group="web").implicit_requires() == ("user:www", "group:web")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"command": "sleep 1"}, "command"),  # a string needs shell = true
        ({"command": []}, "command"),
        ({"restart": "sometimes"}, "restart"),
        ({"readiness": "maybe"}, "readiness"),
        ({"backend": "runit"}, "backend"),
        ({"stop_signal": "SIGNOPE"}, "stop_signal"),
        ({"crash_loop_limit": 0}, "crash_loop_limit"),
        ({"stop_timeout": -1}, "stop_timeout"),
        ({"working_directory": "relative"}, "working_directory"),
        ({"watchdog_sec": "5"}, "watchdog_sec"),
        ({"colour": "blue"}, "colour"),
    ],
)
def test_bad_fields_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        svc(**fields)
    assert info.value.args[0] == field or field in str(info.value)
    assert "\n" not in str(info.value)


# -- one-shot runs with real processes -------------------------------------------


@pytest.fixture
def world() -> Iterator[Path]:
    """A short temp dir (notify sockets must fit in 107 bytes) with root/ and
    policy/; every service process killed at the end."""
    with short_tmp() as tmp:
        (tmp / "policy" / "policy").mkdir(parents=True)
        (tmp / "policy" / "undistro.toml").write_text('name = "svc"\n')
        yield tmp


def write(world: Path, text: str) -> None:
    (world / "policy" / "policy" / "main.toml").write_text(text)


def state_dir(world: Path) -> Path:
    return world / "root" / "var" / "lib" / "undistro"


def test_bad_policy_changes_nothing(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    write(world, '[[service]]\nname = "x"\ncommand = "sleep 100"\n')
    code, _out, err = cli("apply", world / "policy", "--root", world / "root")
    assert code == 2
    assert "command" in err and "shell = true" in err
    assert len(err.strip().splitlines()) <= 2
    assert not (state_dir(world) / "services").exists()
    assert started(world) == []


def test_apply_waits_for_late_readiness_and_an_agent_adopts(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    from tests.agent.conftest import AgentProc, wait_until

    cmd = service_cmd(world, "serve", delay=0.6)
    write(world, f'[[service]]\nname = "late"\ncommand = {cmd}\nreadiness = "notify"\n')
    began = time.monotonic()
    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    took = time.monotonic() - began
    assert code == 0, out
    assert "start service late (builtin)" in out
    assert took >= 0.6, "reported repaired before READY=1"
    (pid,) = started(world)
    log = (state_dir(world) / "services" / "builtin" / "late.log").read_text()
    assert "ready" in log  # READY=1 came before apply returned
    assert alive(pid)  # the one-shot process let go; the service keeps running

    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    assert code == 0 and "1 kept" in out  # adopted, not started again

    agent = AgentProc(world / "policy", world / "root", world / "agent.log")
    try:
        agent.start()
        wait_until(lambda: "adopted" in agent.log(), what="adopted")
        services = agent.status()  # the agent answers
        assert services["ok"]
        assert started(world) == [pid], "a duplicate was started"
        assert alive(pid)
    finally:
        agent.kill()


def test_service_left_the_policy_is_stopped(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    write(world, f'[[service]]\nname = "gone"\ncommand = {service_cmd(world)}\n')
    assert cli("apply", world / "policy", "--root", world / "root")[0] == 0
    (pid,) = wait_started(world)
    write(world, "")
    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    assert code == 0
    assert "stopped service gone: it left the policy" in out
    assert not alive(pid)
    code, out, _ = cli("log", "--root", world / "root", "--resource", "service:gone")
    assert "left the policy" in out


def test_plan_reads_records_without_adopting(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    write(world, f'[[service]]\nname = "p"\ncommand = {service_cmd(world)}\n')
    code, out, _ = cli("plan", world / "policy", "--root", world / "root")
    assert code == 0 and "start service p" in out
    assert started(world) == []
    assert cli("apply", world / "policy", "--root", world / "root")[0] == 0
    notify = state_dir(world) / "services" / "builtin" / "p.notify"
    before = notify.stat().st_ino
    code, out, _ = cli("plan", world / "policy", "--root", world / "root")
    assert "1 kept" in out
    assert notify.stat().st_ino == before  # not bound again: an agent may own it


@pytest.mark.skipif(shutil.which("s6-svscan") is None, reason="s6 not installed (.ci/apt)")
def test_s6_service_through_one_shot_apply(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    cmd = service_cmd(world, "serve")
    write(world, f'[[service]]\nname = "s6web"\ncommand = {cmd}\nbackend = "s6"\n')
    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    assert code == 0, out
    assert "start service s6web (s6)" in out
    (pid,) = wait_started(world)
    assert alive(pid)
    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    assert code == 0 and "1 kept" in out
    code, out, _ = cli("services", "--root", world / "root")
    assert "s6web" in out and "running" in out and str(pid) in out
    write(world, "")
    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    assert "stopped service s6web" in out
    deadline = time.monotonic() + 10
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not alive(pid)


def test_services_and_logs_without_an_agent(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    cmd = service_cmd(world, delay=0.1)
    write(world, f'[[service]]\nname = "quiet"\ncommand = {cmd}\nreadiness = "notify"\n')
    assert cli("apply", world / "policy", "--root", world / "root")[0] == 0
    (pid,) = started(world)
    code, out, _ = cli("services", "--root", world / "root")
    assert code == 0
    assert "no agent runs" in out
    assert "quiet" in out and str(pid) in out and "running" in out
    # What it wrote before READY=1 was drained by apply; later output waits
    # in the fifo for the next supervisor.
    code, out, _ = cli("logs", "quiet", "--root", world / "root")
    assert code == 0 and f"started {pid}" in out
    code, out, err = cli("service", "restart", "quiet", "--root", world / "root")
    assert code != 0 and "no agent runs" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = cli("logs", "nosuch", "--root", world / "root")
    assert code != 0 and "no log for service 'nosuch'" in err
    assert os.path.exists(state_dir(world) / "services" / "managed" / "quiet.json")


def test_example_policy_plans(cli) -> None:  # type: ignore[no-untyped-def]
    example = Path(__file__).resolve().parents[2] / "examples" / "services"
    with short_tmp() as tmp:
        code, out, err = cli("plan", example, "--root", tmp / "root")
    assert code == 0, err
    assert "start service hello-http (builtin)" in out
    assert "create file" in out


def test_a_one_shot_apply_journals_the_service_events(cli, world: Path) -> None:  # type: ignore[no-untyped-def]
    cmd = service_cmd(world, "serve", delay=0.1)
    write(world, f'[[service]]\nname = "j"\ncommand = {cmd}\nreadiness = "notify"\n')
    code, out, _ = cli("apply", world / "policy", "--root", world / "root")
    assert code == 0, out
    (pid,) = started(world)
    code, log, _ = cli("log", "--root", world / "root", "--resource", "service:j")
    assert f"starting service:j  (spawned, pid {pid})" in log, log
    assert f"running  service:j  (ready, pid {pid})" in log, log
    assert "repaired service:j" in log
    # plan reads only: it journals nothing
    cli("plan", world / "policy", "--root", world / "root")
    assert cli("log", "--root", world / "root", "--resource", "service:j")[1] == log
