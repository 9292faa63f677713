"""The resource protocol: the only thing the engine knows about resources.

A resource is a small declarative promise. The engine calls, in order:

``validate()``      no I/O; raises :class:`ValidationError` naming the field
``prepare(inputs)`` at policy load: reads what lives beside the policy
``bind(managed, resources)``  at policy load: learns its neighbours
``probe(ctx)``      reads the current state into a small value
``plan(state)``     PURE: the actions that would make the promise true;
                    an empty list means the promise is *kept*
``refresh(state)``  PURE: what a ``notify`` from a repaired resource adds
``watches()``       the events that concern this resource (for the agent)

Resources are handed a :class:`Context` — the root they live under, the
fingerprints of what they manage, a way to write durably — and never see the
engine, the agent or the fleet.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from undistro.errors import ValidationError

if TYPE_CHECKING:
    from undistro._rootfs import RootFS
    from undistro.supervisor import ServiceSpec, ServiceStatus


class Fingerprint(NamedTuple):
    """What one ``lstat`` tells, plus the content hash that went with it.

    If a fresh ``lstat`` gives the same inode, size, mtime, mode and owner,
    the content is taken to be the one hashed before and is not read again.
    """

    ino: int
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    sha256: str

    @classmethod
    def of(cls, st: os.stat_result, sha256: str) -> Fingerprint:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode, st.st_uid, st.st_gid, sha256)

    def matches(self, st: os.stat_result) -> bool:
        return (
            self.ino == st.st_ino
            and self.size == st.st_size
            and self.mtime_ns == st.st_mtime_ns
            and self.mode == st.st_mode
            and self.uid == st.st_uid
            and self.gid == st.st_gid
        )


class Watch(NamedTuple):
    """An event source that concerns a resource.

    ``kind`` is ``"path"`` (``target`` is an absolute, rebased path; the agent
    watches its parent directory so that replace-by-rename is seen), ``"tree"``
    (a directory whose entries matter, e.g. with ``purge``), ``"service"`` or
    ``"keg"``.
    """

    kind: str
    target: str


class Context(Protocol):
    """What a resource may touch while probing and converging."""

    root: str
    """``/`` or the directory given with ``--root``."""

    facts: Mapping[str, Any]

    fs: RootFS
    """Every operation on a path under the root goes through this: it
    resolves paths as if the root were ``/`` and never leaves it."""

    def path(self, path: str) -> str:
        """Rebase an absolute policy path under the root (a key and a name to
        show, never a path to open: use ``fs``)."""
        ...

    def fingerprint(self, path: str) -> Fingerprint | None:
        """The fingerprint stored for ``path`` (rebased) at the last run."""
        ...

    def record(self, path: str, fp: Fingerprint | None) -> None:
        """Store (or forget, with ``None``) the fingerprint of ``path``."""
        ...

    def stage_replace(self, tmp: str, final: str) -> None:
        """Have ``tmp`` renamed over ``final`` (policy paths, one directory,
        renamed through ``fs``) once its data is durable.

        The engine syncs every staged file of a wave with one ``syncfs``,
        renames them, then syncs the directories: one wait, not one per file.
        """
        ...

    def uid(self, user: str | int) -> int:
        """Resolve a user name (under the root's ``/etc/passwd``) to a uid."""
        ...

    def gid(self, group: str | int) -> int:
        """Resolve a group name (under the root's ``/etc/group``) to a gid."""
        ...

    def accounts_changed(self) -> None:
        """Drop cached passwd/group lookups after editing them."""
        ...

    def services(self) -> ServiceControl:
        """The supervisor backends; ApplyError if this run has none (a run
        made without an event loop to host them)."""
        ...


class ServiceControl(Protocol):
    """Synchronous access to the supervisor backends, for ``[[service]]``.

    ``backend`` is ``"builtin"``, ``"s6"`` or ``"systemd"``. Calls block the
    engine's worker thread until the backend (on the main thread's loop)
    answers; ``start``/``restart`` return once the service is ready or
    failed, or raise ApplyError after ``timeout`` seconds.
    """

    def status(self, backend: str, spec: ServiceSpec) -> ServiceStatus | None:
        """Its status (adopting a service left running); None if unsupervised."""
        ...

    def applied(self, name: str) -> tuple[ServiceSpec, str] | None:
        """The spec it was last started with, and the backend."""
        ...

    def started_with(self, name: str) -> Mapping[str, str | None] | None:
        """SHA-256 of each of ``inputs`` (rebased paths) as the running process
        last read them (at its spawn or last reload); None if unknown."""
        ...

    def start(
        self, backend: str, spec: ServiceSpec, timeout: float, inputs: Iterable[str] = ()
    ) -> ServiceStatus: ...

    def restart(
        self, backend: str, spec: ServiceSpec, timeout: float, inputs: Iterable[str] = ()
    ) -> ServiceStatus: ...

    def stop(self, backend: str, name: str) -> ServiceStatus | None: ...

    def reload(self, backend: str, name: str) -> ServiceStatus: ...


class PolicyInputs(Protocol):
    """What the loader offers a resource while preparing it (no engine)."""

    def read_source(self, relpath: str) -> bytes:
        """Bytes of ``files/RELPATH`` in the policy; ValueError if missing."""
        ...

    def render_template(self, relpath: str, extra: Mapping[str, Any]) -> str:
        """``templates/RELPATH`` rendered with the facts and policy variables."""
        ...

    def policy_path(self, relpath: str) -> str:
        """The absolute path of ``RELPATH`` inside the policy directory (for
        inputs read at run time, like recipes); ValueError if it leaves it."""
        ...


class Action:
    """One step that changes the world. ``summary`` is what ``plan`` prints."""

    summary: str = ""

    def diff(self) -> str | None:
        """A unified diff for a person, computed only when shown."""
        return None

    def execute(self, ctx: Context) -> str | None:
        """Do it. Return captured output worth journalling, if any."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.summary}>"


Converter = Callable[[Any], Any]


class Resource:
    """Base of every resource type.

    Subclasses set ``type_name`` and ``fields`` (key → converter that returns
    the clean value or raises ``ValueError`` with a message for a person),
    and name the key that defaults the resource's name (``name_key``).
    """

    type_name: ClassVar[str] = ""
    name_key: ClassVar[str] = "name"
    fields: ClassVar[dict[str, Converter]] = {}
    required: ClassVar[frozenset[str]] = frozenset()
    defaults: ClassVar[dict[str, Any]] = {}

    # Slotted: an agent holds every resource of its policy for as long as it
    # runs (10,000 instance dicts cost ~3 MB). Types with many instances
    # (file, directory, symlink) keep slots all the way down.
    __slots__ = ("before", "id", "name", "notify", "requires", "source", "values")

    def __init__(self, values: dict[str, Any], *, name: str, source: str = "") -> None:
        self.values = values
        self.name = name
        self.id = f"{self.type_name}:{name}"
        self.source = source
        self.requires: tuple[str, ...] = tuple(values.get("requires", ()))
        self.before: tuple[str, ...] = tuple(values.get("before", ()))
        self.notify: tuple[str, ...] = tuple(values.get("notify", ()))

    # -- construction -------------------------------------------------------

    @classmethod
    def from_table(cls, table: Mapping[str, Any], *, source: str = "") -> Resource:
        """Build and validate a resource from one TOML table."""
        if not isinstance(table, Mapping):
            raise ValidationError("(table)", f"expected a table, got {type(table).__name__}")
        known = {**cls.fields, **_COMMON_FIELDS}
        values: dict[str, Any] = dict(cls.defaults)
        for key, raw in table.items():
            convert = known.get(key)
            if convert is None:
                raise ValidationError(str(key), f"unknown key (known: {', '.join(sorted(known))})")
            try:
                values[key] = convert(raw)
            except ValueError as exc:
                raise ValidationError(key, str(exc)) from None
        missing = sorted(k for k in cls.required if k not in values)
        if missing and not (missing == [cls.name_key] and "name" in values):
            raise ValidationError(missing[0], "is required")
        name = values.get("name", values.get(cls.name_key))
        if not isinstance(name, str) or not name:
            raise ValidationError(cls.name_key, "is required")
        resource = cls(values, name=name, source=source)
        resource.validate()
        return resource

    # -- the protocol -------------------------------------------------------

    def validate(self) -> None:
        """Cross-field checks, no I/O. Raise ValidationError naming the field."""

    def probe(self, ctx: Context) -> Any:
        raise NotImplementedError

    def plan(self, state: Any) -> list[Action]:
        raise NotImplementedError

    def refresh(self, state: Any) -> list[Action]:
        """Actions run, after ``plan``'s, when a resource that notifies this
        one was repaired (an exec runs, a service restarts). Pure."""
        return []

    def prepare(self, inputs: PolicyInputs) -> None:
        """Load what lives beside the policy (sources, templates) once, at
        policy load. Raise ValidationError naming the field."""

    def bind(self, managed: Mapping[str, str], resources: Mapping[str, Resource]) -> None:
        """Learn the rest of the compiled policy, for resources whose promise
        depends on their neighbours: every managed path (path → resource id,
        for ``purge``) and every resource, by id in the engine's order (so
        that kegs of one profile can agree which of them switches it).
        Raise ValidationError naming the field if the neighbours conflict."""

    def describe(self, state: Any) -> str | None:
        """A short line for the journal's before/after columns."""
        return None

    def watches(self) -> list[Watch]:
        return []

    def managed_paths(self) -> tuple[str, ...]:
        """Absolute (policy, not rebased) paths this resource owns."""
        return ()

    def implicit_requires(self) -> tuple[str, ...]:
        """Ids this resource depends on if the policy declares them
        (the owner's ``user:``, the parent ``directory:``...)."""
        return ()

    lock: ClassVar[str | None] = None
    """Resources sharing a lock name never converge concurrently."""

    concurrent: ClassVar[bool] = False
    """Execute in a worker thread beside other such resources. Worth it only
    for actions that wait (commands, builds, downloads): file-system work is
    faster inline than handed between threads."""

    reprobe_after: ClassVar[bool] = True
    """Probe again after a repair to journal the new state (not for execs,
    whose guards may be expensive commands)."""

    def __repr__(self) -> str:
        return f"<{self.id}>"


