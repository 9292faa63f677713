"""``[[user]]``: a local account in /etc/passwd and /etc/shadow.

Example::

    [[user]]
    name = "app"
    system = true
    home = "/var/lib/app"
    manage_home = true
    shell = "/usr/sbin/nologin"
    groups = ["www"]            # supplementary groups, exactly these

Without ``group``, the user gets a private group of its own name (what
useradd does with USERGROUPS_ENAB). ``password`` takes a crypt(3) hash and is
never printed. Edits take the shadow tools' lock and replace each file
atomically; see ``undistro._accounts`` for why not useradd.
"""

from __future__ import annotations

import os
import time
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
from undistro.resources.group import free_id


@dataclass(slots=True)
class UserState:
    passwd: list[str] | None  # name, x, uid, gid, gecos, home, shell
    shadow: list[str] | None
    groups: set[str] = field(default_factory=set)  # supplementary memberships
    primary: str | None = None  # name of the primary group, if it exists
    home_exists: bool = False


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
    defaults: ClassVar[dict[str, Any]] = {
        "ensure": "present",
        "system": False,
        "manage_home": False,
    }

    def validate(self) -> None:
        try:
            owner(self.name)
        except ValueError as exc:
            raise ValidationError("name", str(exc)) from None
        for key in ("comment", "password"):
            if ":" in self.values.get(key, "") or "\n" in self.values.get(key, ""):
                raise ValidationError(key, "must not contain ':' or newlines")
        if self.values["manage_home"] and "home" not in self.values:
            raise ValidationError("manage_home", "needs home")

    @property
    def home(self) -> str:
        return str(self.values.get("home", f"/home/{self.name}"))

    def implicit_requires(self) -> tuple[str, ...]:
        groups = list(self.values.get("groups", ()))
        if isinstance(self.values.get("group"), str):
            groups.append(self.values["group"])
        return tuple(f"group:{g}" for g in groups)

    def managed_paths(self) -> tuple[str, ...]:
        return (self.home,) if self.values["manage_home"] else ()

    def watches(self) -> list[Watch]:
        return [
            Watch("path", "/etc/passwd"),
            Watch("path", "/etc/shadow"),
            Watch("path", "/etc/group"),
        ]

    def probe(self, ctx: Context) -> UserState:
        passwd = _accounts.read_table(ctx.root, "passwd").get(self.name)
        shadow = _accounts.read_table(ctx.root, "shadow").get(self.name)
        groups = _accounts.read_table(ctx.root, "group")
        member_of = {r[0] for r in groups.rows if self.name in r[3].split(",")}
        primary = None
        if passwd is not None:
            primary = next((r[0] for r in groups.rows if r[2] == passwd[3]), None)
        home_exists = passwd is not None and os.path.isdir(
            ctx.path(passwd[5]) if passwd[5] != "/" else ctx.root
        )
        return UserState(passwd, shadow, member_of, primary, home_exists)

    def plan(self, state: UserState) -> list[Action]:
        v = self.values
        if v["ensure"] == "absent":
            return [] if state.passwd is None else [EditUser(self, "delete user")]
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
            if changes:
                actions.append(EditUser(self, "; ".join(changes)))
        if v["manage_home"] and not state.home_exists:
            actions.append(MakeHome(self))
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
        with _accounts.editing(ctx.root, "group", "passwd", "shadow") as (groups, passwd, shadow):
            if v["ensure"] == "absent":
                passwd.remove(name)
                shadow.remove(name)
                for row in groups.rows:
                    row[3] = ",".join(m for m in row[3].split(",") if m and m != name)
            else:
                self._converge(passwd, shadow, groups)
        ctx.accounts_changed()
        return None

    def _converge(
        self, passwd: _accounts.Table, shadow: _accounts.Table, groups: _accounts.Table
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
        old = shadow.get(name)
        days = str(int(time.time() // 86400))
        srow = old or [name, "!", days, "0", "99999", "7", "", "", ""]
        if "password" in v:
            srow[1] = v["password"]
        shadow.put(srow)
        if "groups" in v:
            wanted = set(v["groups"])
            missing = wanted - {r[0] for r in groups.rows}
            if missing:
                raise OSError(f"supplementary group(s) do not exist: {', '.join(sorted(missing))}")
            for grow in groups.rows:
                members = [m for m in grow[3].split(",") if m and m != name]
                if grow[0] in wanted:
                    members.append(name)
                grow[3] = ",".join(members)


class MakeHome(Action):
    def __init__(self, user: User) -> None:
        self.user = user
        self.summary = f"create home {user.home} (mode 0700)"

    def execute(self, ctx: Context) -> str | None:
        path = ctx.path(self.user.home)
        os.makedirs(path, mode=0o700, exist_ok=True)
        ctx.accounts_changed()
        os.chown(
            path, ctx.uid(self.user.name), ctx.gid(self.user.values.get("group", self.user.name))
        )
        return None
