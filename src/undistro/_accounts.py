"""Reading and editing the account databases (passwd, group, shadow, gshadow).

undistro edits these files itself rather than calling useradd/groupadd with
``--root``/``--prefix``: those need the shadow tools and a login.defs inside
the root, run PAM-less half-features there, and cannot change several fields
in one atomic step. Each edit takes the same lock the shadow tools take
(``/etc/.pwd.lock``, an fcntl lock), re-reads the files under it, and replaces
each one atomically (temp file, fsync, rename, fsync of /etc).

The shadow tools' own checkers (``pwck -r``, ``grpck -r``) are the bar: every
passwd user has a shadow line and every group a gshadow line whose members
match /etc/group's. A root without shadow or gshadow gets one, filled for
every account as ``pwconv``/``grpconv`` would, owned ``root:shadow`` 0640
where the root has a ``shadow`` group (Debian's way), else 0600.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import time
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


def read_text(root: str, name: str) -> str | None:
    """The text of ``ROOT/etc/NAME`` (resolved inside the root), or None
    where it does not exist."""
    try:
        with RootFS(root) as fs:
            return fs.read(f"/etc/{name}").decode("utf-8", "surrogateescape")
    except (FileNotFoundError, NotADirectoryError):
        return None


def read_table(root: str, name: str) -> Table:
    text = read_text(root, name)
    if text is None:
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


def write_table(root: str, table: Table, mode: int, gid: int | None = 0) -> None:
    """Replace one database atomically and durably, under the root only
    (every open and rename goes through :class:`RootFS`).

    An existing file keeps its owner and its mode, narrowed to ``mode`` (a
    shadow left world-readable is closed; Fedora's 0000 stays 0000); a new
    one gets ``mode`` and group ``gid`` (None: no group may read it).
    """
    path = f"/etc/{table.name}"
    tmp = f"/etc/+{table.name}.undistro-tmp"
    with RootFS(root) as fs:
        fd = fs.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600, parents=True)
        try:
            try:
                st = fs.lstat(path)
                os.fchown(fd, st.st_uid, st.st_gid)
                mode &= stat.S_IMODE(st.st_mode)
            except FileNotFoundError:
                try:
                    if gid is None:
                        mode &= 0o600
                    elif gid:
                        os.fchown(fd, -1, gid)
                except PermissionError:  # not root: nobody else may read it
                    mode &= 0o600
            os.fchmod(fd, mode)
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

# The shadow file of each public database.
_SHADOW_OF = {"passwd": "shadow", "group": "gshadow"}


def shadow_row(name: str, password: str = "!") -> list[str]:
    """A new user's shadow line, aged as useradd ages it (login.defs'
    PASS_MIN_DAYS 0, PASS_MAX_DAYS 99999, PASS_WARN_AGE 7)."""
    return [name, password, str(int(time.time() // 86400)), "0", "99999", "7", "", "", ""]


def gshadow_row(gshadow: Table, group: list[str]) -> list[str]:
    """Put ``group``'s gshadow line in step with its /etc/group line: the
    members copied, the password and the administrators kept (``!`` and none
    for a new group, as groupadd writes)."""
    old = gshadow.get(group[0]) or [group[0], "!", "", ""]
    row = [group[0], old[1], old[2], group[3]]
    gshadow.put(row)
    return row


def members(field: str) -> set[str]:
    return {m for m in field.split(",") if m}


def _convert(public: Table, shadow: Table) -> None:
    """Fill a shadow file being created with a line for every account, as
    pwconv/grpconv do: a password kept in the public file moves to the shadow
    one and leaves ``x``; an ``x`` with no shadow line behind it locked
    the account, and ``!`` keeps it locked."""
    made = {row[0]: row for row in shadow.rows}
    rows = []
    for row in public.rows:
        line = made.pop(row[0], None)
        if line is None:
            password = "!" if row[1] == "x" else row[1]
            row[1] = "x"
            if shadow.name == "shadow":
                line = shadow_row(row[0], password)
            else:
                line = [row[0], password, "", row[3]]
        rows.append(line)
    shadow.rows = rows + list(made.values())  # in the public file's order


@contextlib.contextmanager
def editing(root: str, *names: str) -> Iterator[list[Table]]:
    """Lock, read ``names``, let the caller edit them, write them back.

    Name each shadow file beside its public one: a missing shadow file is
    then created whole (see the module's docstring). Files are written in
    the order named.
    """
    with locked(root):
        tables = [read_table(root, name) for name in names]
        by_name = {table.name: table for table in tables}
        for pair in _SHADOW_OF.items():
            opened = [by_name[n] for n in pair if n in by_name and by_name[n].exists]
            if len(opened) == 2 and bool(opened[0].rows) != bool(opened[1].rows):
                # An editor rewriting it in place (truncate, then write)
                # without the lock: writing back what was read would lose
                # every line; the writer's close is the next event.
                blank = opened[0] if not opened[0].rows else opened[1]
                raise OSError(f"/etc/{blank.name} is empty (being rewritten?): not edited")
        yield tables
        for public, shadow in _SHADOW_OF.items():
            if public in by_name and shadow in by_name and not by_name[shadow].exists:
                _convert(by_name[public], by_name[shadow])
        groups = by_name.get("group") or read_table(root, "group")
        shadow_group = groups.get("shadow")
        for table in tables:
            gid: int | None = 0
            if table.name in _SHADOW_OF.values():
                gid = None
                if shadow_group is not None and shadow_group[2].isdigit():
                    gid = int(shadow_group[2])
            write_table(root, table, _MODES[table.name], gid)


def login_defs(root: str) -> dict[str, str]:
    """The root's /etc/login.defs as key → value (empty where it has none)."""
    out: dict[str, str] = {}
    for line in (read_text(root, "login.defs") or "").splitlines():
        parts = line.split(None, 1)
        if len(parts) == 2 and not parts[0].startswith("#"):
            out[parts[0]] = parts[1].strip()
    return out


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