# -- converters shared by the resource modules -------------------------------


def string(raw: Any) -> str:
    if not isinstance(raw, str):
        raise ValueError(f"expected a string, got {_kind(raw)}")
    if "\x00" in raw:
        raise ValueError("must not contain NUL bytes")
    return raw


def nonempty(raw: Any) -> str:
    value = string(raw)
    if not value:
        raise ValueError("must not be empty")
    return value


def boolean(raw: Any) -> bool:
    if not isinstance(raw, bool):
        raise ValueError(f"expected true or false, got {_kind(raw)}")
    return raw


def abspath(raw: Any) -> str:
    value = string(raw)
    if not value.startswith("/"):
        raise ValueError(f"must be an absolute path, got {value!r}")
    norm = os.path.normpath(value)
    if norm.startswith("//"):
        norm = "/" + norm.lstrip("/")
    if norm != value.rstrip("/") and value != "/":
        raise ValueError(f"must be a normalised path (no '..', '.', '//'), got {value!r}")
    if norm == "/":
        raise ValueError("must not be the root directory")
    return norm


def mode(raw: Any) -> int:
    """Modes are octal strings ('0644', '755'); a bare int is refused because
    TOML would read 0644 as decimal 644 without complaint."""
    if not isinstance(raw, str):
        raise ValueError(f"expected an octal string like '0644', got {_kind(raw)}")
    text = raw[2:] if raw.startswith("0o") else raw
    if not 3 <= len(text) <= 4 or any(c not in "01234567" for c in text):
        raise ValueError(f"expected an octal string like '0644', got {raw!r}")
    return int(text, 8)


