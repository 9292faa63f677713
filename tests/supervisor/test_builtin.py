"""The builtin supervisor's lifecycle with real processes: restart, backoff, stop, reload."""

from __future__ import annotations

import asyncio
import grp
import itertools
import os
import pwd
import time
from pathlib import Path

import pytest

import undistro.supervisor as supervisor
from undistro.errors import ApplyError, ValidationError
from undistro.supervisor import BuiltinBackend, Phase, ServiceSpec

from .builtin_harness import Harness, gone, poll


def test_public_surface() -> None:
    assert set(supervisor.__all__) >= {
        "BuiltinBackend",
        "Phase",
        "ServiceEvent",
        "ServiceSpec",
        "ServiceStatus",
        "run_as_init",
    }
    assert all(hasattr(supervisor, name) for name in supervisor.__all__)


def _crasher(h: Harness) -> tuple[str, Path]:
    spawns = h.tmp / "spawns"
    return h.script("crash.sh", f"date +%s.%N >> {spawns}\nexit 1\n"), spawns


def test_crash_restarts_with_growing_backoff(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc, spawns = _crasher(h)

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("crash", (svc,), restart_delay=0.05, crash_loop_limit=5)
            await sup.start(spec)
            await h.until(lambda: h.events[-1][1].status.phase is Phase.FAILED)
            times = [float(t) for t in spawns.read_text().split()]
            assert len(times) == 5
            gaps = [b - a for a, b in itertools.pairwise(times)]
            assert gaps == sorted(gaps), gaps
            assert gaps[0] >= 0.05 and gaps[-1] >= 0.4 and gaps[-1] > 3 * gaps[0]

        h.run(body)


def test_crash_loop_fails_with_cause_and_stops_retrying(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc, spawns = _crasher(h)

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec("crash", (svc,), restart_delay=0.01, crash_loop_limit=3)
            await sup.start(spec)
            await h.until(lambda: h.events[-1][1].status.phase is Phase.FAILED)
            status = h.events[-1][1].status
            assert status.restarts == 2
            assert status.exit_status == 1 and status.pid is None
            last = h.events[-1][1]
            assert last.status.phase is Phase.FAILED
            assert last.cause == "crash loop: 3 failures within 60s, last exited 1"
            await asyncio.sleep(0.3)
            assert len(spawns.read_text().split()) == 3
            assert h.events[-1][1] is last

        h.run(body)


def test_restart_never_and_clean_exit(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        ok = h.script("ok.sh", "sleep 0.1\nexit 0\n")
        bad = h.script("bad.sh", "exit 4\n")

        async def body(sup: BuiltinBackend) -> None:
            await sup.start(ServiceSpec("ok", (ok,), restart="on-failure"))
            await h.until(lambda: h.causes("ok")[-1:] == ["exited 0"])
            status = sup.status("ok")
            assert status is not None and status.phase is Phase.STOPPED
            assert (await sup.start(ServiceSpec("bad", (bad,), restart="never"))).phase in (
                Phase.RUNNING,
                Phase.FAILED,
            )
            await h.until(lambda: h.causes("bad")[-1:] == ["exited 4"])
            status = sup.status("bad")
            assert status is not None and status.phase is Phase.FAILED
            assert status.restarts == 0

        h.run(body)


def test_oneshot_is_ready_when_it_exits_zero(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        done = h.script("done.sh", "sleep 0.2\nexit 0\n")
        fail = h.script("fail.sh", "exit 2\n")

        async def body(sup: BuiltinBackend) -> None:
            began = time.monotonic()
            status = await sup.start(ServiceSpec("done", (done,), readiness="exit"))
            assert time.monotonic() - began >= 0.2
            assert status.phase is Phase.STOPPED and status.ready and status.exit_status == 0
            spec = ServiceSpec("fail", (fail,), readiness="exit", restart="never")
            status = await sup.start(spec)
            assert status.phase is Phase.FAILED and not status.ready and status.exit_status == 2

        h.run(body)


def test_stop_timeout_kills_the_whole_group(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        grandchild = tmp_path / "grandchild"
        svc = h.script(
            "stubborn.sh",
            "trap '' TERM\n"
            f"sh -c 'echo $$ > {grandchild}.tmp; mv {grandchild}.tmp {grandchild}; "
            "exec sleep 1000' &\n"
            "while :; do sleep 1; done\n",
        )

        async def body(sup: BuiltinBackend) -> None:
            status = await sup.start(ServiceSpec("stubborn", (svc,), stop_timeout=0.4))
            assert await poll(grandchild.exists)
            main, child = status.pid, int(grandchild.read_text())
            assert main is not None and not gone(main) and not gone(child)
            await asyncio.sleep(0.1)
            began = time.monotonic()
            status = await sup.stop("stubborn")
            assert 0.4 <= time.monotonic() - began < 2
            assert status.phase is Phase.STOPPED and status.exit_status == -9
            assert h.causes("stubborn")[-2:] == ["stop requested", "signal SIGKILL"]
            assert await poll(lambda: gone(main) and gone(child))

        h.run(body)


def test_stop_kills_leftovers_when_main_obeys(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        grandchild = tmp_path / "grandchild"
        svc = h.script(
            "leader.sh",
            f"sh -c \"trap '' TERM; echo \\$\\$ > {grandchild}; exec sleep 1000\" &\n"
            "exec sleep 1000\n",
        )

        async def body(sup: BuiltinBackend) -> None:
            await sup.start(ServiceSpec("leader", (svc,), stop_timeout=5))
            assert await poll(lambda: grandchild.exists() and grandchild.read_text().strip() != "")
            child = int(grandchild.read_text())
            began = time.monotonic()
            status = await sup.stop("leader")
            assert time.monotonic() - began < 1
            assert status.exit_status == -15
            assert await poll(lambda: gone(child))

        h.run(body)


def test_reload_by_signal_and_by_command(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        hups, mainpid = tmp_path / "hups", tmp_path / "mainpid"
        svc = h.script(
            "reloadable.sh",
            f"trap 'echo hup >> {hups}' HUP\nwhile :; do sleep 0.05; done\n",
        )

        async def body(sup: BuiltinBackend) -> None:
            status = await sup.start(ServiceSpec("sig", (svc,)))
            await asyncio.sleep(0.1)
            await sup.reload("sig")
            assert await poll(lambda: hups.exists() and hups.read_text() == "hup\n")
            assert h.causes("sig")[-1] == "reloaded (SIGHUP)"

            cmd = ("/bin/sh", "-c", f"echo $MAINPID > {mainpid}")
            spec = ServiceSpec("cmd", ("sleep", "1000"), reload_command=cmd)
            status = await sup.start(spec)
            await sup.reload("cmd")
            assert mainpid.read_text().strip() == str(status.pid)

            failing = ServiceSpec("cmd", ("sleep", "1000"), reload_command=("false",))
            await sup.restart(failing)
            with pytest.raises(ApplyError, match="reload command exited 1"):
                await sup.reload("cmd")
            for name in ("sig", "cmd"):
                await sup.stop(name)
            with pytest.raises(ApplyError, match="not running"):
                await sup.reload("cmd")
            with pytest.raises(ApplyError, match="not supervised"):
                await sup.reload("nope")

        h.run(body)


def test_restart_and_spec_change_replace_the_process(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:

        async def body(sup: BuiltinBackend) -> None:
            first = await sup.start(ServiceSpec("s", ("sleep", "1000")))
            again = await sup.start(ServiceSpec("s", ("sleep", "1000")))
            assert again.pid == first.pid  # same spec: already running, nothing to do
            second = await sup.restart(ServiceSpec("s", ("sleep", "1000")))
            assert second.pid != first.pid and second.restarts == 1
            third = await sup.start(ServiceSpec("s", ("sleep", "999")))
            assert third.pid != second.pid and "spec changed" in h.causes("s")
            assert first.pid is not None and await poll(lambda: gone(first.pid or 0))
            await sup.stop("s")

        h.run(body)


def test_start_hook_runs_before_every_start(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        svc, spawns = _crasher(h)
        seen: list[float] = []

        async def converge(spec: ServiceSpec) -> None:
            seen.append(time.time())

        async def broken(spec: ServiceSpec) -> None:
            raise ApplyError("template failed to render")

        async def body() -> None:
            sup = h.backend(start_hook=converge)
            spec = ServiceSpec("crash", (svc,), restart_delay=0.01, crash_loop_limit=3)
            await sup.start(spec)
            await h.until(lambda: h.events[-1][1].status.phase is Phase.FAILED)
            spawned = [float(t) for t in spawns.read_text().split()]
            assert len(seen) == len(spawned) == 3
            assert all(a <= b for a, b in zip(seen, spawned, strict=True))
            await sup.close()

            sup = h.backend(start_hook=broken)
            status = await sup.start(ServiceSpec("other", ("sleep", "1000")))
            assert status.phase is Phase.FAILED and status.pid is None
            assert h.causes("other") == ["requirements failed: template failed to render"]
            await sup.close()

        asyncio.run(body())


def test_missing_executable_fails_without_retry(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:

        async def body(sup: BuiltinBackend) -> None:
            status = await sup.start(ServiceSpec("ghost", (str(tmp_path / "nope"),)))
            assert status.phase is Phase.FAILED
            assert h.causes("ghost") == ["spawn failed: No such file or directory"]

        h.run(body)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"argv": ()}, "command"),
        ({"name": "../etc"}, "name"),
        ({"restart": "sometimes"}, "restart"),
        ({"readiness": "port"}, "readiness"),
        ({"stop_signal": "SIGNOPE"}, "stop_signal"),
        ({"reload_signal": "HUPP"}, "reload_signal"),
        ({"crash_loop_limit": 0}, "crash_loop_limit"),
        ({"watchdog_sec": 0}, "watchdog_sec"),
        ({"user": "no-such-user-here"}, "user"),
        ({"group": "no-such-group-here"}, "group"),
    ],
)
def test_bad_spec_names_the_field_and_changes_nothing(
    tmp_path: Path, change: dict[str, object], field: str
) -> None:
    async def body() -> None:
        sup = BuiltinBackend(tmp_path / "state", subreaper=False)
        before = sorted(os.listdir(tmp_path / "state"))
        fields: dict[str, object] = {"name": "s", "argv": ("sleep", "1")} | change
        with pytest.raises(ValidationError) as err:
            await sup.start(ServiceSpec(**fields))  # type: ignore[arg-type]
        assert err.value.field == field
        assert "\n" not in str(err.value)
        assert sorted(os.listdir(tmp_path / "state")) == before
        assert sup.status("s") is None
        await sup.close()

    asyncio.run(body())


def test_state_dir_too_deep_for_a_socket_path_is_refused(tmp_path: Path) -> None:
    async def body() -> None:
        state = tmp_path / ("d" * 100)
        sup = BuiltinBackend(state, subreaper=False)
        with pytest.raises(ValidationError) as err:
            await sup.start(ServiceSpec("s", ("sleep", "1")))
        assert err.value.field == "state_dir" and "107 bytes" in str(err.value)
        assert os.listdir(state) == [] and sup.status("s") is None
        await sup.close()

    asyncio.run(body())


def test_user_group_environment_and_directory(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        shell = 'echo "$(id -u) $(id -g) $(pwd) $GREETING $HOME"'

        async def body(sup: BuiltinBackend) -> None:
            spec = ServiceSpec(
                "who",
                ("/bin/sh", "-c", shell),
                user="nobody",
                group="nogroup",
                environment={"GREETING": "hi"},
                working_directory="/tmp",
                readiness="exit",
            )
            status = await sup.start(spec)
            assert status.phase is Phase.STOPPED and status.ready, h.causes("who")
            notify = h.state / "who.notify"
            user = pwd.getpwnam("nobody")
            assert notify.stat().st_uid == user.pw_uid
            assert notify.stat().st_mode & 0o777 == 0o600
            await sup.stop("who")
            line = (h.logs / "who.log").read_text().split()
            gid = grp.getgrnam("nogroup").gr_gid
            assert line == [str(user.pw_uid), str(gid), "/tmp", "hi", user.pw_dir]

        h.run(body)


def test_double_forking_daemons_orphan_is_reaped(tmp_path: Path) -> None:
    with Harness(tmp_path) as h:
        orphan = tmp_path / "orphan"
        svc = h.script(
            "daemon.sh",
            f"(setsid sh -c 'echo $$ > {orphan}.tmp; mv {orphan}.tmp {orphan}; sleep 0.3' &)\n"
            "exec sleep 1000\n",
        )

        async def body(sup: BuiltinBackend) -> None:
            await sup.start(ServiceSpec("daemon", (svc,)))
            assert await poll(orphan.exists)
            pid = int(orphan.read_text())
            h.extra_pids.add(pid)
            with open(f"/proc/{pid}/stat") as f:
                assert int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()  # reparented to us
            assert await poll(lambda: not os.path.exists(f"/proc/{pid}"))  # not even a zombie
            assert sup.stats()["orphans_reaped"] == 1
            status = sup.status("daemon")
            assert status is not None and status.phase is Phase.RUNNING
            await sup.stop("daemon")

        h.run(body)
