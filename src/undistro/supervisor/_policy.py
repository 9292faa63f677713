"""What a spec means, decided without touching a process: validity, and what follows an exit.

Kept pure so that the restart rules — policy, exponential backoff, the
crash-loop limit, oneshot completion — are a table of (spec, exit) →
decision, tested without spawning anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from undistro.errors import ValidationError
from undistro.supervisor._spawn import signal_number
from undistro.supervisor._spec import Phase, ServiceSpec

RESTART = ("always", "on-failure", "never")
READINESS = ("notify", "exit", "none")


def validate_spec(spec: ServiceSpec) -> None:
    """Check what the builtin backend relies on; raise ValidationError naming the field."""
    if not spec.name or "/" in spec.name or spec.name.startswith(".") or "\0" in spec.name:
        raise ValidationError("name", f"not usable as a file name: {spec.name!r}")
    if not spec.argv:
        raise ValidationError("command", "is empty")
    if spec.restart not in RESTART:
        raise ValidationError("restart", f"{spec.restart!r} is not one of {', '.join(RESTART)}")
    if spec.readiness not in READINESS:
        raise ValidationError(
            "readiness", f"{spec.readiness!r} is not one of {', '.join(READINESS)}"
        )
    signal_number(spec.stop_signal, "stop_signal")
    if spec.reload_signal is not None:
        signal_number(spec.reload_signal, "reload_signal")
    if spec.crash_loop_limit < 1:
        raise ValidationError("crash_loop_limit", "must be at least 1")
    for field in ("restart_delay", "restart_delay_max", "stop_timeout", "crash_loop_window"):
        if getattr(spec, field) < 0:
            raise ValidationError(field, "must not be negative")
    if spec.watchdog_sec is not None and spec.watchdog_sec <= 0:
        raise ValidationError("watchdog_sec", "must be positive")
    if spec.log_max_bytes < 1:
        raise ValidationError("log_max_bytes", "must be positive")


@dataclass(frozen=True, slots=True)
class AfterExit:
    """What to do once the main process is gone."""

    phase: Phase  # STOPPED, FAILED or BACKOFF
    cause: str
    failures: tuple[float, ...]  # the failure times still inside the crash-loop window
    delay: float | None = None  # seconds before the restart (BACKOFF only)
    ready: bool = False  # a oneshot that finished counts as ready


def after_exit(
    spec: ServiceSpec,
    *,
    wanted: bool,
    exit_status: int | None,
    cause: str,
    watchdog_fired: bool,
    failures: tuple[float, ...],
    now: float,
) -> AfterExit:
    """Decide the next phase after an exit.

    Args:
        wanted: False when the exit was asked for (stop, restart).
        exit_status: N for exit N, -signal, None when unknown (an adopted
            process); anything but 0 is a failure, and so is a watchdog kill.
        failures: monotonic times of earlier failures; the delay doubles with
            each one inside ``crash_loop_window``, and the
            ``crash_loop_limit``-th there ends it as FAILED.

    Example::

        after_exit(spec, wanted=True, exit_status=1, cause="exited 1",
                   watchdog_fired=False, failures=(), now=10.0)
        # AfterExit(BACKOFF, "exited 1; restart in 0.1s", (10.0,), 0.1)
    """
    if not wanted:
        return AfterExit(Phase.STOPPED, cause, failures)
    if watchdog_fired:
        cause = f"watchdog timeout ({cause})"
    failed = exit_status != 0 or watchdog_fired
    if spec.readiness == "exit" and not failed:
        return AfterExit(Phase.STOPPED, f"{cause} (done)", failures, ready=True)
    if not (spec.restart == "always" or (spec.restart == "on-failure" and failed)):
        return AfterExit(Phase.FAILED if failed else Phase.STOPPED, cause, failures)
    recent = tuple(t for t in failures if t >= now - spec.crash_loop_window)
    if failed:
        recent += (now,)
    if len(recent) >= spec.crash_loop_limit:
        return AfterExit(
            Phase.FAILED,
            f"crash loop: {spec.crash_loop_limit} failures within "
            f"{spec.crash_loop_window:g}s, last {cause}",
            (),
        )
    delay = min(spec.restart_delay * 2 ** max(len(recent) - 1, 0), spec.restart_delay_max)
    return AfterExit(Phase.BACKOFF, f"{cause}; restart in {delay:.3g}s", recent, delay)
