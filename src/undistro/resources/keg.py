"""``[[keg]]``: a package, built from a recipe, present in a profile.

Example::

    [[keg]]
    name = "lua"
    version = "5.4"                      # a constraint: 5.4.x, newest first
    variants = { }                       # recipe variants, else defaults
    recipes = "recipes"                  # in the policy directory (default)
    mirrors = ["sources"]                # directories (policy-relative) or URLs

    [[keg]]
    name = "pngcheck"                    # pulls zlib in as a run dependency

The promise: the keg the recipes resolve to (its exact hash-addressed store
path) is in the profile's current generation, in place of any other build of
the same package. ``ensure = "absent"`` takes the package out of the profile
(gc reclaims the store path later).

The kegs of one profile are one requested set, and a change of that set is
one new generation, never one per keg: at policy load (``bind``) each keg
learns its siblings, and the last of them in the engine's order — the one
that converges after everything any of them requires — carries the profile.
Its probe resolves every sibling's request (no build); its plan, pure, is
one ``Build`` of every missing keg of the set, then one ``Switch`` to a
generation with every sibling's package replaced. The other kegs only report
their own package. The build holds the store's gc lock (shared) until the
switch has made the new kegs live, and a failed build stops before the
switch: the running generation stays whole (no partial upgrades). All kegs
share one lock: the store and the profiles change one at a time.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from undistro.errors import ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
    PolicyInputs,
    Resource,
    Watch,
    abspath,
    boolean,
    nonempty,
    one_of,
    string,
    string_list,
)

DEFAULT_PROFILE = "/var/lib/undistro/profiles/default"
DEFAULT_RECIPES = "recipes"
DEFAULT_STORE = "/opt/undistro/store"
DEFAULT_CACHE = "/var/cache/undistro/sources"


def _variants(raw: Any) -> dict[str, bool | str]:
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, bool | str) for k, v in raw.items()
    ):
        raise ValueError("expected a table of variant = true/false or a string")
    return dict(raw)


def _recipes(raw: Any) -> str:
    """An absolute directory, or one relative to the policy directory (the
    recipes are part of the policy repository)."""
    value = nonempty(raw)
    if value.startswith("/"):
        return abspath(value)
    if ".." in value.split("/"):
        raise ValueError(f"must stay inside the policy directory, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class ProfileChange:
    """What the keg that carries a profile found for the whole requested set.
    Paths are final store paths (as the system sees them)."""

    current: tuple[str, ...]  # the current generation
    next: tuple[str, ...]  # the generation the set asks for
    replace: tuple[tuple[str, str | None], ...]  # package → wanted path (None: absent)
    to_build: tuple[str, ...]  # missing store paths, dependencies first
    builds: tuple[Any, ...] = ()  # (builder, resolution) of each request with a missing keg
    twin: int | None = None  # an existing generation of exactly ``next`` (after a rollback)


@dataclass(frozen=True, slots=True)
class KegState:
    """What probe found for this keg's package; ``profile`` only for the keg
    that carries its profile."""

    name: str
    want: str | None  # the store path the recipes resolve to (None: ensure absent)
    want_version: str
    same_name: tuple[str, ...]  # builds of this package in the current generation
    profile: ProfileChange | None = None


class Keg(Resource):
    type_name = "keg"
    required = frozenset({"name"})
    fields: ClassVar[dict[str, Converter]] = {
        "version": string,
        "variants": _variants,
        "ensure": one_of("present", "absent"),
        "profile": abspath,
        "recipes": _recipes,
        "store": abspath,
        "cache": abspath,
        "mirrors": string_list,
        "isolate": boolean,
        "package": nonempty,
    }
    defaults: ClassVar[dict[str, Any]] = {
        "version": "*",
        "variants": {},
        "ensure": "present",
        "profile": DEFAULT_PROFILE,
        "recipes": DEFAULT_RECIPES,
        "store": DEFAULT_STORE,
        "cache": DEFAULT_CACHE,
        "mirrors": (),
        "isolate": True,
    }
    lock: ClassVar[str | None] = "kegs"

    peers: tuple[Keg, ...] = ()
    """The kegs of this profile, in the engine's order (set by ``bind``)."""
    recipes_dir: str | None = None
    """``recipes`` made absolute against the policy directory (``prepare``)."""
    mirror_specs: tuple[str, ...] | None = None
    """``mirrors``, directories made absolute likewise."""

    @property
    def package(self) -> str:
        return str(self.values.get("package", self.name))

    @property
    def carries_profile(self) -> bool:
        """Whether this keg switches its profile for the whole set: the last
        one, so every sibling's requirements have converged before."""
        return not self.peers or self.peers[-1] is self

    def validate(self) -> None:
        from undistro.errors import KegError, UsageError
        from undistro.kegs import Store, parse_request

        try:
            parse_request(f"{self.package}@{self.values['version']}")
        except UsageError as exc:
            raise ValidationError("version", str(exc)) from None
        try:
            Store(self.values["store"])
        except KegError as exc:
            raise ValidationError("store", str(exc)) from None

    def prepare(self, inputs: PolicyInputs) -> None:
        # Relative directories are the policy's own (the agent's working
        # directory means nothing).
        recipes = self.values["recipes"]
        try:
            if not recipes.startswith("/"):
                recipes = inputs.policy_path(recipes)
        except ValueError as exc:
            raise ValidationError("recipes", str(exc)) from None
        if not os.path.isdir(recipes):
            raise ValidationError("recipes", f"no recipes directory at {recipes}")
        self.recipes_dir = recipes
        try:
            self.mirror_specs = tuple(
                m if "://" in m or m.startswith("/") else inputs.policy_path(m)
                for m in self.values["mirrors"]
            )
        except ValueError as exc:
            raise ValidationError("mirrors", str(exc)) from None

    def bind(self, managed: Mapping[str, str], resources: Mapping[str, Resource]) -> None:
        profile = self.values["profile"]
        peers = tuple(
            r for r in resources.values() if isinstance(r, Keg) and r.values["profile"] == profile
        )
        for other in peers[: peers.index(self)]:
            if other.package == self.package:
                field = "package" if "package" in self.values else "name"
                raise ValidationError(
                    field,
                    f"{self.package} is already requested for {profile} by {other.id}:"
                    " a profile holds one build of a package",
                )
        self.peers = peers

    # -- probe: resolve and hash, read the profile; builds nothing ---------------

    def probe(self, ctx: Context) -> KegState:
        from undistro.kegs import Store

        store = Store(self.values["store"], ctx.root)
        current = tuple(_final(ctx, p) for p in self._profile(ctx).current())
        same = tuple(p for p in current if _package_of(store, p) == self.package)
        mine = self._resolve(ctx)
        change = None
        if self.carries_profile:
            change = self._profile_change(ctx, store, current, mine)
        return KegState(self.package, mine[0], mine[1], same, change)

    def _resolve(self, ctx: Context) -> tuple[str | None, str, Any]:
        """This keg's wanted store path and version, with the builder's plan
        (``None`` when nothing is missing)."""
        if self.values["ensure"] == "absent":
            return None, "", None
        from undistro.kegs import (
            Builder,
            Platform,
            RecipeBook,
            SourceCache,
            Store,
            mirrors_from,
            parse_request,
            resolve,
        )

        platform = Platform.from_facts(ctx.facts, ctx.root)
        variants = [f"{k}={v}" for k, v in self.values["variants"].items()]
        request = parse_request(f"{self.package}@{self.values['version']}", variants)
        resolution = resolve([request], RecipeBook([self._recipes()]), platform)
        builder = Builder(
            Store(self.values["store"], ctx.root),
            SourceCache(ctx.path(self.values["cache"])),
            platform,
            mirrors=mirrors_from(
                self.values["mirrors"] if self.mirror_specs is None else self.mirror_specs
            ),
            isolate=self.values["isolate"],
        )
        planned = builder.plan(resolution)
        want = planned[self.package]
        missing = tuple(k.path for k in planned.values() if not k.present)
        return want.path, str(want.node.version), (missing, (builder, resolution))

    def _profile_change(
        self, ctx: Context, store: Any, current: tuple[str, ...], mine: tuple[str | None, str, Any]
    ) -> ProfileChange:
        replace: list[tuple[str, str | None]] = []
        to_build: dict[str, None] = {}
        builds = []
        for keg in self.peers or (self,):
            want, _, planned = mine if keg is self else keg._resolve(ctx)
            replace.append((keg.package, want))
            if planned is not None and planned[0]:
                to_build.update(dict.fromkeys(planned[0]))
                builds.append(planned[1])
        packages = {package for package, _ in replace}
        keep = tuple(p for p in current if _package_of(store, p) not in packages)
        wanted = keep + tuple(want for _, want in replace if want is not None)
        return ProfileChange(
            current=current,
            next=wanted,
            replace=tuple(replace),
            to_build=tuple(to_build),
            builds=tuple(builds),
            twin=self._profile(ctx).holding(wanted) if wanted else None,
        )

    # -- plan: pure ---------------------------------------------------------------

    def plan(self, state: KegState) -> list[Action]:
        change = state.profile
        if change is None or sorted(change.next) == sorted(change.current):
            return []
        hold = StoreHold(sorted({self.values["store"]} | {p.values["store"] for p in self.peers}))
        actions: list[Action] = []
        if change.to_build:
            actions.append(Build(change.to_build, change.builds, hold))
        actions.append(
            Switch(
                self._profile_dir(),
                dict(change.replace),
                self.values["store"],
                removed=sorted(set(change.current) - set(change.next)),
                added=sorted(set(change.next) - set(change.current)),
                hold=hold,
                twin=None if change.to_build else change.twin,
            )
        )
        return actions

    def describe(self, state: KegState) -> str | None:
        if not state.same_name:
            return f"{state.name}: not in the profile"
        return f"{state.name}: " + ", ".join(os.path.basename(p) for p in state.same_name)

    def watches(self) -> list[Watch]:
        # Someone switching or rolling back by hand moves `current`.
        return [Watch("path", f"{self.values['profile']}/current")]

    def _recipes(self) -> str:
        if self.recipes_dir is not None:
            return self.recipes_dir
        recipes = str(self.values["recipes"])
        if not recipes.startswith("/"):
            raise ValidationError("recipes", f"{recipes!r} is relative and no policy was loaded")
        return recipes

    def _profile_dir(self) -> str:
        return str(self.values["profile"])

    def _profile(self, ctx: Context) -> Any:
        from undistro.kegs.generations import Profile

        return Profile(ctx.path(self._profile_dir()), root=ctx.root)


