"""Service supervision: the builtin supervisor and the s6 and systemd backends.

Every backend learns about state changes from notifications (pidfds, the
sd_notify socket, s6 fifodirs, D-Bus signals) and never polls.
"""

from undistro.supervisor._s6 import S6Backend
from undistro.supervisor._spec import (
    Backend,
    EventSink,
    Phase,
    ServiceEvent,
    ServiceSpec,
    ServiceStatus,
    StartHook,
)
from undistro.supervisor._systemd import SystemdBackend

__all__ = [
    "Backend",
    "EventSink",
    "Phase",
    "S6Backend",
    "ServiceEvent",
    "ServiceSpec",
    "ServiceStatus",
    "StartHook",
    "SystemdBackend",
]
