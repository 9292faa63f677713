"""Pure parts of the s6 and systemd backends: files rendered, states mapped."""

from __future__ import annotations

from typing import Any

import pytest

import undistro.supervisor as supervisor
from undistro.errors import ValidationError
from undistro.supervisor import Phase, ServiceSpec
from undistro.supervisor._s6 import phase_of as s6_phase
from undistro.supervisor._s6_cause import event_cause
from undistro.supervisor._s6_dir import backoff_delays, render
from undistro.supervisor._s6_status import S6Status
from undistro.supervisor._systemd import cause_of
from undistro.supervisor._systemd import phase_of as systemd_phase
from undistro.supervisor._systemd_unit import quote, render_unit, unit_name

SPEC = ServiceSpec("web", ("httpd", "-f"))


def test_public_surface() -> None:
    assert {"S6Backend", "SystemdBackend", "ServiceSpec", "Phase"} <= set(supervisor.__all__)


def test_s6_dir_files_follow_the_spec() -> None:
    files = render(ServiceSpec("web", ("httpd", "-f"), readiness="notify", stop_timeout=2.5), "/l")
    assert files["notification-fd"][0] == "3\n"
    assert files["timeout-kill"][0] == "2500\n"
    assert files["down-signal"][0] == "15\n"
    assert files["run"][0].endswith("exec httpd -f\n") and files["run"][1] == 0o755
    assert "down" in files
    # readiness = none: ./run says ready at the exec (s6 2.11's respawn throttle)
    plain = render(SPEC, "/l")
    assert plain["notification-fd"][0] == "3\n"
    assert "echo >&3; exec 3>&-\nexec httpd -f\n" in plain["run"][0]
    assert "notification-fd" not in render(ServiceSpec("x", ("x",), readiness="exit"), "/l")
    assert "exit 125" in render(SPEC, "/l")["finish"][0]  # on-failure: a clean exit is final
    assert (
        "s6-permafailon" not in render(ServiceSpec("x", ("x",), restart="never"), "/l")["finish"][0]
    )


def test_backoff_doubles_to_the_cap() -> None:
    spec = ServiceSpec("x", ("x",), restart_delay=1, restart_delay_max=5, crash_loop_limit=5)
    assert backoff_delays(spec) == [1, 2, 4, 5, 5]


def raw(
    pid: int = 0,
    *,
    wstat: int = 0,
    finishing: bool = False,
    want_up: bool = False,
    ready: bool = False,
) -> S6Status:
    return S6Status(0.0, 0.0, pid, wstat, False, finishing, want_up, ready)


@pytest.mark.parametrize(
    ("status", "spec", "want_up", "phase"),
    [
        (None, SPEC, False, Phase.STOPPED),
        (raw(10, want_up=True), SPEC, True, Phase.RUNNING),
        (raw(10, want_up=True), ServiceSpec("n", ("n",), readiness="notify"), True, Phase.STARTING),
        (
            raw(10, want_up=True, ready=True),
            ServiceSpec("n", ("n",), readiness="notify"),
            True,
            Phase.RUNNING,
        ),
        (raw(10), SPEC, False, Phase.STOPPING),
        (raw(11, finishing=True, want_up=True, wstat=0x0100), SPEC, True, Phase.BACKOFF),
        (raw(0, want_up=True, wstat=0x0100), SPEC, True, Phase.BACKOFF),
        (raw(0, wstat=0x0300), SPEC, True, Phase.FAILED),
        (raw(0, wstat=0), SPEC, True, Phase.STOPPED),
        (raw(0, wstat=0), ServiceSpec("o", ("o",), readiness="exit"), True, Phase.STOPPED),
        (raw(0, wstat=9), SPEC, False, Phase.STOPPED),
    ],
)
def test_s6_phase_table(
    status: S6Status | None, spec: ServiceSpec, want_up: bool, phase: Phase
) -> None:
    assert s6_phase(status, spec, want_up) is phase


NEVER = ServiceSpec("n", ("n",), restart="never")
DELAYS = ServiceSpec("d", ("d",), restart_delay=0.5, crash_loop_limit=4, crash_loop_window=30)


@pytest.mark.parametrize(
    ("letters", "status", "spec", "phase", "deaths", "cause"),
    [
        ("u", raw(10, want_up=True), SPEC, Phase.RUNNING, [], "spawned, pid 10"),
        ("U", raw(10, want_up=True, ready=True), SPEC, Phase.RUNNING, [], "ready"),
        ("uU", raw(10, want_up=True, ready=True), SPEC, Phase.RUNNING, [], "ready"),
        # the n-th death since the start sleeps backoff_delays[n - 1]
        ("d", raw(11, finishing=True, wstat=0x0700), DELAYS, Phase.BACKOFF, [1.0, 2.0],
         "exited 7; restart in 1s"),
        ("d", raw(11, finishing=True, wstat=9), DELAYS, Phase.BACKOFF, [1.0],
         "signal SIGKILL; restart in 0.5s"),
        ("D", raw(0, want_up=True, wstat=9), DELAYS, Phase.BACKOFF, [1.0],
         "backoff over: s6 respawns it"),
        # only the deaths within the window of the last one count
        ("OD", raw(0, wstat=0x0100), DELAYS, Phase.FAILED, [1.0, 50.0, 60.0, 70.0, 75.0],
         "crash loop: 4 failures within 30s, last exited 1"),
        ("dD", raw(0, wstat=0x0300), NEVER, Phase.FAILED, [1.0],
         "exited 3 (restart = never)"),
        ("OD", raw(0, wstat=0), SPEC, Phase.STOPPED, [],
         "exited 0: not restarted (restart = on-failure)"),
        ("dD", raw(0, wstat=15), SPEC, Phase.STOPPED, [], "stopped (signal SIGTERM)"),
        ("dD", raw(0, wstat=0), ServiceSpec("o", ("o",), readiness="exit"), Phase.STOPPED, [],
         "exited 0 (done)"),
        ("d", raw(11, finishing=True, wstat=15), SPEC, Phase.STOPPING, [],
         "signal SIGTERM (stopping)"),
        ("x", raw(0), SPEC, Phase.STOPPED, [], "s6-supervise exited"),
    ],
)  # fmt: skip
def test_s6_causes_in_words(
    letters: str,
    status: S6Status,
    spec: ServiceSpec,
    phase: Phase,
    deaths: list[float],
    cause: str,
) -> None:
    assert event_cause(letters, status, spec, phase, deaths) == cause