class StoreHold:
    """The stores' gc locks, taken shared by ``Build`` and let go by the
    ``Switch`` after it: a keg just built is in no generation yet, and a
    collector running between the two would take it for garbage."""

    def __init__(self, stores: Sequence[str]) -> None:
        self.stores = tuple(stores)
        self._held: contextlib.ExitStack | None = None

    def take(self, ctx: Context) -> None:
        from undistro.kegs import store_lock

        if self._held is not None:
            return
        held = contextlib.ExitStack()
        try:
            for store in self.stores:
                held.enter_context(store_lock(ctx.path(store), exclusive=False))
        except BaseException:
            held.close()
            raise
        self._held = held

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None


class Build(Action):
    """Fetch sources and build every missing keg of a profile's requested
    set, dependencies first, before anything switches."""

    def __init__(self, paths: Sequence[str], builds: Sequence[Any], hold: StoreHold) -> None:
        self.paths = tuple(paths)
        self.builds = tuple(builds)
        self.hold = hold
        names = ", ".join(_label(p) for p in self.paths)
        self.summary = f"build {names}"

    def execute(self, ctx: Context) -> str | None:
        self.hold.take(ctx)
        lines = []
        try:
            for builder, resolution in self.builds:
                built = builder.build(resolution)
                lines += [f"built {k.path} in {k.seconds:.1f} s" for k in built.values() if k.built]
        except BaseException:
            self.hold.release()  # no switch follows a failed action
            raise
        return "\n".join(lines)