def owner(raw: Any) -> str | int:
    """A user or group: a name or a non-negative integer id."""
    if isinstance(raw, bool):
        raise ValueError("expected a name or a numeric id, got a boolean")
    if isinstance(raw, int):
        if not 0 <= raw < 2**32 - 1:
            raise ValueError(f"id out of range: {raw}")
        return raw
    value = nonempty(raw)
    if not _NAME_OK(value):
        raise ValueError(f"not a valid user/group name: {value!r}")
    return value


def integer(lo: int, hi: int) -> Converter:
    def convert(raw: Any) -> int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ValueError(f"expected an integer, got {_kind(raw)}")
        if not lo <= raw <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {raw}")
        return raw

    return convert


def one_of(*choices: str) -> Converter:
    def convert(raw: Any) -> str:
        if raw not in choices:
            raise ValueError(f"expected one of {', '.join(map(repr, choices))}, got {raw!r}")
        return str(raw)

    return convert


def string_list(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list):
        raise ValueError(f"expected a list of strings, got {_kind(raw)}")
    return tuple(nonempty(item) for item in raw)


def string_table(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        raise ValueError(f"expected a table of strings, got {_kind(raw)}")
    return {nonempty(k): string(v) for k, v in raw.items()}


def resource_ids(raw: Any) -> tuple[str, ...]:
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise ValueError(f"expected a list of resource ids, got {_kind(raw)}")
    out = []
    for item in items:
        value = nonempty(item)
        kind, sep, name = value.partition(":")
        if not sep or not kind or not name:
            raise ValueError(f"expected an id like 'file:/etc/motd', got {value!r}")
        out.append(value)
    return tuple(out)


def _NAME_OK(name: str) -> bool:
    return (
        len(name) <= 32
        and name[0] not in "-+~"
        and all(c.isalnum() or c in "._-$" for c in name)
        and not name.isdigit()
    )


def _kind(raw: Any) -> str:
    return {
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        list: "a list",
        dict: "a table",
    }.get(type(raw), type(raw).__name__)


_COMMON_FIELDS: dict[str, Converter] = {
    "name": nonempty,
    "requires": resource_ids,
    "before": resource_ids,
    "notify": resource_ids,
}
