"""``[[directory]]``: a directory, its mode and owner, optionally purged.

Example::

    [[directory]]
    path = "/etc/app/conf.d"
    mode = "0755"
    purge = true        # remove entries no resource of the policy manages

Missing parents are created (mode 0755). With ``purge``, anything in the
directory that the policy does not declare is removed — the way to make a
``conf.d`` hold exactly what the policy says.
"""

from __future__ import annotations

import stat
from collections.abc import Mapping
from typing import Any, ClassVar

from undistro._rootfs import is_temp_name
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Resource,
    Watch,
    boolean,
    mode,
)
from undistro.resources._paths import PathResource, PathState, not_a


class Directory(PathResource):
    type_name = "directory"
    fields: ClassVar[dict[str, Converter]] = {
        **PathResource.common_fields,
        "mode": mode,
        "purge": boolean,
    }
    defaults: ClassVar[dict[str, Any]] = {"ensure": "present", "purge": False}

    __slots__ = ("keep",)

    def __init__(self, values: dict[str, Any], *, name: str, source: str = "") -> None:
        self.keep: frozenset[str] = frozenset()
        super().__init__(values, name=name, source=source)

    def bind(self, managed: Mapping[str, str], resources: Mapping[str, Resource]) -> None:
        super().bind(managed, resources)
        if not self.values["purge"]:
            return
        prefix = self.path + "/"
        names = set()
        for path in managed:
            if path.startswith(prefix):
                names.add(path[len(prefix) :].split("/", 1)[0])
        self.keep = frozenset(names)

    def watches(self) -> list[Watch]:
        watches = super().watches()
        if self.values["purge"]:
            watches.append(Watch("tree", self.path))
        return watches

    def probe(self, ctx: Context) -> PathState:
        state = self.lstat_state(ctx)
        if self.values["purge"] and state.kind == "directory":
            # An in-flight atomic write's temp file is not an unmanaged entry
            # (one a killed run left is swept by the next run).
            names = ctx.fs.listdir(self.path, self.guarded)
            extra = (n for n in names if n not in self.keep and not is_temp_name(n))
            state.extra = tuple(sorted(extra))
        return state

    def plan(self, state: PathState) -> list[Action]:
        if not self.present:
            return self.removal_actions(state)
        want_mode = self.values.get("mode")
        if state.kind == "absent":
            return [
                MakeDirectory(
                    self.path,
                    want_mode or 0o755,
                    self.values.get("owner"),
                    self.values.get("group"),
                    guard=self.guarded,
                )
            ]
        if state.kind != "directory":
            return [not_a(state, "directory")]
        actions = self.metadata_actions(state, want_mode)
        if state.extra:
            actions.append(Purge(self.path, state.extra, guard=(*self.guarded, self.path)))
        return actions


class MakeDirectory(Action):
    def __init__(
        self,
        path: str,
        mode: int,
        user: str | int | None,
        group: str | int | None,
        *,
        guard: tuple[str, ...] = (),
    ) -> None:
        self.path, self.mode, self.user, self.group = path, mode, user, group
        self.guard = guard
        self.summary = f"create directory (mode {mode:04o})"

    def execute(self, ctx: Context) -> str | None:
        uid = -1 if self.user is None else ctx.uid(self.user)
        gid = -1 if self.group is None else ctx.gid(self.group)
        ctx.fs.mkdir(self.path, self.mode, uid, gid, self.guard)
        return None


class Purge(Action):
    def __init__(self, path: str, names: tuple[str, ...], *, guard: tuple[str, ...] = ()) -> None:
        self.path, self.names, self.guard = path, names, guard
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        self.summary = f"purge unmanaged: {shown}"

    def execute(self, ctx: Context) -> str | None:
        fs = ctx.fs
        for name in self.names:
            path = f"{self.path}/{name}"
            try:
                if stat.S_ISDIR(fs.lstat(path, self.guard).st_mode):
                    fs.rmtree(path, self.guard)
                else:
                    fs.unlink(path, self.guard)
            except FileNotFoundError:
                pass
            ctx.record(ctx.path(path), None)
        return "removed: " + " ".join(self.names)
