"""An s6 event in the words an operator reads in the journal (pure).

s6-supervise says what happened in single letters (``u`` spawned, ``U``
ready, ``d`` died, ``D`` down for good, ``O`` will not restart, ...); the
status file and the death tally say the rest. The builtin backend's causes
are the model, so one journal reads the same whichever backend runs a
service: ``exited 1; restart in 0.2s``, ``crash loop: 5 failures within
60s, last exited 1``.
"""

from __future__ import annotations

from undistro.supervisor._s6_dir import backoff_delays
from undistro.supervisor._s6_status import S6Status
from undistro.supervisor._spec import Phase, ServiceSpec


def event_cause(
    letters: str, raw: S6Status | None, spec: ServiceSpec, phase: Phase, deaths: list[float]
) -> str:
    """The cause of one batch of event letters, from the state they led to.

    Args:
        deaths: Unix times of the deaths since the last start (the death tally).

    Example::

        event_cause("OD", raw, spec, Phase.FAILED, [t0, t1, t2])
        # "crash loop: 3 failures within 60s, last exited 3"
    """
    if raw is None:
        return "no status yet"
    if "x" in letters:
        return "s6-supervise exited"
    if phase is Phase.FAILED:
        if "O" in letters and spec.restart != "never":
            window = spec.crash_loop_window
            recent = [t for t in deaths if deaths and t >= deaths[-1] - window]
            return f"crash loop: {len(recent)} failures within {window:g}s, last {raw.cause}"
        return f"{raw.cause} (restart = {spec.restart})"
    if phase is Phase.STOPPED and ("d" in letters or "D" in letters or "O" in letters):
        if spec.readiness == "exit" and raw.exit_code == 0:
            return f"{raw.cause} (done)"
        if "O" in letters:
            return f"{raw.cause}: not restarted (restart = {spec.restart})"
        return f"stopped ({raw.cause})"
    if phase is Phase.BACKOFF and "d" in letters:
        delays = backoff_delays(spec)
        n = len(deaths)
        delay = delays[n - 1] if 0 < n <= len(delays) else spec.restart_delay_max
        return f"{raw.cause}; restart in {delay:.3g}s"
    if phase is Phase.BACKOFF:
        return "backoff over: s6 respawns it"  # D after ./finish, want up
    if phase is Phase.STOPPING and "d" in letters:
        return f"{raw.cause} (stopping)"
    if "U" in letters and raw.up:
        return "ready"
    if "u" in letters and raw.up:
        return f"spawned, pid {raw.pid}"
    if "s" in letters:
        return "supervised by s6"
    return f"{phase.value} (s6 event {letters!r})"
