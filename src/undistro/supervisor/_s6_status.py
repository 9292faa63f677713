"""Parse ``SVC/supervise/status``, the snapshot s6-supervise writes at every event.

Read only after a fifodir event says it changed (a snapshot and an event,
always both). Two layouts exist: 35 bytes up to s6 2.12 (s6's own
``s6_svstatus_unpack``: two TAI64N stamps, the pid, the wait status, then
one byte of flags — paused 1, finishing 2, want-up 4, ready 8) and 43 bytes
from 2.13, which inserts the process group id after the pid.

**Time stamps.** A TAI64N label is skalibs' ``2^62 + TAI seconds`` (8 bytes)
plus nanoseconds (4). skalibs' ``tai_from_sysclock`` (the default build,
Debian's included) adds 10 s and the leap seconds of its table to the Unix
time, so today a label is ``2^62 + unix + 37``. :func:`unix_time` undoes
exactly that (skalibs' ``utc_from_tai``: minus 10, minus the leap seconds
before the instant), so a stamp compares with :func:`time.time`; and a
duration is never negative — a stamp in the future (a clock set back) is
"now", as ``s6-svstat`` treats it.
"""

from __future__ import annotations

import bisect
import os
import signal
import struct
import time
from dataclasses import dataclass

_TAI_MAGIC = 1 << 62
_SIZES = (35, 43)
DTALLY_ENTRY = 14  # bytes per death in supervise/death_tally: TAI64N, exit code, signal
# skalibs' leapsecs_table.c: the instants (Unix time + the leap seconds before
# them, i.e. TAI - 10) at which a leap second was inserted. None since 2017.
_LEAPS = (
    78796800, 94694401, 126230402, 157766403, 189302404, 220924805, 252460806,
    283996807, 315532808, 362793609, 394329610, 425865611, 489024012, 567993613,
    631152014, 662688015, 709948816, 741484817, 773020818, 820454419, 867715220,
    915148821, 1136073622, 1230768023, 1341100824, 1435708825, 1483228826,
)  # fmt: skip


def unix_time(label: bytes) -> float:
    """A 12-byte TAI64N label as Unix time, as skalibs converts it (``utc_from_tai``).

    Example: ``unix_time(status[0:12])`` is when the service last went up or down.
    """
    secs: int
    nanos: int
    secs, nanos = struct.unpack(">QI", label)
    if secs < _TAI_MAGIC + 10:
        return 0.0  # TAIN_ZERO: never set
    u = secs - _TAI_MAGIC - 10
    # the leap seconds strictly before u (u on a leap second itself maps onto the next)
    leaps = bisect.bisect_left(_LEAPS, u)
    return float(u - leaps) + nanos / 1e9


def seconds_since(stamp: float, now: float | None = None) -> float:
    """How long ago ``stamp`` was; 0 for a stamp in the future (clock skew), never negative."""
    return max(0.0, (time.time() if now is None else now) - stamp)


@dataclass(frozen=True, slots=True)
class S6Status:
    stamp: float  # Unix time of the last up/down change
    ready_stamp: float  # Unix time of the last readiness (or of the last down)
    pid: int  # the run process, or the finish script while ``finishing``; 0 when down
    wstat: int  # wait status of the last death of ./run
    paused: bool
    finishing: bool
    want_up: bool
    ready: bool  # s6's flag: set by the U event (notification-fd) or when down

    @property
    def up(self) -> bool:
        return self.pid != 0 and not self.finishing

    def is_ready(self, readiness: str) -> bool:
        """Up and ready by the spec's readiness. s6 sets its flag only for a
        service with a notification-fd; one without is ready once up."""
        if not self.up:
            return False
        return self.ready if readiness == "notify" else True

    @property
    def exit_code(self) -> int | None:
        """The last exit code, or None if the run process was killed by a signal."""
        return os.waitstatus_to_exitcode(self.wstat) if os.WIFEXITED(self.wstat) else None

    @property
    def cause(self) -> str:
        """``exited N`` or ``signal NAME``, the words the other backends use."""
        if os.WIFSIGNALED(self.wstat):
            sig = os.WTERMSIG(self.wstat)
            try:
                return f"signal {signal.Signals(sig).name}"
            except ValueError:
                return f"signal {sig}"
        return f"exited {os.WEXITSTATUS(self.wstat)}"


def parse_status(data: bytes) -> S6Status:
    """Decode a status file of either size; ValueError on anything else.

    Example: ``parse_status(open("svc/supervise/status", "rb").read()).up``.
    """
    if len(data) not in _SIZES:
        raise ValueError(f"s6 status file is {len(data)} bytes, expected 35 or 43")
    (pid,) = struct.unpack(">Q", data[24:32])
    wstat_at = 32 if len(data) == 35 else 40
    (wstat,) = struct.unpack(">H", data[wstat_at : wstat_at + 2])
    flags = data[wstat_at + 2]
    return S6Status(
        stamp=unix_time(data[0:12]),
        ready_stamp=unix_time(data[12:24]),
        pid=pid,
        wstat=wstat,
        paused=bool(flags & 1),
        finishing=bool(flags & 2),
        want_up=bool(flags & 4),
        ready=bool(flags & 8),
    )


def death_stamps(svc: str) -> list[float]:
    """When each death in ``supervise/death_tally`` happened (Unix time, oldest first):
    the deaths since the last start, as the backend clears the tally then."""
    try:
        with open(os.path.join(svc, "supervise", "death_tally"), "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    n = len(data) // DTALLY_ENTRY
    return [unix_time(data[i * DTALLY_ENTRY : i * DTALLY_ENTRY + 12]) for i in range(n)]


def read_status(svc: str) -> S6Status | None:
    """The current snapshot, or None if s6-supervise has never run there."""
    try:
        with open(os.path.join(svc, "supervise", "status"), "rb") as f:
            return parse_status(f.read())
    except FileNotFoundError:
        return None