class Switch(Action):
    """One new generation for the whole requested set: the current one with
    every requested package's builds taken out and the wanted builds put in,
    made current in one rename.

    The kegs of packages no ``[[keg]]`` names (installed by hand) are read
    from the profile when the action runs, so they stay. Every wanted keg
    must be in the store, or nothing switches.
    """

    def __init__(
        self,
        profile: str,
        replace: Mapping[str, str | None],
        store: str,
        *,
        removed: Sequence[str] = (),
        added: Sequence[str] = (),
        hold: StoreHold | None = None,
        twin: int | None = None,
    ) -> None:
        self.profile = profile
        self.replace = dict(replace)
        self.store = store
        self.hold = hold
        changes = [f"-{os.path.basename(p)}" for p in removed]
        changes += [f"+{os.path.basename(p)}" for p in added]
        # The profile decides when the action runs (build_and_switch finds
        # the twin itself); this only says what the plan expects.
        target = "a new generation" if twin is None else f"generation {twin}, which has this set"
        self.summary = f"switch {profile} to {target}: {' '.join(changes)}"

    def execute(self, ctx: Context) -> str | None:
        from undistro.errors import KegError
        from undistro.kegs import Store
        from undistro.kegs.generations import Profile

        try:
            profile = Profile(ctx.path(self.profile), root=ctx.root)
            store = Store(self.store, ctx.root)
            wanted = [p for p in self.replace.values() if p is not None]
            missing = [p for p in wanted if not store.exists(p)]
            if missing:
                raise KegError(
                    f"{missing[0]} is not in the store; {self.profile} stays on its generation"
                )
            current = [_final(ctx, p) for p in profile.current()]
            kegs = [p for p in current if _package_of(store, p) not in self.replace]
            number = profile.build_and_switch([ctx.path(p) for p in kegs + wanted])
        finally:
            if self.hold is not None:
                self.hold.release()
        return f"generation {number} is current"


def _label(path: str) -> str:
    """``name-version`` of a store path (its base name without the hash)."""
    return os.path.basename(path).split("-", 1)[-1]


def _final(ctx: Context, on_disk: str) -> str:
    """A path on this disk (under the root) as the system will see it."""
    if ctx.root in ("", "/"):
        return on_disk
    rel = os.path.relpath(on_disk, ctx.root)
    return "/" + rel


def _package_of(store: Any, path: str) -> str | None:
    from undistro.errors import KegError

    try:
        name: str = store.meta(path).name
    except KegError:
        return None
    return name
