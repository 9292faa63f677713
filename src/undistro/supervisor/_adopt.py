"""What a supervisor leaves behind so that the next one can re-adopt a service.

One small JSON file per running service: its pid, the process start time
(field 22 of ``/proc/PID/stat``, in clock ticks since boot) and the hash of
the spec it was started from. A pid alone is not an identity (pids are
reused); pid + start time is. The file is written atomically on spawn and on
readiness, and removed when the service is down, so a reader never sees a
half-written record. No fsync: the record describes live processes, which a
power loss kills anyway; rename alone keeps a killed supervisor's record whole.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass

from undistro.supervisor._spec import ServiceSpec, process_fields


def spec_hash(spec: ServiceSpec) -> str:
    """A stable hash of what the process was made from (``PROCESS_FIELDS``):
    a change means the service must restart; a new ``reload`` or restart
    policy does not."""
    fields = process_fields(spec)
    blob = json.dumps(fields, sort_keys=True, default=list).encode()
    return hashlib.sha256(blob).hexdigest()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of ``/proc/PID/stat``, or None if the process is gone or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    after = raw[raw.rfind(b")") + 2 :].split()
    state, start = after[0], after[19]
    if state in (b"Z", b"X"):
        return None
    return int(start)


@dataclass(frozen=True, slots=True)
class Record:
    """The durable trace of one running service."""

    pid: int
    start_time: int
    spec_hash: str
    started_at: float  # time.time() of the spawn
    ready: bool
    restarts: int


class RecordStore:
    """``<state_dir>/<name>.json`` files, written with write-temp + rename."""

    def __init__(self, state_dir: str) -> None:
        self.state_dir = state_dir

    def _path(self, name: str) -> str:
        return os.path.join(self.state_dir, f"{name}.json")

    def save(self, name: str, record: Record) -> None:
        path = self._path(name)
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(dataclasses.asdict(record)).encode())
        finally:
            os.close(fd)
        os.rename(tmp, path)

    def load(self, name: str) -> Record | None:
        try:
            with open(self._path(name), "rb") as f:
                return Record(**json.loads(f.read()))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError):
            self.remove(name)
            return None

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))


def reopen(record: Record) -> int | None:
    """A pidfd for the recorded process if it is still that very process, else None.

    The pidfd is opened *before* the start time is checked: once open it pins
    the process, so a matching start time proves the pidfd is the right one.
    """
    try:
        pidfd = os.pidfd_open(record.pid)
    except (ProcessLookupError, OSError):
        return None
    if proc_start_time(record.pid) != record.start_time:
        os.close(pidfd)
        return None
    return pidfd