def props(active: str, sub: str = "", result: str = "success") -> dict[str, Any]:
    return {"ActiveState": active, "SubState": sub, "Result": result}


@pytest.mark.parametrize(
    ("state", "spec", "previous", "want_up", "phase"),
    [
        (props("active", "running"), SPEC, Phase.STARTING, True, Phase.RUNNING),
        (props("activating", "start"), SPEC, Phase.STOPPED, True, Phase.STARTING),
        (props("activating", "auto-restart"), SPEC, Phase.RUNNING, True, Phase.BACKOFF),
        (props("failed", "failed", "exit-code"), SPEC, Phase.RUNNING, True, Phase.BACKOFF),
        (props("failed", "failed", "exit-code"), SPEC, Phase.BACKOFF, True, Phase.FAILED),
        (props("failed", "failed", "start-limit-hit"), SPEC, Phase.RUNNING, True, Phase.FAILED),
        (
            props("failed", "failed", "exit-code"),
            ServiceSpec("x", ("x",), restart="never"),
            Phase.RUNNING,
            True,
            Phase.FAILED,
        ),
        (props("inactive", "dead"), SPEC, Phase.BACKOFF, True, Phase.BACKOFF),
        (props("inactive", "dead"), SPEC, Phase.STOPPING, False, Phase.STOPPED),
        (props("deactivating", "stop-sigterm"), SPEC, Phase.RUNNING, False, Phase.STOPPING),
        (
            props("active", "exited"),
            ServiceSpec("o", ("true",), readiness="exit"),
            Phase.STARTING,
            True,
            Phase.STOPPED,
        ),
    ],
)
def test_systemd_phase_table(
    state: dict[str, Any], spec: ServiceSpec, previous: Phase, want_up: bool, phase: Phase
) -> None:
    assert systemd_phase(state, spec, previous, want_up) is phase


def test_unit_file_quotes_and_maps() -> None:
    unit = render_unit(
        ServiceSpec(
            "web",
            ("sh", "-c", 'echo "$HOME" 100%'),
            readiness="notify",
            restart="never",
            environment={"A": "x y$"},
            crash_loop_limit=4,
        )
    )
    assert unit_name("web") == "undistro-web.service"
    assert len(unit_name("a" * 238)) == 255
    with pytest.raises(ValidationError, match="239 characters: at most 238"):
        unit_name("a" * 239)
    assert 'ExecStart="sh" "-c" "echo \\"$$HOME\\" 100%%"' in unit
    assert 'Environment="A=x y$"' in unit
    assert "Type=notify" in unit and "NotifyAccess=all" in unit and "Restart=no" in unit
    assert "StartLimitBurst=4" in unit and "KillMode=control-group" in unit
    assert quote("a\nb") == '"a\\nb"'
    assert "Type=oneshot" in render_unit(ServiceSpec("o", ("true",), readiness="exit"))


def ended(active: str, sub: str, result: str, code: int, status: int) -> dict[str, Any]:
    return {**props(active, sub, result), "ExecMainCode": code, "ExecMainStatus": status}


@pytest.mark.parametrize(
    ("state", "spec", "phase", "before", "cause"),
    [
        (ended("failed", "failed", "exit-code", 1, 3), DELAYS, Phase.FAILED, Phase.BACKOFF,
         "crash loop: 4 failures within 30s, last exited 3"),
        (ended("failed", "failed", "start-limit-hit", 2, 9), DELAYS, Phase.FAILED, Phase.RUNNING,
         "crash loop: 4 failures within 30s, last signal SIGKILL"),
        (ended("failed", "failed", "exit-code", 1, 1), NEVER, Phase.FAILED, Phase.RUNNING,
         "exited 1 (restart = never)"),
        (ended("activating", "auto-restart", "exit-code", 1, 7), DELAYS, Phase.BACKOFF,
         Phase.RUNNING, "exited 7; restart in 0.5s"),
        ({**props("active", "running"), "MainPID": 42}, SPEC, Phase.RUNNING, Phase.STARTING,
         "ready"),
        ({**props("active", "running"), "MainPID": 42}, SPEC, Phase.RUNNING, Phase.RUNNING,
         "running, pid 42"),
        ({**props("activating", "start"), "MainPID": 42}, SPEC, Phase.STARTING, Phase.STOPPED,
         "spawned, pid 42"),
        (ended("active", "exited", "success", 1, 0), ServiceSpec("o", ("o",), readiness="exit"),
         Phase.STOPPED, Phase.STARTING, "exited 0 (done)"),
    ],
)  # fmt: skip
def test_systemd_causes_in_words(
    state: dict[str, Any], spec: ServiceSpec, phase: Phase, before: Phase, cause: str
) -> None:
    assert cause_of(state, spec, phase, before) == cause
