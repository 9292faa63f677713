"""Parse ``SVC/supervise/status``, the snapshot s6-supervise writes at every event.

Read only after a fifodir event says it changed (a snapshot and an event,
always both). Two layouts exist: 35 bytes up to s6 2.12 and 43 bytes from
2.13, which inserts the process group id after the pid.
"""

from __future__ import annotations

import os
import signal
import struct
from dataclasses import dataclass

_TAI_EPOCH = 1 << 62
_SIZES = (35, 43)


@dataclass(frozen=True, slots=True)
class S6Status:
    stamp: float  # TAI64N of the last up/down change, as Unix seconds (±leap seconds)
    ready_stamp: float
    pid: int  # the run process, or the finish script while ``finishing``; 0 when down
    wstat: int  # wait status of the last death of ./run
    paused: bool
    finishing: bool
    want_up: bool
    ready: bool

    @property
    def up(self) -> bool:
        return self.pid != 0 and not self.finishing

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


def _tai(b: bytes) -> float:
    secs, nanos = struct.unpack(">QI", b)
    return float(secs - _TAI_EPOCH - 10 + nanos / 1e9)


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
        stamp=_tai(data[0:12]),
        ready_stamp=_tai(data[12:24]),
        pid=pid,
        wstat=wstat,
        paused=bool(flags & 1),
        finishing=bool(flags & 2),
        want_up=bool(flags & 4),
        ready=bool(flags & 8),
    )


def read_status(svc: str) -> S6Status | None:
    """The current snapshot, or None if s6-supervise has never run there."""
    try:
        with open(os.path.join(svc, "supervise", "status"), "rb") as f:
            return parse_status(f.read())
    except FileNotFoundError:
        return None
