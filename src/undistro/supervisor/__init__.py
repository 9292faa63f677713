"""Service supervision: the builtin supervisor and the s6 and systemd backends.

Every backend learns about state changes from notifications (pidfds, the
sd_notify socket, s6 fifodirs, D-Bus signals) and never polls.
"""

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

__all__ = [
    "Backend",
    "BuiltinBackend",
    "EventSink",
    "Phase",
    "ServiceEvent",
    "ServiceSpec",
    "ServiceStatus",
    "StartHook",
    "run_as_init",
    "validate_spec",
]
