"""Reading and editing the account databases (passwd, group, shadow, gshadow).

undistro edits these files itself rather than calling useradd/groupadd with
``--root``/``--prefix``: those need the shadow tools and a login.defs inside
the root, run PAM-less half-features there, and cannot change several fields
in one atomic step. Each edit takes the same lock the shadow tools take
(``/etc/.pwd.lock``, an fcntl lock), re-reads the files under it, and replaces
each one atomically (temp file, fsync, rename, fsync of /etc).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from undistro._rootfs import RootFS

# Field counts of each database; a line with another count is kept verbatim.
_WIDTH = {"passwd": 7, "group": 4, "shadow": 9, "gshadow": 4}


class Table:
    """One account database as ordered rows of fields, keyed by the first."""

    def __init__(self, name: str, rows: list[list[str]], *, exists: bool) -> None:
        self.name = name
        self.rows = rows
        self.exists = exists

    def get(self, key: str) -> list[str] | None:
        for row in self.rows:
            if row[0] == key:
                return row
        return None

    def put(self, row: list[str]) -> None:
        for i, old in enumerate(self.rows):
            if old[0] == row[0]:
                self.rows[i] = row
                return
        self.rows.append(row)

    def remove(self, key: str) -> bool:
        before = len(self.rows)
        self.rows = [r for r in self.rows if r[0] != key]
        return len(self.rows) != before

    def render(self) -> bytes:
        return "".join(":".join(r) + "\n" for r in self.rows).encode()


def etc(root: str, name: str) -> str:
    return os.path.join(root, "etc", name)


def read_table(root: str, name: str) -> Table:
    try:
        with RootFS(root) as fs:
            text = fs.read(f"/etc/{name}").decode("utf-8", "surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return Table(name, [], exists=False)
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split(":")
        if len(fields) < _WIDTH[name]:
            fields += [""] * (_WIDTH[name] - len(fields))
        rows.append(fields)
    return Table(name, rows, exists=True)


def write_table(root: str, table: Table, mode: int) -> None:
    """Replace one database atomically and durably (under the root only:
    every open and rename goes through :class:`RootFS`)."""
    path = f"/etc/{table.name}"
    tmp = f"/etc/+{table.name}.undistro-tmp"
    with RootFS(root) as fs:
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode, parents=True)
        try:
            os.fchmod(fd, mode)
            with contextlib.suppress(FileNotFoundError):
                st = fs.lstat(path)
                os.fchown(fd, st.st_uid, st.st_gid)
            os.write(fd, table.render())
            os.fsync(fd)
        finally:
            os.close(fd)
        fs.replace(tmp, path)
        fs.fsync_dir("/etc")


@contextlib.contextmanager
def locked(root: str) -> Iterator[None]:
    """Hold the shadow tools' lock (lckpwdf) while editing."""
    with RootFS(root) as fs:
        fd = fs.open("/etc/.pwd.lock", os.O_WRONLY | os.O_CREAT, 0o600, parents=True)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


_MODES = {"passwd": 0o644, "group": 0o644, "shadow": 0o640, "gshadow": 0o640}


@contextlib.contextmanager
def editing(root: str, *names: str) -> Iterator[list[Table]]:
    """Lock, read ``names``, let the caller edit them, write them back.

    ``gshadow`` is written only where the root has one: minimal roots and
    images often do without it.
    """
    with locked(root):
        tables = [read_table(root, name) for name in names]
        yield tables
        for table in tables:
            if table.exists or table.name != "gshadow":
                write_table(root, table, _MODES[table.name])


class Lookup:
    """Name → id resolution under a root, cached until told otherwise.

    Under ``--root`` the root's own ``/etc/passwd`` and ``/etc/group`` are
    authoritative; a root without them falls back to the host's databases, so
    that ``owner = "root"`` works in a bare temp root.
    """

    def __init__(self, root: str) -> None:
        self.root = root
        self._users: dict[str, int] | None = None
        self._groups: dict[str, int] | None = None

    def invalidate(self) -> None:
        self._users = self._groups = None

    def uid(self, user: str | int) -> int:
        if isinstance(user, int):
            return user
        if self._users is None:
            self._users = self._load("passwd")
        try:
            return self._users[user]
        except KeyError:
            raise KeyError(f"no such user: {user}") from None

    def gid(self, group: str | int) -> int:
        if isinstance(group, int):
            return group
        if self._groups is None:
            self._groups = self._load("group")
        try:
            return self._groups[group]
        except KeyError:
            raise KeyError(f"no such group: {group}") from None

    def _load(self, name: str) -> dict[str, int]:
        table = read_table(self.root, name)
        if not table.exists and self.root != "/":
            table = read_table("/", name)
        out: dict[str, int] = {}
        for row in table.rows:
            with contextlib.suppress(ValueError):
                out.setdefault(row[0], int(row[2]))
        return out
