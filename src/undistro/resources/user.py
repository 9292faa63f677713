"""``[[user]]``: a local account in /etc/passwd and /etc/shadow.

Example::

    [[user]]
    name = "app"
    system = true
    home = "/var/lib/app"       # created if missing (manage_home = false: never)
    shell = "/usr/sbin/nologin"
    groups = ["www"]            # supplementary groups, exactly these

Without ``group``, the user gets a private group of its own name (what
useradd does with USERGROUPS_ENAB). ``password`` takes a crypt(3) hash and is
never printed. Edits take the shadow tools' lock and replace each file
atomically; see ``undistro._accounts`` for why not useradd. The promise
covers what ``pwck -r`` and ``grpck -r`` check: a shadow line, the private
group's gshadow line, memberships listed alike in /etc/group and
/etc/gshadow, and a home that exists.

The home is created when missing unless ``manage_home = false``: for every
user with a ``home``, and for a non-system one without (its default
/home/NAME); not for a system user without ``home`` (as ``useradd -r``;
pwck does not look for system users' homes), not for ``/nonexistent``, and
not where another resource of the policy manages that path. It is built
aside and renamed into place: mode login.defs' HOME_MODE, else 0700; a copy
of the root's /etc/skel (symlinks copied as links, never followed; only
regular files, directories and links); owned by the user and its primary
group. An existing home is never touched, nor removed with the user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from undistro import _accounts
from undistro.errors import ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Resource,
    Watch,
    abspath,
    boolean,
    integer,
    one_of,
    owner,
    string,
    string_list,
)
from undistro.resources.group import check_names, free_id


@dataclass(slots=True)
class UserState:
    passwd: list[str] | None  # name, x, uid, gid, gecos, home, shell
    shadow: list[str] | None
    groups: set[str] = field(default_factory=set)  # supplementary memberships
    primary: str | None = None  # name of the primary group, if it exists
    home_exists: bool = False  # the home the policy wants
    gshadow_groups: set[str] = field(default_factory=set)  # memberships in gshadow
    missing_gshadow: set[str] = field(default_factory=set)  # own groups without a line
    home_mode: int = 0o700


class User(Resource):
    type_name = "user"
    required = frozenset({"name"})
    lock = "accounts"
    fields: ClassVar[dict[str, Converter]] = {
        "ensure": one_of("present", "absent"),
        "uid": integer(0, 2**31 - 1),
        "group": owner,
        "groups": string_list,
        "home": abspath,
        "shell": abspath,
        "comment": string,
        "password": string,
        "system": boolean,
        "manage_home": boolean,
    }
    defaults: ClassVar[dict[str, Any]] = {"ensure": "present", "system": False}

    # The shadow suite's "this account has no home" (login.defs NONEXISTENT).
    NO_HOME: ClassVar[str] = "/nonexistent"

    def validate(self) -> None:
        try:
            owner(self.name)
        except ValueError as exc:
            raise ValidationError("name", str(exc)) from None
        # One ':' or newline in a field would write another account: a home
        # "/h:0:0::/root:/bin/sh" or a shell ending "\nroot2::0:0::/:/bin/sh".
        for key in ("comment", "password", "home", "shell"):
            if ":" in self.values.get(key, "") or "\n" in self.values.get(key, ""):
                raise ValidationError(key, "must not contain ':' or newlines")
        check_names("groups", self.values.get("groups", ()))
        if self.values.get("manage_home") and "home" not in self.values:
            raise ValidationError("manage_home", "needs home")

    @property
    def home(self) -> str:
        return str(self.values.get("home", f"/home/{self.name}"))

    def implicit_requires(self) -> tuple[str, ...]:
        groups = list(self.values.get("groups", ()))
        if isinstance(self.values.get("group"), str):
            groups.append(self.values["group"])
        return tuple(f"group:{g}" for g in groups)

    @property
    def makes_home(self) -> bool:
        """Whether the promise includes a home that exists (see above)."""
        v = self.values
        if self.home == self.NO_HOME:
            return False
        return bool(v.get("manage_home", "home" in v or not v["system"]))

    def managed_paths(self) -> tuple[str, ...]:
        # Only an explicit manage_home claims the path: a home made by
        # default yields to a [[directory]] of the same path.
        return (self.home,) if self.values.get("manage_home") else ()

    def bind(self, managed: Mapping[str, str], resources: Mapping[str, Resource]) -> None:
        if "manage_home" not in self.values and self.home in managed:
            self.values["manage_home"] = False

    def watches(self) -> list[Watch]:
        watches = [
            Watch("path", "/etc/passwd"),
            Watch("path", "/etc/shadow"),
            Watch("path", "/etc/group"),
            Watch("path", "/etc/gshadow"),
        ]
        if self.makes_home:
            watches.append(Watch("path", self.home))
        return watches

    def probe(self, ctx: Context) -> UserState:
        passwd = _accounts.read_table(ctx.root, "passwd").get(self.name)
        shadow = _accounts.read_table(ctx.root, "shadow").get(self.name)
        groups = _accounts.read_table(ctx.root, "group")
        gshadow = _accounts.read_table(ctx.root, "gshadow")
        member_of = {r[0] for r in groups.rows if self.name in _accounts.members(r[3])}
        in_gshadow = {r[0] for r in gshadow.rows if self.name in _accounts.members(r[3])}
        primary = None
        if passwd is not None:
            primary = next((r[0] for r in groups.rows if r[2] == passwd[3]), None)
        # Groups whose gshadow line this user's edits write: the private
        # group and the supplementary ones it lists.
        own = set(self.values.get("groups", ()))
        if "group" not in self.values and groups.get(self.name) is not None:
            own.add(self.name)
        missing = {g for g in own if groups.get(g) is not None and gshadow.get(g) is None}
        home = self.values.get("home") or (passwd[5] if passwd else self.home)
        home_exists = os.path.isdir(ctx.path(home))
        return UserState(
            passwd,
            shadow,
            member_of,
            primary,
            home_exists,
            in_gshadow,
            missing,
            _home_mode(_accounts.login_defs(ctx.root)),
        )

    def plan(self, state: UserState) -> list[Action]:
        v = self.values
        if v["ensure"] == "absent":
            if state.passwd is None and not (state.groups | state.gshadow_groups):
                return []
            return [EditUser(self, "delete user")]
        actions: list[Action] = []
        if state.passwd is None:
            actions.append(EditUser(self, f"create user (uid {v.get('uid', 'auto')})"))
        else:
            changes = []
            row = state.passwd
            for key, index in (("uid", 2), ("comment", 4), ("home", 5), ("shell", 6)):
                if key in v and row[index] != str(v[key]):
                    changes.append(f"{key} {row[index] or '-'} -> {v[key]}")
            group = v.get("group")
            if group is not None and str(group) not in (row[3], state.primary):
                changes.append(f"group {state.primary or row[3]} -> {group}")
            if "groups" in v and state.groups != set(v["groups"]):
                have, want = ",".join(sorted(state.groups)), ",".join(v["groups"])
                changes.append(f"groups {have or '-'} -> {want or '-'}")
            if "password" in v and (state.shadow is None or state.shadow[1] != v["password"]):
                changes.append("password (hidden)")
            if not changes:
                if state.shadow is None:
                    changes.append("shadow entry")
                if state.missing_gshadow or (
                    "groups" in v and state.gshadow_groups != set(v["groups"])
                ):
                    changes.append("gshadow entries in step with /etc/group")
            if changes:
                actions.append(EditUser(self, "; ".join(changes)))
        if self.makes_home and not state.home_exists:
            actions.append(MakeHome(self, state.home_mode))
        return actions

    def describe(self, state: Any) -> str | None:
        return None if state.passwd is None else ":".join(state.passwd)


class EditUser(Action):
    def __init__(self, user: User, summary: str) -> None:
        self.user = user
        self.summary = summary

    def execute(self, ctx: Context) -> str | None:
        v, name = self.user.values, self.user.name
        # group first: a crash between writes must not leave passwd naming
        # a group that does not exist yet.
        with _accounts.editing(ctx.root, "group", "gshadow", "passwd", "shadow") as tables:
            groups, gshadow, passwd, shadow = tables
            if v["ensure"] == "absent":
                passwd.remove(name)
                shadow.remove(name)
                for row in groups.rows:
                    row[3] = _without(row[3], name)
                for row in gshadow.rows:  # as userdel: an administrator too
                    row[2], row[3] = _without(row[2], name), _without(row[3], name)
            else:
                self._converge(passwd, shadow, groups, gshadow)
        ctx.accounts_changed()
        return None

    def _converge(
        self,
        passwd: _accounts.Table,
        shadow: _accounts.Table,
        groups: _accounts.Table,
        gshadow: _accounts.Table,
    ) -> None:
        v, name = self.user.values, self.user.name
        row = passwd.get(name)
        if row is None:
            uid = v.get("uid")
            if uid is None:
                uid = free_id(passwd, system=v["system"])
            row = [
                name,
                "x",
                str(uid),
                "",
                v.get("comment", ""),
                self.user.home,
                v.get("shell", "/bin/sh"),
            ]
        if "uid" in v:
            row[2] = str(v["uid"])
        group = v.get("group")
        if group is None:
            own = groups.get(name)
            if own is None:
                own = [name, "x", str(free_id(groups, system=v["system"], prefer=int(row[2]))), ""]
                groups.put(own)
            if gshadow.get(name) is None:
                _accounts.gshadow_row(gshadow, own)
            row[3] = own[2]
        elif isinstance(group, int):
            row[3] = str(group)
        else:
            found = groups.get(group)
            if found is None:
                raise OSError(f"group {group!r} does not exist")
            row[3] = found[2]
        for key, index in (("comment", 4), ("home", 5), ("shell", 6)):
            if key in v:
                row[index] = str(v[key])
        passwd.put(row)
        srow = shadow.get(name) or _accounts.shadow_row(name)
        if "password" in v:
            srow[1] = v["password"]
        shadow.put(srow)
        if "groups" in v:
            wanted = set(v["groups"])
            missing = wanted - {r[0] for r in groups.rows}
            if missing:
                raise OSError(f"supplementary group(s) do not exist: {', '.join(sorted(missing))}")
            for grow in groups.rows:
                grow[3] = _without(grow[3], name)
                if grow[0] in wanted:
                    grow[3] = f"{grow[3]},{name}" if grow[3] else name
            # gshadow: this user's membership alike; a group without a line
            # gets one whole, from /etc/group.
            for grow in groups.rows:
                line = gshadow.get(grow[0])
                if line is None:
                    if grow[0] in wanted:
                        _accounts.gshadow_row(gshadow, grow)
                    continue
                line[3] = _without(line[3], name)
                if grow[0] in wanted:
                    line[3] = f"{line[3]},{name}" if line[3] else name


def _without(field: str, name: str) -> str:
    return ",".join(m for m in field.split(",") if m and m != name)


def _home_mode(defs: Mapping[str, str]) -> int:
    """login.defs' HOME_MODE where it sets one, else 0700.

    useradd falls back to ~UMASK (0755 on Debian); Debian's own adduser
    moved to 0700 in bookworm, and a home others can read is the weaker
    default to pick for a person who did not choose."""
    with contextlib.suppress(KeyError, ValueError):
        return int(defs["HOME_MODE"], 8) & 0o7777
    return 0o700


class MakeHome(Action):
    def __init__(self, user: User, mode: int) -> None:
        self.user = user
        self.mode = mode
        self.summary = f"create home {user.home} (mode {mode:04o})"

    def execute(self, ctx: Context) -> str | None:
        row = _accounts.read_table(ctx.root, "passwd").get(self.user.name)
        if row is None or not (row[2].isdigit() and row[3].isdigit()):
            raise OSError(f"no usable /etc/passwd line for {self.user.name}")
        uid, gid = int(row[2]), int(row[3])
        fs, home = ctx.fs, self.user.home
        # Every step resolves inside the root (RootFS): a ROOT/home that is a
        # symlink out of the root is followed inside it, never to the host.
        try:
            st = fs.lstat(home)
        except FileNotFoundError:
            pass
        else:
            if stat.S_ISDIR(st.st_mode):  # made since the probe: left as it is
                return None
            raise FileExistsError(f"{home} exists and is not a directory")
        parent, _, base = home.rpartition("/")
        # Built aside, then renamed: a killed run leaves no half-copied home
        # that a later run would take for a finished one.
        tmp = f"{parent}/.{base[:200]}.undistro-tmp"
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISDIR(fs.lstat(tmp).st_mode):
                fs.rmtree(tmp)
            else:
                fs.unlink(tmp)
        fs.mkdir(tmp, 0o700)
        try:
            dest = fs.open(tmp, os.O_RDONLY | os.O_DIRECTORY)
            try:
                note = _copy_skel(fs, dest, uid, gid)
            finally:
                os.close(dest)
            fs.set_meta(tmp, self.mode, uid, gid)
            fs.replace(tmp, home)
        except BaseException:
            with contextlib.suppress(OSError):
                fs.rmtree(tmp)
            raise
        return note


def _copy_skel(fs: Any, dest: int, uid: int, gid: int) -> str | None:
    """Copy the skeleton into a new home (the open directory ``dest``),
    never following a symlink: each entry is opened with O_NOFOLLOW relative
    to its opened parent, links are re-created as links, anything but files,
    directories and links is skipped. Returns a note for the journal when the
    skeleton is not used."""
    try:
        fd = fs.open("/etc/skel", os.O_RDONLY | os.O_DIRECTORY)
    except FileNotFoundError:
        return None
    except OSError:  # ENOTDIR or ELOOP: a file, or a symlink refused by O_NOFOLLOW
        return "/etc/skel is not a directory (a symlink?): home left empty"
    try:
        _copy_dir(fd, dest, uid, gid)
    finally:
        os.close(fd)
    return None


# Deeper than any real skeleton; a bound keeps a hostile one from using up
# the recursion limit and one open descriptor per level.
_SKEL_DEPTH = 32


def _copy_dir(src: int, dest: int, uid: int, gid: int, depth: int = 0) -> None:
    """Copy directory fd ``src`` into directory fd ``dest``: every name is
    relative to an open directory, so nothing here resolves a path."""
    if depth > _SKEL_DEPTH:
        raise OSError(f"/etc/skel nests deeper than {_SKEL_DEPTH} directories: not copied")
    for name in os.listdir(src):
        st = os.stat(name, dir_fd=src, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            os.symlink(os.readlink(name, dir_fd=src), name, dir_fd=dest)
        elif stat.S_ISDIR(st.st_mode):
            sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=src)
            try:
                os.mkdir(name, 0o700, dir_fd=dest)
                out = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dest)
                try:
                    _copy_dir(sub, out, uid, gid, depth + 1)
                finally:
                    os.close(out)
            finally:
                os.close(sub)
        elif stat.S_ISREG(st.st_mode):
            fin = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=src)
            try:
                if not stat.S_ISREG(os.fstat(fin).st_mode):  # swapped since the stat
                    continue
                flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                fout = os.open(name, flags, 0o600, dir_fd=dest)
                with open(fin, "rb", closefd=False) as reader, open(fout, "wb") as writer:
                    shutil.copyfileobj(reader, writer)
            finally:
                os.close(fin)
        else:
            continue
        # Nobody but root can enter the home before its rename, so these
        # names are still the entries just made.
        os.chown(name, uid, gid, dir_fd=dest, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dest)
