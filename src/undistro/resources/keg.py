"""``[[keg]]``: a package, built from a recipe, present in a profile.

Example::

    [[keg]]
    name = "lua"
    version = "5.4"                      # a constraint: 5.4.x, newest first
    variants = { }                       # recipe variants, else defaults
    recipes = "/srv/policy/recipes"      # absolute: recipes are policy inputs

    [[keg]]
    name = "pngcheck"                    # pulls zlib in as a run dependency

The promise: the keg the recipes resolve to (its exact hash-addressed store
path) is in the profile's current generation, in place of any other build of
the same package. Probe resolves and hashes (no build); plan is pure: build
what is missing, then one switch to a generation made of the current one with
this package's entry replaced. The switch happens only after the build has
finished, so a failed build leaves the running generation untouched.
``ensure = "absent"`` takes the package out of the profile (gc reclaims the
store path later). Keg resources share one lock: the store and the profile
change one at a time.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from undistro.errors import ValidationError
from undistro.resources._base import (
    Action,
    Context,
    Converter,
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
DEFAULT_RECIPES = "/etc/undistro/recipes"
DEFAULT_STORE = "/opt/undistro/store"
DEFAULT_CACHE = "/var/cache/undistro/sources"


def _variants(raw: Any) -> dict[str, bool | str]:
    if not isinstance(raw, Mapping) or not all(
        isinstance(k, str) and isinstance(v, bool | str) for k, v in raw.items()
    ):
        raise ValueError("expected a table of variant = true/false or a string")
    return dict(raw)


@dataclass(frozen=True, slots=True)
class KegState:
    """What probe found. Paths are final store paths (as the system sees them)."""

    name: str
    want: str | None  # the store path the recipes resolve to (None: ensure absent)
    want_version: str
    built: bool  # want is in the store
    to_build: tuple[str, ...]  # store paths of missing kegs, dependencies first
    same_name: tuple[str, ...]  # builds of this package in the current generation
    plan: Any = None  # the builder's plan, handed to the build action


class Keg(Resource):
    type_name = "keg"
    required = frozenset({"name"})
    fields: ClassVar[dict[str, Converter]] = {
        "version": string,
        "variants": _variants,
        "ensure": one_of("present", "absent"),
        "profile": abspath,
        "recipes": abspath,
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

    @property
    def package(self) -> str:
        return str(self.values.get("package", self.name))

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

    # -- probe: resolve and hash, read the profile; builds nothing ---------------

    def probe(self, ctx: Context) -> KegState:
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

        store = Store(self.values["store"], ctx.root)
        current = tuple(_final(ctx, p) for p in self._profile(ctx).current())
        same = tuple(p for p in current if _package_of(store, p) == self.package)
        if self.values["ensure"] == "absent":
            return KegState(self.package, None, "", False, (), same)
        platform = Platform.from_facts(ctx.facts, ctx.root)
        variants = [f"{k}={v}" for k, v in self.values["variants"].items()]
        request = parse_request(f"{self.package}@{self.values['version']}", variants)
        resolution = resolve([request], RecipeBook([self.values["recipes"]]), platform)
        builder = Builder(
            store,
            SourceCache(ctx.path(self.values["cache"])),
            platform,
            mirrors=mirrors_from(self.values["mirrors"]),
            isolate=self.values["isolate"],
        )
        planned = builder.plan(resolution)
        want = planned[self.package]
        return KegState(
            name=self.package,
            want=want.path,
            want_version=str(want.node.version),
            built=want.present,
            to_build=tuple(k.path for k in planned.values() if not k.present),
            same_name=same,
            plan=(builder, resolution),
        )

    # -- plan: pure ---------------------------------------------------------------

    def plan(self, state: KegState) -> list[Action]:
        if state.want is None:
            if not state.same_name:
                return []
            return [self._switch(state, None)]
        if state.same_name == (state.want,):
            return []
        actions: list[Action] = []
        if state.to_build:
            actions.append(Build(state.name, state.want_version, state.to_build, state.plan))
        actions.append(self._switch(state, state.want))
        return actions

    def _switch(self, state: KegState, add: str | None) -> Switch:
        return Switch(
            self._profile_dir(),
            self.package,
            add,
            self.values["store"],
            removed=state.same_name,
        )

    def describe(self, state: KegState) -> str | None:
        if not state.same_name:
            return f"{state.name}: not in the profile"
        return f"{state.name}: " + ", ".join(os.path.basename(p) for p in state.same_name)

    def watches(self) -> list[Watch]:
        # Someone switching or rolling back by hand moves `current`.
        return [Watch("path", f"{self.values['profile']}/current")]

    def _profile_dir(self) -> str:
        return str(self.values["profile"])

    def _profile(self, ctx: Context) -> Any:
        from undistro.kegs.generations import Profile  # type: ignore[import-not-found,unused-ignore]

        return Profile(ctx.path(self._profile_dir()), root=ctx.root)


class Build(Action):
    """Resolve-time plan in hand: fetch sources, build the missing kegs."""

    def __init__(self, name: str, version: str, paths: Sequence[str], plan: Any) -> None:
        self.paths = tuple(paths)
        self.plan = plan
        extra = f" (+{len(paths) - 1} dependencies)" if len(paths) > 1 else ""
        self.summary = f"build {name} {version}{extra}"

    def execute(self, ctx: Context) -> str | None:
        builder, resolution = self.plan
        built = builder.build(resolution)
        return "\n".join(f"built {k.path} in {k.seconds:.1f} s" for k in built.values() if k.built)


class Switch(Action):
    """Replace one package's entry in the profile: a new generation of the
    current one with every build of ``package`` taken out and ``add`` (if
    any) put in, made current in one rename.

    The set is read from the profile when the action runs, not when it was
    planned: several ``[[keg]]`` resources repaired in one run each build on
    the generation the previous one made, so none drops another's keg.
    """

    def __init__(
        self,
        profile: str,
        package: str,
        add: str | None,
        store: str,
        *,
        removed: Sequence[str] = (),
    ) -> None:
        self.profile = profile
        self.package = package
        self.add = add
        self.store = store
        changes = [f"-{os.path.basename(p)}" for p in removed]
        changes += [f"+{os.path.basename(add)}"] if add else []
        self.summary = f"switch {profile} to a new generation: {' '.join(changes)}"

    def execute(self, ctx: Context) -> str | None:
        from undistro.kegs import Store
        from undistro.kegs.generations import Profile  # type: ignore[import-not-found,unused-ignore]

        profile = Profile(ctx.path(self.profile), root=ctx.root)
        store = Store(self.store, ctx.root)
        current = [_final(ctx, p) for p in profile.current()]
        kegs = [p for p in current if _package_of(store, p) != self.package]
        if self.add is not None:
            kegs.append(self.add)
        number = profile.build_and_switch([ctx.path(p) for p in kegs])
        return f"generation {number} is current"


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
