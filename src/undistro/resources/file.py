"""``[[file]]``: a regular file with given content, mode and owner.

Example::

    [[file]]
    path = "/etc/motd"
    template = "motd.j2"        # or content = "...", or source = "motd"
    mode = "0644"
    owner = "root"
    notify = ["exec:reload-motd"]

A one-shot run costs one ``lstat`` per file: the content is read and hashed
only when the inode, size, mtime, mode or owner moved since the last run.
Writes are atomic (temp file in the same directory, then rename); the engine
makes a whole wave of writes durable with one sync before renaming them.
"""

from __future__ import annotations

import os
import stat
from typing import Any, ClassVar

from undistro._hash import sha256_hex
from undistro.errors import ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Fingerprint,
    PolicyInputs,
    boolean,
    mode,
    string,
    string_table,
)
from undistro.resources._paths import PathResource, PathState, not_a
from undistro.resources._validate_cmd import validate_command


class Proven:
    """What probe returns when the fingerprint proves the file is as
    promised: just the ``lstat``, so that the no-op path builds nothing more."""

    __slots__ = ("sha256", "st")

    def __init__(self, st: os.stat_result, sha256: str) -> None:
        self.st = st
        self.sha256 = sha256


_EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# Contents larger than this are hashed but not kept for diffs.
_DIFF_LIMIT = 256 * 1024


class File(PathResource):
    type_name = "file"
    fields: ClassVar[dict[str, Converter]] = {
        **PathResource.common_fields,
        "content": string,
        "source": string,
        "template": string,
        "vars": string_table,
        "mode": mode,
        "sensitive": boolean,
        "validate": validate_command,
    }
    defaults: ClassVar[dict[str, Any]] = {"ensure": "present", "sensitive": False}

    __slots__ = ("data", "sha256")

    def __init__(self, values: dict[str, Any], *, name: str, source: str = "") -> None:
        self.data: bytes | None = None
        self.sha256: str | None = None
        super().__init__(values, name=name, source=source)

    def validate(self) -> None:
        given = [k for k in ("content", "source", "template") if k in self.values]
        if len(given) > 1:
            raise ValidationError(
                given[1], f"give only one of content, source, template (got {given[0]} too)"
            )
        if "vars" in self.values and "template" not in self.values:
            raise ValidationError("vars", "only makes sense with template")
        if "content" in self.values:
            # Kept once, as bytes: the compiled policy is smaller to load.
            self._set_data(self.values.pop("content").encode())

    def prepare(self, inputs: PolicyInputs) -> None:
        if "source" in self.values:
            try:
                self._set_data(inputs.read_source(self.values["source"]))
            except ValueError as exc:
                raise ValidationError("source", str(exc)) from None
        elif "template" in self.values:
            try:
                text = inputs.render_template(self.values["template"], self.values.get("vars", {}))
            except ValueError as exc:
                raise ValidationError("template", str(exc)) from None
            self._set_data(text.encode())

    def _set_data(self, data: bytes) -> None:
        self.data = data
        self.sha256 = sha256_hex(data)

    # -- probe / plan --------------------------------------------------------

    def probe(self, ctx: Context) -> PathState | Proven:
        path = ctx.path(self.path)
        st = None
        if self.data is not None and self.values["ensure"] == "present":
            # The fast path of a no-op run: one lstat, proven against the
            # fingerprint stored when the content was last known right.
            fp = ctx.fingerprint(path)
            if fp is not None and fp.sha256 == self.sha256:
                try:
                    st = ctx.fs.lstat(self.path, self.guarded)
                except OSError:
                    st = None
                if (
                    st is not None
                    and fp.matches(st)
                    and st.st_nlink == 1
                    and self._metadata_ok(ctx, st)
                ):
                    return Proven(st, fp.sha256)
        state = self.lstat_state(ctx, st)
        if state.kind != "file" or self.data is None or state.st is None:
            return state
        fp = ctx.fingerprint(state.path)
        if fp is not None and fp.matches(state.st):
            state.sha256 = fp.sha256
            return state
        # Opened only if it is (still) a regular file: never a FIFO or device.
        content = ctx.fs.read(self.path, self.guarded)
        state.sha256 = sha256_hex(content)
        if len(content) <= _DIFF_LIMIT:
            state.content = content
        if state.sha256 == self.sha256:
            # Content is right; remember it so the next run needs no read.
            ctx.record(state.path, Fingerprint.of(state.st, state.sha256))
        return state

    def _metadata_ok(self, ctx: Context, st: os.stat_result) -> bool:
        v = self.values
        try:
            return (
                ("mode" not in v or stat.S_IMODE(st.st_mode) == v["mode"])
                and ("owner" not in v or ctx.uid(v["owner"]) == st.st_uid)
                and ("group" not in v or ctx.gid(v["group"]) == st.st_gid)
            )
        except KeyError:
            return False

    def plan(self, state: PathState | Proven) -> list[Action]:
        if isinstance(state, Proven):
            return []
        if not self.present:
            return self.removal_actions(state)
        if state.kind not in ("absent", "file", "symlink"):
            return [not_a(state, "file")]
        want_mode = self.values.get("mode")
        if state.kind != "file" or (self.data is not None and state.sha256 != self.sha256):
            return [self._write(state, self.data if self.data is not None else b"", want_mode)]
        links = state.st.st_nlink if state.st is not None else 1
        if links > 1 and (self.data is not None or self.metadata_wrong(state, want_mode)):
            # Another name shares this inode: a chmod here would change it
            # there too (the hard-link attack on /etc/shadow), and writes
            # through it would never be seen. The file gets its own inode.
            action = self._write(state, self.data, want_mode)
            action.summary = f"replace file ({links} hard links) with its own copy"
            return [action]
        return self.metadata_actions(state, want_mode)

    def _write(self, state: PathState, data: bytes | None, want_mode: int | None) -> WriteFile:
        """Write ``data``, or (None) a copy of what the file holds now."""
        if want_mode is None:
            want_mode = state.mode if state.kind == "file" else 0o644
        action = WriteFile(
            self.path,
            data,
            self.sha256 or _EMPTY_SHA256,
            want_mode,
            self.values.get("owner"),
            self.values.get("group"),
            keep_uid=state.uid if state.kind == "file" else None,
            keep_gid=state.gid if state.kind == "file" else None,
            guard=self.guarded,
        )
        verb = (
            "create"
            if state.kind == "absent"
            else "replace symlink with"
            if state.kind == "symlink"
            else "update"
        )
        size = len(data) if data is not None else state.st.st_size if state.st else 0
        action.summary = f"{verb} file ({size} bytes, mode {want_mode:04o})"
        action.label = self.path
        action.old = state.content if state.kind == "file" else b""
        action.sensitive = self.values["sensitive"]
        if "validate" in self.values:
            from undistro.resources._validate_cmd import describe

            action.validate = self.values["validate"]
            action.summary += f", {describe(action.validate)}"
        return action

    def describe(self, state: Any) -> str | None:
        if isinstance(state, Proven):
            st = state.st
            mode = stat.S_IMODE(st.st_mode)
            return (
                f"file, mode {mode:04o}, owner {st.st_uid}:{st.st_gid}, sha256 {state.sha256[:12]}"
            )
        return super().describe(state)


