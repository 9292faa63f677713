"""Starting a service process: identity, environment, session, output.

Spawning goes through :class:`subprocess.Popen` because its C fork/exec
path does setsid, setgroups/setgid/setuid, chdir and the fd shuffle safely
between fork and exec; the supervisor then tracks the child with a pidfd and
reaps it itself with ``waitid(P_PIDFD)``.
"""

from __future__ import annotations

import grp
import os
import pwd
import signal
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass

from undistro.errors import ValidationError
from undistro.supervisor._spec import ServiceSpec


def signal_number(name: str, field: str) -> signal.Signals:
    """``"SIGTERM"``, ``"TERM"`` or ``"15"`` → ``signal.SIGTERM``; anything else names the field."""
    text = name.strip().upper()
    try:
        if text.isdigit():
            return signal.Signals(int(text))
        return signal.Signals[text if text.startswith("SIG") else f"SIG{text}"]
    except (KeyError, ValueError):
        raise ValidationError(field, f"unknown signal {name!r}") from None


@dataclass(frozen=True, slots=True)
class Identity:
    """Who the service runs as; None fields mean "as the supervisor"."""

    uid: int | None
    gid: int | None
    groups: tuple[int, ...] | None
    home: str | None
    user: str | None

    @property
    def owner(self) -> tuple[int, int]:
        """The uid/gid its notify socket belongs to."""
        return (
            os.getuid() if self.uid is None else self.uid,
            os.getgid() if self.gid is None else self.gid,
        )


def resolve_identity(spec: ServiceSpec) -> Identity:
    """Look up ``user``/``group``; the user's primary and supplementary groups come along."""
    uid = gid = None
    groups: tuple[int, ...] | None = None
    home = user = None
    if spec.user is not None:
        try:
            wanted = spec.user
            entry = pwd.getpwuid(int(wanted)) if wanted.isdigit() else pwd.getpwnam(wanted)
        except KeyError:
            raise ValidationError("user", f"no such user {spec.user!r}") from None
        uid, gid, home, user = entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_name
        groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    if spec.group is not None:
        try:
            name = spec.group
            group = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
        except KeyError:
            raise ValidationError("group", f"no such group {spec.group!r}") from None
        gid = group.gr_gid
        if groups is None:
            groups = ()
    return Identity(uid, gid, groups, home, user)


def child_environment(
    spec: ServiceSpec, identity: Identity, extra: Mapping[str, str]
) -> dict[str, str]:
    """A small, explicit environment: PATH, the user's HOME/USER, the spec's, then ours."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin")}
    if identity.user is not None and identity.home is not None:
        env.update(HOME=identity.home, USER=identity.user, LOGNAME=identity.user)
    env.update(spec.environment)
    env.update(extra)
    return env


def spawn(
    argv: tuple[str, ...],
    spec: ServiceSpec,
    identity: Identity,
    env: Mapping[str, str],
    output_fd: int,
    *,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in a new session (its own process group), output on ``output_fd``.

    ``new_session=False`` keeps it in the caller's process group, where the
    builtin backend's orphan reaper leaves it to the caller to reap (a helper
    command another backend runs in the same process).

    Raises OSError (the executable or working directory is missing, …)
    exactly as exec reported it.
    """
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=output_fd,
        stderr=output_fd,
        cwd=spec.working_directory,
        env=dict(env),
        user=identity.uid,
        group=identity.gid,
        extra_groups=identity.groups,
        start_new_session=new_session,
        close_fds=True,
        restore_signals=True,
    )
