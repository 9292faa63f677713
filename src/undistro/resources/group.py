"""``[[group]]``: a local group in /etc/group and /etc/gshadow.

Example::

    [[group]]
    name = "www"
    gid = 1500            # optional: picked from the free range if absent
    system = true         # pick from the system range (100-999)
    members = ["alice"]   # optional: exactly these supplementary members

Edits are made under the shadow tools' lock and replace each file
atomically; see ``undistro._accounts`` for why not groupadd. The group's
gshadow line is part of the promise: it exists and lists the same members
as /etc/group (its password and administrators are left alone), so that
``grpck -r`` stays quiet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from undistro import _accounts
from undistro.errors import ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Resource,
    Watch,
    boolean,
    integer,
    one_of,
    owner,
    string_list,
)


@dataclass(slots=True)
class GroupState:
    row: list[str] | None  # name, password, gid, members
    gshadow: list[str] | None = None  # name, password, admins, members


class Group(Resource):
    type_name = "group"
    required = frozenset({"name"})
    lock = "accounts"
    fields: ClassVar[dict[str, Converter]] = {
        "ensure": one_of("present", "absent"),
        "gid": integer(0, 2**31 - 1),
        "system": boolean,
        "members": string_list,
    }
    defaults: ClassVar[dict[str, Any]] = {"ensure": "present", "system": False}

    def validate(self) -> None:
        try:
            owner(self.name)
        except ValueError as exc:
            raise ValidationError("name", str(exc)) from None
        check_names("members", self.values.get("members", ()))

    def watches(self) -> list[Watch]:
        return [Watch("path", "/etc/group"), Watch("path", "/etc/gshadow")]

    def probe(self, ctx: Context) -> GroupState:
        return GroupState(
            _accounts.read_table(ctx.root, "group").get(self.name),
            _accounts.read_table(ctx.root, "gshadow").get(self.name),
        )

    def plan(self, state: GroupState) -> list[Action]:
        present = self.values["ensure"] == "present"
        if not present:
            if state.row is None and state.gshadow is None:
                return []
            return [EditGroup(self, "delete group")]
        if state.row is None:
            gid = self.values.get("gid", "auto")
            return [EditGroup(self, f"create group (gid {gid})")]
        changes = []
        if "gid" in self.values and state.row[2] != str(self.values["gid"]):
            changes.append(f"gid {state.row[2]} -> {self.values['gid']}")
        if "members" in self.values:
            have = [m for m in state.row[3].split(",") if m]
            if sorted(have) != sorted(self.values["members"]):
                changes.append(
                    f"members {','.join(have) or '-'} -> {','.join(self.values['members']) or '-'}"
                )
        if not changes and not gshadow_in_step(state.row, state.gshadow):
            changes.append("gshadow entry in step with /etc/group")
        return [EditGroup(self, "; ".join(changes))] if changes else []

    def describe(self, state: Any) -> str | None:
        return None if state.row is None else ":".join(state.row)


class EditGroup(Action):
    def __init__(self, group: Group, summary: str) -> None:
        self.group = group
        self.summary = summary

    def execute(self, ctx: Context) -> str | None:
        values, name = self.group.values, self.group.name
        # gshadow second: a crash between the writes leaves a line the
        # next run completes, never a gshadow group /etc/group lacks.
        with _accounts.editing(ctx.root, "group", "gshadow") as (groups, gshadow):
            if values["ensure"] == "absent":
                groups.remove(name)
                gshadow.remove(name)
            else:
                row = groups.get(name)
                if row is None:
                    gid = values.get("gid")
                    if gid is None:
                        gid = free_id(groups, system=values["system"])
                    row = [name, "x", str(gid), ""]
                if "gid" in values:
                    row[2] = str(values["gid"])
                if "members" in values:
                    row[3] = ",".join(values["members"])
                groups.put(row)
                _accounts.gshadow_row(gshadow, row)
        ctx.accounts_changed()
        return None


def gshadow_in_step(group: list[str] | None, gshadow: list[str] | None) -> bool:
    """What grpck checks of one group: its gshadow line exists and names
    the same members."""
    if group is None:
        return gshadow is None
    return gshadow is not None and _accounts.members(group[3]) == _accounts.members(gshadow[3])


def check_names(key: str, names: tuple[str, ...]) -> None:
    """Members and groups are account names: a ',' ':' or newline in one
    would write a member or a line the policy never declared."""
    for name in names:
        try:
            owner(name)
        except ValueError:
            raise ValidationError(key, f"not a valid user/group name: {name[:80]!r}") from None


def free_id(table: _accounts.Table, *, system: bool, prefer: int | None = None) -> int:
    """The id useradd/groupadd would pick: system ids count down from 999,
    others count up from 1000."""
    used = {int(r[2]) for r in table.rows if r[2].isdigit()}
    if prefer is not None and prefer not in used:
        return prefer
    candidates = range(999, 99, -1) if system else range(1000, 60000)
    for candidate in candidates:
        if candidate not in used:
            return candidate
    raise OSError(f"no free id left in /etc/{table.name}")
