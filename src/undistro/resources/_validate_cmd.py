"""``validate`` of ``[[file]]``: a command that must accept the candidate
content before it replaces the file (Ansible ``validate``, Puppet
``validate_cmd``, Salt ``check_cmd``).

Example::

    [[file]]
    path = "/etc/nginx/nginx.conf"
    source = "nginx.conf"
    validate = ["/usr/sbin/nginx", "-t", "-q", "-c", "{path}"]
    notify = ["service:nginx"]

``{path}`` is the temp file written beside the target (same directory, so
relative includes resolve as they will for the real file). The command is an
argument list, never a shell line; it runs on the host (under ``--root`` with
``UNDISTRO_ROOT`` set), with a bounded time, its output captured and cut.
If it fails, the old file stays, the temp file goes, the resource fails with
the first lines of the command's output, and nothing it notifies is
refreshed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from undistro.errors import ApplyError

PLACEHOLDER = "{path}"
TIMEOUT = 60.0
"""Seconds a validator may take: a config check that hangs must not hold the run."""
_KEEP = 8192  # bytes of output kept; the rest is read and dropped
_LINES = 5  # lines of it put in the error


def validate_command(raw: Any) -> tuple[str, ...]:
    """The ``validate`` field: a non-empty list of strings naming ``{path}``,
    whose program exists (checked at policy load: a typo must not wait for
    the first change of the file to show)."""
    if not isinstance(raw, list) or not raw or not all(isinstance(a, str) and a for a in raw):
        raise ValueError(
            'expected a non-empty list of strings, like ["nginx", "-t", "-c", "{path}"]'
        )
    if any("\x00" in a for a in raw):
        raise ValueError("must not contain NUL bytes")
    if not any(PLACEHOLDER in a for a in raw[1:]):
        raise ValueError("must name the candidate file as {path} in an argument")
    import shutil  # here, not at import: file.py loads this module in every run

    program = raw[0]
    if "/" in program:
        if not (os.path.isfile(program) and os.access(program, os.X_OK)):
            raise ValueError(f"program {program!r} is not an executable file")
    elif shutil.which(program) is None:
        raise ValueError(f"program {program!r} not found on PATH")
    return tuple(raw)


def describe(argv: tuple[str, ...]) -> str:
    """For ``plan``: which command will judge the candidate."""
    return f"validated by {os.path.basename(argv[0])} before the rename"


def judge(
    argv: tuple[str, ...], candidate: str, ino: int, root: str, remove: Callable[[], None]
) -> None:
    """The candidate must pass before it is staged for the rename; if it does
    not (or the validator cannot run), ``remove`` drops it and ApplyError is
    raised. ``ino`` is the candidate's inode: a path that no longer leads to
    it (a directory swapped for a link meanwhile) is not validated."""
    try:
        if os.lstat(candidate).st_ino != ino:
            raise ApplyError(f"validate: {candidate} no longer is the file written: not validated")
        run_validate(argv, candidate, root)
    except BaseException:
        remove()
        raise


def run_validate(argv: tuple[str, ...], candidate: str, root: str) -> None:
    """Run the validator on ``candidate``; ApplyError (with its output) unless it exits 0."""
    import signal
    import subprocess

    args = [a.replace(PLACEHOLDER, candidate) for a in argv]
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "UNDISTRO_ROOT": root}
    try:
        proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=os.path.dirname(candidate),
            # In the agent's own process group, not a session of its own: the
            # builtin supervisor (child subreaper) reaps exited children of
            # other groups as orphans, and this exit status must be ours.
        )
    except OSError as exc:
        raise ApplyError(f"validate: cannot run {args[0]}: {exc.strerror or exc}") from None
    assert proc.stdout is not None
    output, timed_out = _read_bounded(proc.stdout.fileno(), time.monotonic() + TIMEOUT)
    proc.stdout.close()
    if timed_out:
        proc.kill()
    code = proc.wait()
    if timed_out:
        raise ApplyError(
            f"validate: {args[0]} did not finish within {TIMEOUT:g}s, file left as it was"
        )
    if code != 0:
        text = output.decode(errors="replace").strip()
        lines = text.splitlines()
        shown = "; ".join(lines[:_LINES]) + (" …" if len(lines) > _LINES else "")
        how = f"exited {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
        raise ApplyError(
            f"validate: {os.path.basename(args[0])} {how}, file left as it was"
            + (f": {shown}" if shown else "")
        )


def _read_bounded(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Read to EOF or the deadline, keeping the first ``_KEEP`` bytes."""
    import select

    kept = bytearray()
    poller = select.poll()  # not select(): the agent may hold more than 1024 fds
    poller.register(fd, select.POLLIN)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(kept), True
        if not poller.poll(left * 1000):
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return bytes(kept), False
        if len(kept) < _KEEP:
            kept += chunk[: _KEEP - len(kept)]
