"""Running a build with no network, the store read-only at its final path.

A build runs under ``unshare --net --mount``: a fresh network namespace (only
a loopback, so nothing can be downloaded behind the recipe's back) and a
private mount namespace in which, under ``--root``, ``ROOT/<store>`` is
bind-mounted at ``<store>`` — the build sees its dependencies and its own
prefix exactly where they will be on the finished system, and nothing on the
host's mounts changes.

Inside that namespace the store is a read-only bind mount, and only the
build's own staging directory (``<store>/.staging-…``, where ``DESTDIR``
points) is bound writable over it. The build runs as root, but a recipe
writing into a dependency's keg, or an install that ignores ``DESTDIR`` and
writes the final prefix itself, fails with "Read-only file system" instead
of changing the store. Under ``--root`` the store's ``ROOT/...`` path is made
read-only the same way. The mounts made, the build itself runs without
CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_MODULE and CAP_MKNOD (``setpriv``
drops them from the bounding set): root as it is, it cannot remount the
store writable, reach the host's mount namespace through another process's
``/proc/PID/root``, load a module or make a device node.

Without root privileges an unprivileged user namespace is tried; where
neither works the build runs unisolated — store writable — and the log says
so (and, under ``--root``, dependencies are found through their ROOT paths
instead).
"""

from __future__ import annotations

import functools
import os
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Sandbox:
    """How commands are wrapped. ``store_visible`` is true when the store
    appears at its final path inside the sandbox."""

    prefix: tuple[str, ...]
    setup: str  # shell run first inside the namespaces (mounts)
    store_visible: bool
    note: str  # one line for the build log
    drop: tuple[str, ...] = ()  # run the build itself through this (setpriv)

    def command(self, argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
        """``argv`` to run in the sandbox with exactly ``env``."""
        inner = "exec " + "".join(f"{shlex.quote(a)} " for a in self.drop)
        inner += "env -i " + " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(env.items()))
        inner += " " + " ".join(shlex.quote(a) for a in argv)
        if not self.prefix:
            return ["/bin/sh", "-c", inner]
        return [*self.prefix, "/bin/sh", "-ec", f"{self.setup}\n{inner}"]


@functools.cache
def _unshare_works(extra: tuple[str, ...]) -> bool:
    return _runs(["unshare", *extra, "--net", "--mount", "--propagation", "private", "true"])


def _runs(argv: list[str]) -> bool:
    """Whether ``argv`` runs and exits 0 here (a probe of what the kernel allows)."""
    try:
        proc = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0


# What a build never needs and the seal must not leave it: mounts (a
# remount would make the store writable again) and setns, another process's
# /proc/PID/root, modules, device nodes.
_DROP = (
    "setpriv",
    "--bounding-set=-sys_admin,-sys_ptrace,-sys_module,-mknod",
    "--inh-caps=-sys_admin,-sys_ptrace,-sys_module,-mknod",
    "--",
)


@functools.cache
def _setpriv_works() -> bool:
    return _runs([*_DROP, "true"])


def make_sandbox(
    store_dir: str, physical_store: str, workdir: str, staging: str, *, isolate: bool = True
) -> Sandbox:
    """The best isolation this machine allows for a build in ``workdir`` into
    ``store_dir``, whose files are physically at ``physical_store``; the
    staging directory ``staging`` (in ``physical_store``) is the one place of
    the store the build may write."""
    q = shlex.quote
    relocated = os.path.realpath(physical_store) != os.path.realpath(store_dir)
    seen_staging = f"{store_dir}/{os.path.basename(staging)}"
    for extra in ((), ("--user", "--map-root-user")):
        if not isolate or not _unshare_works(extra):
            continue
        prefix = ("unshare", *extra, "--net", "--mount", "--propagation", "private", "--")
        lines = ["ip link set lo up 2>/dev/null || true"]
        if relocated:
            mounts = _bind_store(store_dir, physical_store, workdir)
            if mounts is None:
                continue
            lines += mounts
            note = f"isolated: no network; {physical_store} mounted read-only at {store_dir}"
        else:
            lines.append(f"mount --bind {q(store_dir)} {q(store_dir)}")
            note = f"isolated: no network; {store_dir} read-only"
        # Staging first (a separate mount keeps its own flags), then the
        # store read-only around it; the ROOT path of the store too.
        lines += [
            f"mount --bind {q(staging)} {q(seen_staging)}",
            f"mount -o remount,bind,ro {q(store_dir)}",
        ]
        if relocated:
            lines += [
                f"mount --bind {q(physical_store)} {q(physical_store)}",
                f"mount -o remount,bind,ro {q(physical_store)}",
            ]
        note += f" but for {os.path.basename(staging)}"
        drop = _DROP if _setpriv_works() else ()
        note += " (unshare, setpriv)" if drop else " (unshare; no setpriv: capabilities kept)"
        return Sandbox(prefix, "\n".join(lines), True, note, drop)
    why = "isolation disabled" if not isolate else "no usable unshare (network namespace)"
    return Sandbox(
        (), "", not relocated, f"NOT isolated ({why}): the build could reach the network"
    )


def _bind_store(store_dir: str, physical_store: str, workdir: str) -> list[str] | None:
    """Shell lines making ``physical_store`` appear at ``store_dir``. If the
    store's directory does not exist on the host, a tmpfs is laid over its
    deepest existing ancestor (inside the namespace only) to create it; not
    possible when that ancestor is ``/`` itself or would hide the physical
    store or the build directory."""
    q = shlex.quote
    if os.path.isdir(store_dir):
        return [f"mount --bind {q(physical_store)} {q(store_dir)}"]
    ancestor = os.path.dirname(store_dir)
    while not os.path.isdir(ancestor):
        ancestor = os.path.dirname(ancestor)
    if ancestor == "/" or any(
        os.path.realpath(p).startswith(ancestor + "/") for p in (physical_store, workdir)
    ):
        return None
    return [
        f"mount -t tmpfs undistro-build {q(ancestor)}",
        f"mkdir -p {q(store_dir)}",
        f"mount --bind {q(physical_store)} {q(store_dir)}",
    ]
