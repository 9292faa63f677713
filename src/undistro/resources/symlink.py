"""``[[symlink]]``: a symbolic link pointing at a target.

Example::

    [[symlink]]
    path = "/etc/nginx/sites-enabled/app"
    target = "/etc/nginx/sites-available/app"

The link is made beside its final place and renamed over it, so a reader
sees the old link or the new one, never none. A regular file in the way is
replaced only with ``force = true``; a directory never is.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from undistro._rootfs import temp_name
from undistro.errors import ValidationError
from undistro.resources._base import Action, Context, Converter, boolean, nonempty
from undistro.resources._paths import PathResource, PathState, Refuse


class Symlink(PathResource):
    __slots__ = ()

    type_name = "symlink"
    required = frozenset({"path", "target"})
    fields: ClassVar[dict[str, Converter]] = {
        **PathResource.common_fields,
        "target": nonempty,
        "force": boolean,
    }
    defaults: ClassVar[dict[str, Any]] = {"ensure": "present", "force": False}

    def validate(self) -> None:
        # symlink(2) takes a target of at most PATH_MAX - 1 bytes: found
        # here, not after other resources of the run were already changed.
        size = len(os.fsencode(self.values["target"]))
        if size >= 4096:
            raise ValidationError("target", f"is {size} bytes long, more than PATH_MAX (4095)")

    def probe(self, ctx: Context) -> PathState:
        state = self.lstat_state(ctx)
        if state.kind == "symlink":
            state.target = ctx.fs.readlink(self.path, self.guarded)
        return state

    def plan(self, state: PathState) -> list[Action]:
        if not self.present:
            return self.removal_actions(state)
        target = self.values["target"]
        if state.kind == "directory" or state.kind == "other":
            return [Refuse(f"{state.path} is a {state.kind}; will not replace it with a link")]
        if state.kind == "file" and not self.values["force"]:
            return [Refuse(f"{state.path} is a regular file; set force = true to replace it")]
        # A link with a second hard link is made anew rather than chowned
        # in place (which would change the other name too).
        shared = state.st is not None and state.st.st_nlink > 1
        if (
            state.kind != "symlink"
            or state.target != target
            or (shared and self.metadata_wrong(state, None))
        ):
            return [
                MakeLink(
                    self.path,
                    target,
                    self.values.get("owner"),
                    self.values.get("group"),
                    state.target,
                    guard=self.guarded,
                )
            ]
        return self.metadata_actions(state, None)


class MakeLink(Action):
    def __init__(
        self,
        path: str,
        target: str,
        user: str | int | None,
        group: str | int | None,
        old: str | None,
        *,
        guard: tuple[str, ...] = (),
    ) -> None:
        self.path, self.target, self.user, self.group = path, target, user, group
        self.guard = guard
        self.summary = f"link -> {target}" + (f" (was -> {old})" if old is not None else "")

    def execute(self, ctx: Context) -> str | None:
        directory, _, base = self.path.rpartition("/")
        tmp = f"{directory}/{temp_name(base)}"
        uid = -1 if self.user is None else ctx.uid(self.user)
        gid = -1 if self.group is None else ctx.gid(self.group)
        # Missing parents are made, as file does: see there.
        ctx.fs.symlink(self.target, tmp, uid, gid, self.guard)
        ctx.stage_replace(tmp, self.path)
        return None
