"""What file, directory and symlink share: a path, an owner, a mode.

The shared actions live here so that each type's module is only about what
makes it different.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from typing import Any, ClassVar

from undistro._rootfs import describe_mode
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Fingerprint,
    Resource,
    Watch,
    abspath,
    one_of,
    owner,
)


class PathState:
    """What ``lstat`` (and, for files, a read when needed) said about a path."""

    __slots__ = (
        "content",
        "extra",
        "gid",
        "kind",
        "mode",
        "path",
        "sha256",
        "st",
        "target",
        "uid",
        "want_gid",
        "want_uid",
    )

    def __init__(
        self,
        path: str,
        kind: str,
        mode: int = 0,
        uid: int = -1,
        gid: int = -1,
        *,
        st: os.stat_result | None = None,
    ) -> None:
        self.path = path  # rebased
        self.kind = kind  # "absent" | "file" | "directory" | "symlink" | "other"
        self.mode = mode  # permission bits only
        self.uid = uid
        self.gid = gid
        self.st = st
        self.want_uid: int | None = None  # the desired owner, resolved at probe time
        self.want_gid: int | None = None
        self.sha256: str | None = None  # files
        self.content: bytes | None = None  # files, when they had to be read
        self.target: str | None = None  # symlinks
        self.extra: tuple[str, ...] = ()  # directories with purge: unmanaged entries

    def __repr__(self) -> str:
        return f"PathState({self.path!r}, {self.kind!r}, mode={self.mode:04o})"


def kind_of(st: os.stat_result) -> str:
    if stat.S_ISREG(st.st_mode):
        return "file"
    if stat.S_ISDIR(st.st_mode):
        return "directory"
    if stat.S_ISLNK(st.st_mode):
        return "symlink"
    return "other"


class PathResource(Resource):
    """Base of the resources that own one path."""

    # The declared directories above this path (set by ``bind``): if one of
    # them is found to be a symlink, this resource fails instead of
    # following it.
    __slots__ = ("guard",)

    name_key = "path"
    required = frozenset({"path"})
    common_fields: ClassVar[dict[str, Converter]] = {
        "path": abspath,
        "ensure": one_of("present", "absent"),
        "owner": owner,
        "group": owner,
    }
    defaults: ClassVar[dict[str, Any]] = {"ensure": "present"}

    def __init__(self, values: dict[str, Any], *, name: str, source: str = "") -> None:
        self.guard: tuple[str, ...] = ()
        super().__init__(values, name=name, source=source)

    @property
    def path(self) -> str:
        return str(self.values["path"])

    @property
    def present(self) -> bool:
        return bool(self.values["ensure"] == "present")

    @property
    def guarded(self) -> tuple[str, ...]:
        # A compiled policy cached by an earlier version has no slot value.
        return getattr(self, "guard", ())

    def bind(self, managed: Mapping[str, str], resources: Mapping[str, Resource]) -> None:
        guard = []
        parent = self.path.rpartition("/")[0]
        while parent:
            if managed.get(parent, "").startswith("directory:"):
                guard.append(parent)
            parent = parent.rpartition("/")[0]
        # Files of one directory share one tuple (the agent holds them all).
        if len(_GUARDS) > 65536:
            _GUARDS.clear()
        self.guard = _GUARDS.setdefault(tuple(guard), tuple(guard))

    def managed_paths(self) -> tuple[str, ...]:
        return (self.path,)

    def watches(self) -> list[Watch]:
        return [Watch("path", self.path)]

    def implicit_requires(self) -> tuple[str, ...]:
        out = [f"directory:{os.path.dirname(self.path)}"]
        if isinstance(self.values.get("owner"), str):
            out.append(f"user:{self.values['owner']}")
        if isinstance(self.values.get("group"), str):
            out.append(f"group:{self.values['group']}")
        return tuple(out)

    def lstat_state(self, ctx: Context, st: os.stat_result | None = None) -> PathState:
        """The state ``lstat`` gives (``st`` when the caller already has it),
        the path resolved inside the root (``ctx.fs``)."""
        path = ctx.path(self.path)
        if st is None:
            try:
                st = ctx.fs.lstat(self.path, self.guarded)
            except (FileNotFoundError, NotADirectoryError):
                return PathState(path, "absent")
        state = PathState(path, kind_of(st), stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st=st)
        self.resolve_owner(ctx, state)
        return state

    def resolve_owner(self, ctx: Context, state: PathState) -> None:
        """Resolve the wanted owner now; an unknown name stays None and is
        resolved again (or fails) when the action runs."""
        user, group = self.values.get("owner"), self.values.get("group")
        try:
            state.want_uid = None if user is None else ctx.uid(user)
        except KeyError:
            state.want_uid = None
        try:
            state.want_gid = None if group is None else ctx.gid(group)
        except KeyError:
            state.want_gid = None

    def metadata_wrong(self, state: PathState, want_mode: int | None) -> bool:
        user, group = self.values.get("owner"), self.values.get("group")
        return (
            (user is not None and state.want_uid != state.uid)
            or (group is not None and state.want_gid != state.gid)
            or (want_mode is not None and state.kind != "symlink" and state.mode != want_mode)
        )

    def metadata_actions(self, state: PathState, want_mode: int | None) -> list[Action]:
        """chmod/chown needed to make an existing path's metadata right.

        For a file whose content is right, ``state.sha256`` goes along so the
        new fingerprint can be stored without reading the file again."""
        actions: list[Action] = []
        user, group = self.values.get("owner"), self.values.get("group")
        if (user is not None and state.want_uid != state.uid) or (
            group is not None and state.want_gid != state.gid
        ):
            chown = Chown(self.path, user, group, link=state.kind == "symlink", guard=self.guarded)
            chown.sha256 = state.sha256
            actions.append(chown)
        if want_mode is not None and state.kind != "symlink" and state.mode != want_mode:
            chmod = Chmod(self.path, state.mode, want_mode, guard=self.guarded)
            chmod.sha256 = state.sha256
            actions.append(chmod)
        return actions

    def removal_actions(self, state: PathState) -> list[Action]:
        if state.kind == "absent":
            return []
        return [Remove(self.path, state.kind, guard=self.guarded)]

    def describe(self, state: Any) -> str | None:
        if not isinstance(state, PathState):
            return None
        if state.kind == "absent":
            return "absent"
        parts = [state.kind, f"mode {state.mode:04o}", f"owner {state.uid}:{state.gid}"]
        if state.sha256:
            parts.append(f"sha256 {state.sha256[:12]}")
        if state.target is not None:
            parts.append(f"-> {state.target}")
        return ", ".join(parts)


_GUARDS: dict[tuple[str, ...], tuple[str, ...]] = {}


def not_a(state: PathState, wanted: str) -> Refuse:
    """The refusal for something else (a FIFO, a device, ...) in the way."""
    what = describe_mode(state.st.st_mode) if state.st is not None else state.kind
    return Refuse(f"{state.path} is a {what}, not a {wanted}")


class _MetadataAction(Action):
    """Acts on a policy path (``path``) through ``ctx.fs``."""

    path: str
    guard: tuple[str, ...] = ()
    sha256: str | None = None

    def refingerprint(self, ctx: Context, st: os.stat_result) -> None:
        if self.sha256 is not None:
            ctx.record(ctx.path(self.path), Fingerprint.of(st, self.sha256))


class Chmod(_MetadataAction):
    def __init__(self, path: str, old: int, new: int, *, guard: tuple[str, ...] = ()) -> None:
        self.path, self.new, self.guard = path, new, guard
        self.summary = f"chmod {old:04o} -> {new:04o}"

    def execute(self, ctx: Context) -> str | None:
        self.refingerprint(ctx, ctx.fs.set_meta(self.path, self.new, guard=self.guard))
        return None


class Chown(_MetadataAction):
    def __init__(
        self,
        path: str,
        user: str | int | None,
        group: str | int | None,
        *,
        link: bool,
        guard: tuple[str, ...] = (),
    ):
        self.path, self.user, self.group, self.link, self.guard = path, user, group, link, guard
        who = f"{'' if user is None else user}:{'' if group is None else group}"
        self.summary = f"chown {who}"

    def execute(self, ctx: Context) -> str | None:
        uid = -1 if self.user is None else ctx.uid(self.user)
        gid = -1 if self.group is None else ctx.gid(self.group)
        if self.link:
            ctx.fs.lchown(self.path, uid, gid, self.guard)
        else:
            self.refingerprint(ctx, ctx.fs.set_meta(self.path, None, uid, gid, guard=self.guard))
        return None


class Remove(Action):
    def __init__(self, path: str, kind: str, *, guard: tuple[str, ...] = ()) -> None:
        self.path, self.kind, self.guard = path, kind, guard
        self.summary = f"remove {kind}"

    def execute(self, ctx: Context) -> str | None:
        if self.kind == "directory":
            ctx.fs.rmtree(self.path, self.guard)
        else:
            ctx.fs.unlink(self.path, self.guard)
            if self.kind == "symlink":
                ctx.fs.changed_tree()
        ctx.record(ctx.path(self.path), None)
        return None


class Refuse(Action):
    """A change undistro will not make on its own, reported as a failure."""

    def __init__(self, reason: str) -> None:
        self.summary = f"refuse: {reason}"
        self.reason = reason

    def execute(self, ctx: Context) -> str | None:
        raise OSError(self.reason)