class WriteFile(Action):
    """Write a temp file beside the target with its final metadata; the
    engine renames it into place once the wave's data is durable.

    ``path`` is the policy path, written through ``ctx.fs``; ``data`` None
    copies what the file holds now (to give it its own inode)."""

    label = ""
    old: bytes | None = b""
    sensitive = False
    validate: tuple[str, ...] | None = None

    def __init__(
        self,
        path: str,
        data: bytes | None,
        sha256: str,
        mode: int,
        user: str | int | None,
        group: str | int | None,
        *,
        keep_uid: int | None,
        keep_gid: int | None,
        guard: tuple[str, ...] = (),
    ) -> None:
        self.path, self.data, self.sha256, self.mode = path, data, sha256, mode
        self.user, self.group = user, group
        self.keep_uid, self.keep_gid = keep_uid, keep_gid
        self.guard = guard

    def diff(self) -> str | None:
        if self.sensitive:
            return "(content hidden: sensitive = true)"
        if self.data is None:
            return None
        return unified_diff(self.label, self.old, self.data)

    def execute(self, ctx: Context) -> str | None:
        uid = ctx.uid(self.user) if self.user is not None else self.keep_uid
        gid = ctx.gid(self.group) if self.group is not None else self.keep_gid
        data, sha256 = self.data, self.sha256
        if data is None:
            data = ctx.fs.read(self.path, self.guard)
            sha256 = sha256_hex(data)
        # Parents the policy does not manage are made plainly (0755), as a
        # fresh --root needs; managed ones converge first by edge.
        fd, tmp = ctx.fs.create_temp(self.path, self.guard)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if uid is not None or gid is not None:
                os.fchown(fd, -1 if uid is None else uid, -1 if gid is None else gid)
            os.fchmod(fd, self.mode)
            st = os.fstat(fd)
        except BaseException:
            os.close(fd)
            ctx.fs.unlink(tmp)
            raise
        os.close(fd)
        if self.validate is not None:
            from undistro.resources._validate_cmd import judge

            # The validator is another program: it gets the candidate's
            # kernel path, checked to still name the inode just written.
            judge(self.validate, ctx.path(tmp), st.st_ino, ctx.root, lambda: ctx.fs.unlink(tmp))
        ctx.stage_replace(tmp, self.path)
        ctx.record(ctx.path(self.path), Fingerprint.of(st, sha256))
        return None


def unified_diff(label: str, old: bytes | None, new: bytes) -> str:
    import difflib

    if old is None:
        return "(old content too large to show)"
    try:
        a, b = old.decode().splitlines(keepends=True), new.decode().splitlines(keepends=True)
    except UnicodeDecodeError:
        return f"(binary content: {len(old)} -> {len(new)} bytes)"
    lines = difflib.unified_diff(a, b, f"{label} (current)", f"{label} (policy)")
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )
