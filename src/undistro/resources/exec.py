"""``[[exec]]``: a command, guarded so that it runs only when needed.

Examples::

    [[exec]]
    name = "make-ca-bundle"
    command = ["update-ca-certificates"]
    creates = "/etc/ssl/certs/ca-certificates.crt"   # skip once this exists

    [[exec]]
    name = "reload-motd"
    command = "run-parts /etc/update-motd.d > /run/motd.dynamic"
    shell = true
    refreshonly = true       # run only when a resource notifies it

Guards: ``creates`` (a path: skip if it exists), ``unless`` (skip if this
command succeeds), ``onlyif`` (run only if this command succeeds). A command
given as a string is split like a shell would, but is run by a shell only
with ``shell = true``. Output (stdout and stderr, the last 64 KiB) goes to
the journal. Under ``--root`` commands run on the host with ``UNDISTRO_ROOT``
set, in the root as working directory unless ``cwd`` says otherwise.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from dataclasses import dataclass
from typing import Any, ClassVar

from undistro.errors import ApplyError, ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    Resource,
    abspath,
    boolean,
    integer,
    owner,
    string_table,
)

_OUTPUT_LIMIT = 64 * 1024


def _command(raw: Any) -> str | tuple[str, ...]:
    if isinstance(raw, str):
        if not raw.strip():
            raise ValueError("must not be empty")
        return raw
    if isinstance(raw, list) and raw and all(isinstance(a, str) for a in raw):
        return tuple(raw)
    raise ValueError("expected a command line string or a non-empty list of strings")


def _codes(raw: Any) -> tuple[int, ...]:
    items = raw if isinstance(raw, list) else [raw]
    return tuple(integer(0, 255)(i) for i in items)


@dataclass(slots=True)
class ExecState:
    needed: bool  # the guards say the command should run
    reason: str  # why (or why not), for the plan


class Exec(Resource):
    type_name = "exec"
    required = frozenset({"name", "command"})
    fields: ClassVar[dict[str, Converter]] = {
        "command": _command,
        "shell": boolean,
        "cwd": abspath,
        "environment": string_table,
        "user": owner,
        "group": owner,
        "timeout": integer(1, 86400),
        "creates": abspath,
        "unless": _command,
        "onlyif": _command,
        "refreshonly": boolean,
        "returns": _codes,
    }
    defaults: ClassVar[dict[str, Any]] = {
        "shell": False,
        "refreshonly": False,
        "timeout": 300,
        "returns": (0,),
    }
    reprobe_after = False
    concurrent = True

    def validate(self) -> None:
        for key in ("command", "unless", "onlyif"):
            cmd = self.values.get(key)
            if isinstance(cmd, str) and not self.values["shell"]:
                try:
                    shlex.split(cmd)
                except ValueError as exc:
                    raise ValidationError(key, f"cannot split command line: {exc}") from None

    def implicit_requires(self) -> tuple[str, ...]:
        out = []
        if isinstance(self.values.get("user"), str):
            out.append(f"user:{self.values['user']}")
        if isinstance(self.values.get("group"), str):
            out.append(f"group:{self.values['group']}")
        return tuple(out)

    def probe(self, ctx: Context) -> ExecState:
        v = self.values
        if "creates" in v and os.path.lexists(ctx.path(v["creates"])):
            return ExecState(False, f"{v['creates']} exists")
        if "unless" in v and self._run(ctx, v["unless"], check=False)[0] == 0:
            return ExecState(False, "'unless' command succeeded")
        if "onlyif" in v and self._run(ctx, v["onlyif"], check=False)[0] != 0:
            return ExecState(False, "'onlyif' command failed")
        return ExecState(True, "guards allow it")

    def plan(self, state: ExecState) -> list[Action]:
        if self.values["refreshonly"] or not state.needed:
            return []
        return [RunCommand(self)]

    def refresh(self, state: ExecState) -> list[Action]:
        if not state.needed or self.plan(state):
            return []  # guarded off, or already running as part of the plan
        return [RunCommand(self, refresh=True)]

    def describe(self, state: Any) -> str | None:
        return None

    def _run(self, ctx: Context, cmd: str | tuple[str, ...], *, check: bool) -> tuple[int, str]:
        v = self.values
        shell = bool(v["shell"])
        argv: str | list[str] = (
            cmd
            if shell and isinstance(cmd, str)
            else (shlex.split(cmd) if isinstance(cmd, str) else list(cmd))
        )
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "UNDISTRO_ROOT": ctx.root,
        }
        env.update(v.get("environment", {}))
        try:
            proc = subprocess.run(
                argv,
                shell=shell,
                cwd=ctx.path(v["cwd"]) if "cwd" in v else ctx.root,
                env=env,
                user=None if "user" not in v else ctx.uid(v["user"]),
                group=None if "group" not in v else ctx.gid(v["group"]),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=v["timeout"],
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise ApplyError(f"timed out after {v['timeout']} s") from None
        except FileNotFoundError as exc:
            raise ApplyError(f"command not found: {exc.filename}") from None
        except KeyError as exc:
            raise ApplyError(str(exc.args[0])) from None
        output = proc.stdout[-_OUTPUT_LIMIT:].decode(errors="replace")
        if check and proc.returncode not in v["returns"]:
            tail = output.strip().splitlines()[-1:] or [""]
            raise ApplyError(f"exited {proc.returncode}" + (f": {tail[0]}" if tail[0] else ""))
        return proc.returncode, output


class RunCommand(Action):
    def __init__(self, exec_: Exec, *, refresh: bool = False) -> None:
        self.exec = exec_
        cmd = exec_.values["command"]
        shown = cmd if isinstance(cmd, str) else shlex.join(cmd)
        self.summary = ("refresh: run " if refresh else "run ") + shown

    def execute(self, ctx: Context) -> str | None:
        return self.exec._run(ctx, self.exec.values["command"], check=True)[1]
