"""The restart rules as a table: (spec, exit) → next phase, delay, cause. No processes."""

from __future__ import annotations

import pytest

from undistro.supervisor import Phase, ServiceSpec
from undistro.supervisor._policy import AfterExit, after_exit

SPEC = ServiceSpec("s", ("x",), restart_delay=0.1, restart_delay_max=1.0, crash_loop_limit=4)


def decide(spec: ServiceSpec = SPEC, **kw: object) -> AfterExit:
    args: dict[str, object] = {
        "wanted": True,
        "exit_status": 1,
        "cause": "exited 1",
        "watchdog_fired": False,
        "failures": (),
        "now": 100.0,
    } | kw
    return after_exit(spec, **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "kw", "phase", "cause"),
    [
        (SPEC, {"wanted": False}, Phase.STOPPED, "exited 1"),
        (SPEC, {"exit_status": 0, "cause": "exited 0"}, Phase.STOPPED, "exited 0"),
        (SPEC, {}, Phase.BACKOFF, "exited 1; restart in 0.1s"),
        (SPEC, {"exit_status": None}, Phase.BACKOFF, "exited 1; restart in 0.1s"),
        (
            SPEC,
            {"exit_status": 0, "watchdog_fired": True},
            Phase.BACKOFF,
            "watchdog timeout (exited 1); restart in 0.1s",
        ),
        (
            ServiceSpec("s", ("x",), restart="always"),
            {"exit_status": 0, "cause": "exited 0"},
            Phase.BACKOFF,
            "exited 0; restart in 0.1s",
        ),
        (ServiceSpec("s", ("x",), restart="never"), {}, Phase.FAILED, "exited 1"),
        (
            ServiceSpec("s", ("x",), restart="never"),
            {"exit_status": 0, "cause": "exited 0"},
            Phase.STOPPED,
            "exited 0",
        ),
        (
            ServiceSpec("s", ("x",), readiness="exit", restart="always"),
            {"exit_status": 0, "cause": "exited 0"},
            Phase.STOPPED,
            "exited 0 (done)",
        ),
    ],
)
def test_next_phase(spec: ServiceSpec, kw: dict[str, object], phase: Phase, cause: str) -> None:
    decision = decide(spec, **kw)
    assert (decision.phase, decision.cause) == (phase, cause)
    assert (decision.delay is not None) == (phase is Phase.BACKOFF)


def test_oneshot_done_is_ready() -> None:
    spec = ServiceSpec("s", ("x",), readiness="exit")
    assert decide(spec, exit_status=0).ready
    assert not decide(spec, exit_status=3).ready


def test_delay_doubles_with_recent_failures_up_to_the_cap() -> None:
    failures: tuple[float, ...] = ()
    delays = []
    spec = ServiceSpec("s", ("x",), restart_delay=0.1, restart_delay_max=0.5, crash_loop_limit=9)
    for i in range(6):
        decision = decide(spec, failures=failures, now=100.0 + i)
        delays.append(decision.delay)
        failures = decision.failures
    assert delays == [0.1, 0.2, 0.4, 0.5, 0.5, 0.5]


def test_failures_age_out_of_the_window_and_the_limit_ends_it() -> None:
    old = (10.0, 20.0, 30.0)  # outside the 60 s window at t=100
    decision = decide(failures=old)
    assert decision.phase is Phase.BACKOFF and decision.failures == (100.0,)
    assert decision.delay == pytest.approx(0.1)
    recent = (70.0, 80.0, 90.0)
    decision = decide(failures=recent)
    assert decision.phase is Phase.FAILED and decision.failures == ()
    assert decision.cause == "crash loop: 4 failures within 60s, last exited 1"


def test_a_clean_exit_does_not_count_as_a_failure() -> None:
    spec = ServiceSpec("s", ("x",), restart="always", crash_loop_limit=1)
    decision = decide(spec, exit_status=0, cause="exited 0", failures=())
    assert decision.phase is Phase.BACKOFF and decision.failures == ()
