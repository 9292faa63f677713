"""The s6 backend against a real s6-svscan, s6-supervise and real services."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.supervisor._driver import idle_spec
from tests.supervisor._idle import WAITS, idle_syscalls
from tests.supervisor._procs import alive, run, start_driver, until
from undistro.errors import ApplyError, ValidationError
from undistro.events._s6_fifodir import fifo_name
from undistro.supervisor import Phase, S6Backend, ServiceEvent, ServiceSpec
from undistro.supervisor._s6_status import parse_status, read_status, seconds_since, unix_time

pytestmark = pytest.mark.skipif(shutil.which("s6-svscan") is None, reason="s6 is not installed")


@asynccontextmanager
async def s6(tmp: Path) -> AsyncIterator[tuple[S6Backend, list[ServiceEvent]]]:
    backend = S6Backend(str(tmp / "scan"), str(tmp / "state"))
    events: list[ServiceEvent] = []
    backend.subscribe(events.append)
    try:
        yield backend, events
    finally:
        await backend.shutdown()


def test_fifo_name_has_the_ftrig1_shape() -> None:
    name = fifo_name()
    assert len(name) == 39 and name.startswith("ftrig1:@") and name[32] == ":"


def test_status_file_both_layouts() -> None:
    head = bytes(24)
    old = parse_status(head + (1234).to_bytes(8, "big") + (0x0300).to_bytes(2, "big") + b"\x0c")
    new = parse_status(
        head
        + (1234).to_bytes(8, "big")
        + (1234).to_bytes(8, "big")
        + (0).to_bytes(2, "big")
        + b"\x04"
    )
    assert (old.pid, old.exit_code, old.want_up, old.ready) == (1234, 3, True, True)
    assert (new.pid, new.exit_code, new.want_up, new.ready) == (1234, 0, True, False)
    with pytest.raises(ValueError, match="35 or 43"):
        parse_status(b"short")


def test_late_readiness_is_not_running_before_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, events):
            spec = ServiceSpec(
                "late", ("sh", "-c", "sleep 0.6; echo >&3; exec sleep 100"), readiness="notify"
            )
            t0 = time.monotonic()
            status = await backend.start(spec)
            assert time.monotonic() - t0 >= 0.6
            assert status.phase is Phase.RUNNING and status.ready and status.pid
            causes = [(e.cause, e.status.phase) for e in events]
            assert (f"spawned, pid {status.pid}", Phase.STARTING) in causes
            assert causes[-1] == ("ready", Phase.RUNNING)
            assert all(p is not Phase.RUNNING for c, p in causes[:-1])

    run(scenario)


def test_crash_restarts_with_backoff_and_is_seen_as_events(tmp_path: Path) -> None:
    marker = tmp_path / "crashed-once"
    script = f"if [ -e {marker} ]; then exec sleep 100; fi; touch {marker}; sleep 0.2; exit 7"

    async def scenario() -> None:
        async with s6(tmp_path) as (backend, events):
            first = await backend.start(
                ServiceSpec("flaky", ("sh", "-c", script), restart_delay=0.3)
            )
            t0 = time.monotonic()
            while backend.status("flaky").restarts < 1 or backend.status("flaky").pid is None:
                await asyncio.sleep(0.05)
            assert time.monotonic() - t0 >= 0.3  # the backoff of ./finish
            now = backend.status("flaky")
            assert now.phase is Phase.RUNNING and now.pid != first.pid and now.restarts == 1
            phases = [e.status.phase for e in events]
            assert Phase.BACKOFF in phases
            assert any(e.cause == "exited 7; restart in 0.3s" for e in events), events

    run(scenario)


def test_crash_loop_becomes_failed(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, events):
            spec = ServiceSpec(
                "loop", ("sh", "-c", "exit 3"), restart_delay=0.05, crash_loop_limit=3
            )
            status = await backend.start(spec)
            while backend.status("loop").phase is not Phase.FAILED:
                await asyncio.sleep(0.05)
            status = backend.status("loop")
            assert status.exit_status == 3 and status.restarts == 3
            assert events[-1].cause == "crash loop: 3 failures within 60s, last exited 3"

    run(scenario)


def test_restart_never_and_on_failure_clean_exit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            await backend.start(
                ServiceSpec("once", ("sh", "-c", "sleep 0.2; exit 1"), restart="never")
            )
            await backend.start(ServiceSpec("clean", ("sh", "-c", "sleep 0.2; exit 0")))
            while {backend.status(n).phase for n in ("once", "clean")} & {
                Phase.RUNNING,
                Phase.BACKOFF,
                Phase.STOPPING,
            }:
                await asyncio.sleep(0.05)
            assert backend.status("once").phase is Phase.FAILED
            assert backend.status("clean").phase is Phase.STOPPED
            assert backend.status("clean").exit_status == 0

    run(scenario)


def test_oneshot_is_ready_after_a_clean_exit(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            status = await backend.start(ServiceSpec("init-db", ("true",), readiness="exit"))
            assert status.phase is Phase.STOPPED and status.ready
            assert status.exit_status == 0 and status.pid is None

    run(scenario)


def test_stop_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "child.pid"
    script = f"trap '' TERM; sleep 1000 & echo $! > {pidfile}; exec sleep 1001"

    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            status = await backend.start(
                ServiceSpec("stubborn", ("sh", "-c", script), stop_timeout=0.5)
            )
            while not pidfile.exists() or not pidfile.read_text().strip():
                await asyncio.sleep(0.02)
            main, child = status.pid, int(pidfile.read_text())
            assert main and alive(main) and alive(child)
            t0 = time.monotonic()
            stopped = await backend.stop("stubborn")
            assert time.monotonic() - t0 >= 0.5
            assert stopped.phase is Phase.STOPPED
            assert stopped.exit_status is None  # killed, by SIGKILL
            assert not alive(main)
            # s6 SIGKILLs the whole group at the timeout and reports "down" when
            # the main process is gone; the others die as the kernel schedules
            # them (seen alive for that moment on a fresh Debian 12).
            await asyncio.wait_for(until(lambda: not alive(child)), 5)

    run(scenario)


def test_stop_during_backoff_is_prompt(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            await backend.start(
                ServiceSpec("slow", ("sh", "-c", "sleep 0.2; exit 1"), restart_delay=5)
            )
            await until(lambda: backend.status("slow").phase is Phase.BACKOFF)
            await asyncio.sleep(
                0.5
            )  # into the sleep finish ends with (it takes ~20 ms to get there)
            t0 = time.monotonic()
            stopped = await backend.stop("slow")
            assert time.monotonic() - t0 < 2
            assert stopped.phase is Phase.STOPPED

    run(scenario)


def test_changed_spec_restarts_with_the_new_command(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            old = await backend.start(ServiceSpec("svc", ("sleep", "1000")))
            same = await backend.start(ServiceSpec("svc", ("sleep", "1000")))
            assert same.pid == old.pid
            new = await backend.start(ServiceSpec("svc", ("sleep", "1001")))
            assert new.phase is Phase.RUNNING and new.pid != old.pid
            # readiness = none: RUNNING at the spawn, maybe before ./run has exec'd
            cmdline = Path(f"/proc/{new.pid}/cmdline")
            await until(lambda: cmdline.read_bytes() != b"/bin/sh\x00./run\x00svc\x00")
            assert cmdline.read_bytes() == b"sleep\x001001\x00"

    run(scenario)


def test_environment_and_working_directory(tmp_path: Path) -> None:
    out = tmp_path / "out"
    spec = ServiceSpec(
        "env",
        ("sh", "-c", f'echo "$GREETING $(pwd)" > {out}; exec sleep 1000'),
        environment={"GREETING": "hello world"},
        working_directory="/tmp",
    )

    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            await backend.start(spec)
            await until(lambda: out.exists() and out.read_text().endswith("\n"))
            assert out.read_text() == "hello world /tmp\n"

    run(scenario)


def test_output_goes_to_the_rotated_log(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            await backend.start(
                ServiceSpec("talk", ("sh", "-c", "echo hello; echo oops >&2; exec sleep 1000"))
            )
            log = Path(backend.log_file("talk"))
            await until(lambda: log.exists() and "oops" in log.read_text())
            assert "hello" in log.read_text()

    run(scenario)


def test_bad_spec_is_one_clear_error_and_writes_nothing(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            with pytest.raises(ValidationError, match="stop_signal"):
                await backend.start(ServiceSpec("bad", ("true",), stop_signal="SIGNOPE"))
            with pytest.raises(ValidationError, match="watchdog_sec"):
                await backend.start(ServiceSpec("bad", ("true",), watchdog_sec=5))
            assert not (tmp_path / "state" / "s6" / "bad").exists()

    run(scenario)


def test_reload_sends_the_signal(tmp_path: Path) -> None:
    flag = tmp_path / "reloaded"
    script = f"trap 'touch {flag}' HUP; echo >&3; while :; do sleep 0.1; done"

    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            await backend.start(ServiceSpec("hup", ("sh", "-c", script), readiness="notify"))
            await backend.reload("hup")
            for _ in range(50):
                if flag.exists():
                    break
                await asyncio.sleep(0.05)
            assert flag.exists()

    run(scenario)


def test_unknown_service_is_one_clear_error(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            with pytest.raises(ApplyError, match="ghost: not known"):
                await backend.stop("ghost")

    run(scenario)


def test_new_instance_adopts_running_services_without_restart(tmp_path: Path) -> None:
    spec = ServiceSpec("kept", ("sleep", "1000"))

    async def scenario() -> None:
        async with s6(tmp_path) as (first, _):
            before = await first.start(spec)
            await first.close()  # the agent goes away; s6 keeps supervising
            second = S6Backend(str(tmp_path / "scan"), str(tmp_path / "state"))
            events: list[ServiceEvent] = []
            second.subscribe(events.append)
            try:
                after = await second.start(spec)
                assert after.pid == before.pid and after.phase is Phase.RUNNING
                assert not any("spawned" in e.cause for e in events)  # nothing was spawned
                os.kill(before.pid, signal.SIGKILL)  # a crash is still seen, by the new one
                while not events or events[-1].status.phase is not Phase.RUNNING:
                    await asyncio.sleep(0.05)
                assert second.status("kept").pid != before.pid
            finally:
                await second.close()

    run(scenario)


def test_agent_killed_9_leaves_services_running_and_readopted(tmp_path: Path) -> None:
    scan, state = str(tmp_path / "scan"), str(tmp_path / "state")
    driver = start_driver("s6", scan, state, "3")
    try:
        pids = [read_status(f"{state}/s6/idle{i}").pid for i in range(3)]
        driver.kill()  # kill -9: no close(), no shutdown()
        driver.wait()
        assert all(alive(p) for p in pids)

        async def scenario() -> None:
            async with s6(tmp_path) as (backend, events):
                again = [await backend.start(idle_spec(i)) for i in range(3)]
                assert [st.pid for st in again] == pids
                assert all(st.phase is Phase.RUNNING for st in again)
                assert not any("spawned" in e.cause for e in events)  # no duplicate started

        run(scenario)  # its shutdown() stops the scanner the dead driver started
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait()


@pytest.mark.slow
def test_idle_backend_makes_no_system_calls(tmp_path: Path) -> None:
    driver = start_driver("s6", str(tmp_path / "scan"), str(tmp_path / "state"), "5")
    try:
        counts = idle_syscalls(driver.pid, 10)
        assert set(counts) <= WAITS, counts
        assert sum(counts.values()) <= 2, counts
    finally:
        driver.terminate()
        driver.wait(30)


def _label(unix: int, nanos: int = 0) -> bytes:
    """A TAI64N label as skalibs' default build writes it: 2^62 + unix + 10 + leap seconds."""
    return ((1 << 62) + unix + 37).to_bytes(8, "big") + nanos.to_bytes(4, "big")


