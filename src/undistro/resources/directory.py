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

import os
import shutil
from collections.abc import Mapping
from typing import Any, ClassVar

from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Resource,
    Watch,
    boolean,
    mode,
)
from undistro.resources._paths import PathResource, PathState, Refuse


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
        if not self.values["purge"]:
            return
        prefix = self.path + "/"
        names = set()
        for path in managed:
            if path.startswith(prefix):
                name = path[len(prefix) :].split("/", 1)[0]
                names.add(name)
                names.add(f".{name}.undistro-tmp")  # an in-flight atomic write
        self.keep = frozenset(names)

    def watches(self) -> list[Watch]:
        watches = super().watches()
        if self.values["purge"]:
            watches.append(Watch("tree", self.path))
        return watches

    def probe(self, ctx: Context) -> PathState:
        state = self.lstat_state(ctx)
        if self.values["purge"] and state.kind == "directory":
            state.extra = tuple(sorted(n for n in os.listdir(state.path) if n not in self.keep))
        return state

    def plan(self, state: PathState) -> list[Action]:
        if not self.present:
            return self.removal_actions(state)
        want_mode = self.values.get("mode")
        if state.kind == "absent":
            return [
                MakeDirectory(
                    state.path,
                    want_mode or 0o755,
                    self.values.get("owner"),
                    self.values.get("group"),
                )
            ]
        if state.kind != "directory":
            return [Refuse(f"{state.path} is a {state.kind}, not a directory")]
        actions = self.metadata_actions(state, want_mode)
        if state.extra:
            actions.append(Purge(state.path, state.extra))
        return actions


class MakeDirectory(Action):
    def __init__(
        self, path: str, mode: int, user: str | int | None, group: str | int | None
    ) -> None:
        self.path, self.mode, self.user, self.group = path, mode, user, group
        self.summary = f"create directory (mode {mode:04o})"

    def execute(self, ctx: Context) -> str | None:
        os.makedirs(os.path.dirname(self.path), mode=0o755, exist_ok=True)
        os.mkdir(self.path, self.mode)
        os.chmod(self.path, self.mode)  # mkdir's mode is filtered by the umask
        if self.user is not None or self.group is not None:
            uid = -1 if self.user is None else ctx.uid(self.user)
            gid = -1 if self.group is None else ctx.gid(self.group)
            os.chown(self.path, uid, gid)
        return None


class Purge(Action):
    def __init__(self, path: str, names: tuple[str, ...]) -> None:
        self.path, self.names = path, names
        shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
        self.summary = f"purge unmanaged: {shown}"

    def execute(self, ctx: Context) -> str | None:
        for name in self.names:
            path = os.path.join(self.path, name)
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path)
                else:
                    os.unlink(path)
            except FileNotFoundError:
                pass
            ctx.record(path, None)
        return "removed: " + " ".join(self.names)
