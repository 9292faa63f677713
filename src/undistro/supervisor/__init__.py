"""Service supervision: the builtin supervisor and the s6 and systemd backends.

Every backend learns about state changes from notifications (pidfds, the
sd_notify socket, s6 fifodirs, D-Bus signals) and never polls.
"""

from typing import TYPE_CHECKING

from undistro.supervisor._builtin import BuiltinBackend
from undistro.supervisor._init import run_as_init
from undistro.supervisor._policy import validate_spec
from undistro.supervisor._spec import (
    Backend,
    EventSink,
    Phase,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
    StartHook,
)

if TYPE_CHECKING:
    from undistro.supervisor._s6 import S6Backend
    from undistro.supervisor._systemd import SystemdBackend

__all__ = [
    "Backend",
    "BuiltinBackend",
    "EventSink",
    "Phase",
    "S6Backend",
    "ServiceEvent",
    "ServiceSpec",
    "ServiceStatus",
    "StartHook",
    "SystemdBackend",
    "run_as_init",
    "validate_spec",
]


def __getattr__(name: str) -> object:
    # The s6 and systemd backends (and the D-Bus library) load only for those who use them.
    if name == "S6Backend":
        from undistro.supervisor._s6 import S6Backend

        return S6Backend
    if name == "SystemdBackend":
        from undistro.supervisor._systemd import SystemdBackend

        return SystemdBackend
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
