"""Refuse a ServiceSpec a backend cannot express, before anything is written.

The ``[[service]]`` resource validates policy first; this is the backends'
own guard, so a bad spec from any caller fails with one line naming the
field and leaves nothing on disk.
"""

from __future__ import annotations

import re
import signal

from undistro.errors import ValidationError
from undistro.supervisor._spec import ServiceSpec

_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.@-]{0,99}")
_CHOICES = {
    "restart": ("always", "on-failure", "never"),
    "readiness": ("notify", "exit", "none"),
}


def check_spec(spec: ServiceSpec) -> None:
    """Raise ValidationError for the first field no backend could honour.

    Example: ``check_spec(ServiceSpec("web", ("httpd",), restart="sometimes"))``
    raises ``field 'restart': must be one of always, on-failure, never``.
    """
    if not _NAME.fullmatch(spec.name):
        raise ValidationError(
            "name", f"{spec.name!r} is not a service name (letters, digits, _.@-)"
        )
    if not spec.argv or not spec.argv[0]:
        raise ValidationError("command", "must not be empty")
    for field, allowed in _CHOICES.items():
        if getattr(spec, field) not in allowed:
            raise ValidationError(field, f"must be one of {', '.join(allowed)}")
    for field in ("stop_signal", "reload_signal"):
        value = getattr(spec, field)
        if value is not None and value not in signal.Signals.__members__:
            raise ValidationError(field, f"{value!r} is not a signal name like SIGTERM")
    for field in ("restart_delay", "restart_delay_max", "crash_loop_window", "stop_timeout"):
        if getattr(spec, field) < 0:
            raise ValidationError(field, "must not be negative")
    if spec.crash_loop_limit < 1:
        raise ValidationError("crash_loop_limit", "must be at least 1")