def test_tai64n_stamps_count_leap_seconds_as_skalibs_does() -> None:
    # 2026-12-02 00:00:00 UTC: 37 s ahead in TAI (10 + 27 leap seconds since 1972).
    assert unix_time(_label(1796169600, 500_000_000)) == 1796169600.5
    # Before the leap second of 2017-01-01 only 36 s had accumulated.
    before = ((1 << 62) + 1483228799 + 36).to_bytes(8, "big") + bytes(4)
    assert unix_time(before) == 1483228799
    assert unix_time(bytes(12)) == 0.0  # never set
    assert seconds_since(100.0, now=90.0) == 0.0  # a stamp in the future: clock skew
    assert seconds_since(100.0, now=111.5) == 11.5


def _svstat(path: str, field: str) -> str:
    out = subprocess.run(["s6-svstat", "-o", field, path], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_uptime_and_readiness_agree_with_s6_svstat(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            plain = await backend.start(ServiceSpec("plain", ("sleep", "1000")))
            told = await backend.start(
                ServiceSpec("told", ("sh", "-c", "echo >&3; exec sleep 1000"), readiness="notify")
            )
            await asyncio.sleep(2.2)
            for name, status in (("plain", plain), ("told", told)):
                path = str(tmp_path / "state" / "s6" / name)
                raw = read_status(path)
                assert raw is not None and raw.up and raw.pid == status.pid
                s6_says = int(_svstat(path, "updownfor"))
                assert s6_says >= 2
                assert abs(seconds_since(raw.stamp) - s6_says) < 1.0, (raw, s6_says)
                now = backend.status(name)
                assert now is not None and abs(time.time() - now.since - s6_says) < 1.0
                assert now.ready and raw.is_ready("notify" if name == "told" else "none")
            # s6's own flag comes through the notification fd only: the service's
            # newline, or for readiness = none ./run's at the exec.
            for name in ("told", "plain"):
                assert _svstat(str(tmp_path / "state" / "s6" / name), "ready") == "true"

    run(scenario)


def test_reload_command_runs_as_the_service_and_logs_to_its_log(tmp_path: Path) -> None:
    script = 'echo "reload mainpid=$MAINPID root=$UNDISTRO_ROOT cwd=$(pwd)"; exit "$CODE"'

    async def scenario() -> None:
        async with s6(tmp_path) as (backend, events):
            spec = ServiceSpec(
                "rl",
                ("sleep", "1000"),
                environment={"UNDISTRO_ROOT": str(tmp_path), "CODE": "0"},
                working_directory="/tmp",
                reload_command=("sh", "-c", script),
            )
            status = await backend.start(spec)
            after = await backend.reload("rl")
            assert after.pid == status.pid and after.phase is Phase.RUNNING
            assert events[-1].cause == "reloaded (command exited 0)"
            log = Path(backend.log_file("rl"))
            line = f"reload mainpid={status.pid} root={tmp_path} cwd=/tmp"
            await until(lambda: log.exists() and line in log.read_text())
            failing = dataclasses.replace(spec, environment={**spec.environment, "CODE": "3"})
            await backend.start(failing)  # a changed spec: restarted, new pid
            with pytest.raises(ApplyError, match="'rl': reload command exited 3"):
                await backend.reload("rl")
            hangs = dataclasses.replace(spec, reload_command=("sleep", "1000"))
            await backend.start(hangs)
            children = Path(f"/proc/self/task/{os.getpid()}/children")
            before = set(children.read_text().split())
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(backend.reload("rl"), 0.5)  # as the engine's timeout
            # the hung command was killed and reaped: no new child, not even a zombie
            assert set(children.read_text().split()) <= before
            missing = dataclasses.replace(spec, reload_command=("/nonexistent/reload",))
            await backend.start(missing)
            with pytest.raises(ApplyError, match="'rl': cannot run '/nonexistent/reload'"):
                await backend.reload("rl")
            await backend.stop("rl")
            with pytest.raises(ApplyError, match="'rl' is not running"):
                await backend.reload("rl")

    run(scenario)


def test_crash_restart_without_readiness_is_not_throttled_to_a_second(tmp_path: Path) -> None:
    """s6-supervise 2.11 waits 1 s after a death before respawning a service
    that has no notification fd; ./run reports readiness = none itself."""

    async def scenario() -> None:
        async with s6(tmp_path) as (backend, _):
            first = await backend.start(
                ServiceSpec("quick", ("sleep", "1000"), restart_delay=0.05, restart_delay_max=0.05)
            )
            assert first.pid is not None
            await asyncio.sleep(1.2)  # past the throttle after the last readiness
            t0 = time.monotonic()
            os.kill(first.pid, signal.SIGKILL)
            await until(
                lambda: (
                    backend.status("quick").phase is Phase.RUNNING
                    and backend.status("quick").pid not in (None, first.pid)
                )
            )
            assert time.monotonic() - t0 < 0.8
            assert not os.path.exists(f"/proc/{backend.status('quick').pid}/fd/3")

    run(scenario)
