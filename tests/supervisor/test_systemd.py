"""The systemd backend against a real systemd, booted as PID 1 of a container."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.supervisor._driver import idle_spec
from tests.supervisor._idle import WAITS, idle_syscalls
from tests.supervisor._nspawn import Container, boot, poweroff, why_not
from tests.supervisor._procs import alive, run, start_driver, until
from undistro.errors import ApplyError, ValidationError
from undistro.supervisor import Phase, ServiceEvent, ServiceSpec, SystemdBackend


@pytest.fixture(scope="session")
def container(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    reason = why_not()
    if reason:
        pytest.skip(reason)
    log = tmp_path_factory.mktemp("nspawn") / "console.log"
    try:
        box = boot(f"undistro-test-{os.getpid()}", str(log))
    except RuntimeError as e:
        pytest.skip(
            f"machine limit: systemd-nspawn cannot boot here: {e}: {log.read_text()[-500:]}"
        )
    try:
        yield box
    finally:
        poweroff(box.nspawn)


@asynccontextmanager
async def systemd(box: Container) -> AsyncIterator[tuple[SystemdBackend, list[ServiceEvent]]]:
    backend = await SystemdBackend.connect(box.bus, box.unit_dir)
    events: list[ServiceEvent] = []
    backend.subscribe(events.append)
    try:
        yield backend, events
    finally:
        for name in list(backend._units):
            await backend.stop(name)
        await backend.close()


def cgroup_pids(box: Container, name: str) -> list[int]:
    """Host pids of every process in the unit's cgroup (the container's pids differ)."""
    path = f"{box.root}/sys/fs/cgroup/system.slice/undistro-{name}.service/cgroup.procs"
    try:
        with open(path) as f:
            return [int(p) for p in f.read().split()]
    except FileNotFoundError:
        return []


def test_late_readiness_is_not_running_before_it(container: Container) -> None:
    script = "sleep 0.6; systemd-notify --ready; exec sleep 100"

    async def scenario() -> None:
        async with systemd(container) as (backend, events):
            t0 = time.monotonic()
            status = await backend.start(
                ServiceSpec("late", ("sh", "-c", script), readiness="notify")
            )
            assert time.monotonic() - t0 >= 0.6
            assert status.phase is Phase.RUNNING and status.pid
            phases = [e.status.phase for e in events]
            assert Phase.STARTING in phases
            assert Phase.RUNNING not in phases[: phases.index(Phase.STARTING) + 1]

    run(scenario)


def test_crash_after_start_is_seen_and_restarted(container: Container) -> None:
    script = "[ -e /run/flaky ] && exec sleep 100; touch /run/flaky; sleep 0.3; exit 7"

    async def scenario() -> None:
        async with systemd(container) as (backend, events):
            first = await backend.start(
                ServiceSpec("flaky", ("sh", "-c", script), restart_delay=0.2)
            )
            assert first.phase is Phase.RUNNING
            await until(
                lambda: (
                    backend.status("flaky").restarts == 1
                    and backend.status("flaky").phase is Phase.RUNNING
                )
            )
            assert backend.status("flaky").pid != first.pid
            after = [e.status.phase for e in events if e.status.since >= first.since]
            assert Phase.BACKOFF in after

    run(scenario)


def test_crash_loop_becomes_failed(container: Container) -> None:
    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            spec = ServiceSpec(
                "loop", ("sh", "-c", "sleep 0.1; exit 3"), restart_delay=0.05, crash_loop_limit=3
            )
            await backend.start(spec)
            await until(lambda: backend.status("loop").phase is Phase.FAILED)
            status = backend.status("loop")
            assert status.exit_status == 3 and status.restarts == 3

    run(scenario)


def test_stop_timeout_kills_the_whole_group(container: Container) -> None:
    script = "trap '' TERM; sleep 1000 & exec sleep 1001"

    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            await backend.start(ServiceSpec("stubborn", ("sh", "-c", script), stop_timeout=0.5))
            await until(lambda: len(cgroup_pids(container, "stubborn")) == 2)
            pids = cgroup_pids(container, "stubborn")
            t0 = time.monotonic()
            stopped = await backend.stop("stubborn")
            assert time.monotonic() - t0 >= 0.5
            assert stopped.phase in (Phase.STOPPED, Phase.FAILED)  # systemd: Result=timeout
            assert not any(alive(p) for p in pids)

    run(scenario)


def test_missed_watchdog_restarts(container: Container) -> None:
    script = "systemd-notify --ready; exec sleep 1000"  # ready, then never pings
    spec = ServiceSpec(
        "wd", ("sh", "-c", script), readiness="notify", watchdog_sec=0.5, restart_delay=0.1
    )

    async def scenario() -> None:
        async with systemd(container) as (backend, events):
            first = await backend.start(spec)
            await until(lambda: backend.status("wd").restarts >= 1)
            assert any(e.status.phase is Phase.BACKOFF for e in events)
            await until(lambda: backend.status("wd").phase is Phase.RUNNING)
            assert backend.status("wd").pid != first.pid

    run(scenario)


def test_reload_runs_through_systemd(container: Container) -> None:
    flag = f"{container.root}/run/reloaded"
    script = "trap 'touch /run/reloaded' HUP; while :; do sleep 0.1; done"

    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            await backend.start(ServiceSpec("hup", ("sh", "-c", script)))
            await backend.reload("hup")
            await asyncio.wait_for(until(lambda: os.path.exists(flag)), 5)

    run(scenario)


def test_reload_during_backoff_is_satisfied_by_the_restart(container: Container) -> None:
    """systemd restarts the service on the files as they are then: a reload
    owed meanwhile is not a failure (nginx killed while its config is repaired)."""

    async def scenario() -> None:
        async with systemd(container) as (backend, events):
            await backend.start(ServiceSpec("later", ("sleep", "1000"), restart_delay=3))
            for pid in cgroup_pids(container, "later"):
                os.kill(pid, signal.SIGKILL)
            await until(lambda: backend.status("later").phase is Phase.BACKOFF)
            status = await backend.reload("later")
            assert status.phase is Phase.BACKOFF
            assert events[-1].cause == "reload: satisfied by the restart under way"
            await until(lambda: backend.status("later").phase is Phase.RUNNING)

    run(scenario)


def test_oneshot_is_ready_after_a_clean_exit(container: Container) -> None:
    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            status = await backend.start(ServiceSpec("init-db", ("true",), readiness="exit"))
            assert status.phase is Phase.STOPPED and status.ready

    run(scenario)


def test_unknown_service_is_one_clear_error(container: Container) -> None:
    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            with pytest.raises(ApplyError, match="ghost: not known"):
                await backend.stop("ghost")

    run(scenario)


def test_new_instance_adopts_running_units_without_restart(container: Container) -> None:
    spec = ServiceSpec("kept", ("sleep", "1000"), restart_delay=0.1)

    async def scenario() -> None:
        first = await SystemdBackend.connect(container.bus, container.unit_dir)
        before = await first.start(spec)
        await first.close()  # the agent goes away; systemd keeps the unit
        async with systemd(container) as (second, events):
            after = await second.start(spec)
            assert after.pid == before.pid and after.phase is Phase.RUNNING
            assert [e.cause for e in events] == [f"attached: running, pid {before.pid}"]
            (host_pid,) = cgroup_pids(container, "kept")
            os.kill(host_pid, signal.SIGKILL)  # a crash is still seen, by the new one
            await until(
                lambda: (
                    second.status("kept").restarts == 1
                    and second.status("kept").phase is Phase.RUNNING
                )
            )

    run(scenario)


def test_changed_spec_restarts_with_the_new_command(container: Container) -> None:
    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            old = await backend.start(ServiceSpec("svc", ("sleep", "1000")))
            same = await backend.start(ServiceSpec("svc", ("sleep", "1000")))
            assert same.pid == old.pid
            new = await backend.start(ServiceSpec("svc", ("sleep", "1001")))
            assert new.phase is Phase.RUNNING and new.pid != old.pid
            (host_pid,) = cgroup_pids(container, "svc")
            with open(f"/proc/{host_pid}/cmdline", "rb") as f:
                assert f.read() == b"sleep\x001001\x00"

    run(scenario)


def test_environment_and_working_directory(container: Container) -> None:
    out = Path(f"{container.root}/run/env.out")
    spec = ServiceSpec(
        "env",
        ("sh", "-c", 'echo "$GREETING $(pwd)" > /run/env.out; exec sleep 1000'),
        environment={"GREETING": "hello $world"},
        working_directory="/tmp",
    )

    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            await backend.start(spec)
            await until(lambda: out.exists() and out.read_text().endswith("\n"))
            assert out.read_text() == "hello $world /tmp\n"

    run(scenario)


def test_bad_spec_is_one_clear_error_and_writes_nothing(container: Container) -> None:
    async def scenario() -> None:
        async with systemd(container) as (backend, _):
            with pytest.raises(ValidationError, match="field 'restart'"):
                await backend.start(ServiceSpec("bad", ("true",), restart="sometimes"))
            assert not os.path.exists(f"{container.unit_dir}/undistro-bad.service")

    run(scenario)


def test_agent_killed_9_leaves_units_running_and_readopted(container: Container) -> None:
    driver = start_driver("systemd", container.bus, container.unit_dir, "3")
    try:
        pids = [cgroup_pids(container, f"idle{i}") for i in range(3)]
        driver.kill()  # kill -9: the D-Bus connection just drops
        driver.wait()

        async def scenario() -> None:
            async with systemd(container) as (backend, events):
                again = [await backend.start(idle_spec(i)) for i in range(3)]
                assert all(st.phase is Phase.RUNNING for st in again)
                assert [cgroup_pids(container, f"idle{i}") for i in range(3)] == pids
                # no job, no duplicate
                assert all(e.cause.startswith("attached: running") for e in events), events

        run(scenario)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


@pytest.mark.slow
def test_idle_backend_makes_no_system_calls(container: Container) -> None:
    driver = start_driver("systemd", container.bus, container.unit_dir, "5")
    try:
        counts = idle_syscalls(driver.pid, 10)
        assert set(counts) <= WAITS, counts
        assert sum(counts.values()) <= 2, counts
    finally:
        driver.terminate()
        driver.wait(30)
