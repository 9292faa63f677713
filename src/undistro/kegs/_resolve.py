"""Choosing versions and variants for a requested set, with resolvelib.

resolvelib is the backtracking resolver pip uses; we give it our recipes as
the index. One version of each package is chosen per resolution (what the
kegs of one build or one generation link against must agree); several
versions still live side by side in the store across resolutions.

When nothing fits, the error tells the story in plain words: each
requirement that took part, with the chain of packages that led to it from
what was asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from packaging.specifiers import SpecifierSet
from packaging.version import Version
from resolvelib import AbstractProvider, BaseReporter, Resolver
from resolvelib.resolvers import ResolutionImpossible, ResolutionTooDeep
from resolvelib.structs import RequirementInformation

from undistro.errors import RecipeError, ResolutionError, UsageError
from undistro.kegs._platform import Platform
from undistro.kegs._recipe import (
    NAME_RE,
    Recipe,
    RecipeBook,
    VariantValue,
    parse_specifier,
    show_value,
)


@dataclass(frozen=True, slots=True)
class Requirement:
    name: str
    spec: SpecifierSet = field(default_factory=SpecifierSet)
    variants: tuple[tuple[str, VariantValue], ...] = ()

    def describe(self) -> str:
        text = self.name + (f" {self.spec}" if str(self.spec) else "")
        if self.variants:
            text += " with " + ", ".join(f"{k}={show_value(v)}" for k, v in self.variants)
        return text


@dataclass(frozen=True, slots=True)
class Candidate:
    name: str
    version: Version
    variants: tuple[tuple[str, VariantValue], ...]

    def describe(self) -> str:
        return f"{self.name} {self.version}"


@dataclass(frozen=True, slots=True)
class Resolved:
    """One chosen package: its recipe, version, variants and direct deps."""

    recipe: Recipe
    version: Version
    variants: Mapping[str, VariantValue]
    build_deps: tuple[str, ...]
    run_deps: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.recipe.name


@dataclass(frozen=True, slots=True)
class Resolution:
    nodes: Mapping[str, Resolved]
    roots: tuple[str, ...]

    def order(self) -> list[Resolved]:
        """Dependencies before dependents (a stable topological order);
        ResolutionError names a cycle, which no build order can satisfy."""
        done: dict[str, Resolved] = {}
        path: list[str] = []

        def visit(name: str) -> None:
            if name in done:
                return
            if name in path:
                cycle = " → ".join([*path[path.index(name) :], name])
                raise ResolutionError(f"dependency cycle: {cycle}")
            path.append(name)
            node = self.nodes[name]
            for dep in sorted({*node.build_deps, *node.run_deps}):
                visit(dep)
            path.pop()
            done[name] = node

        for name in sorted(self.nodes):
            visit(name)
        return list(done.values())


def parse_request(text: str, variants: Sequence[str] = ()) -> Requirement:
    """``lua``, ``lua@5.4``, ``zlib@>=1.2`` plus ``k=v`` variant strings."""
    name, _, spec_text = text.partition("@")
    if not NAME_RE.match(name):
        raise UsageError(f"not a package name: {name!r} (expected NAME or NAME@VERSION)")
    try:
        spec = parse_specifier(spec_text, "version")
    except ValueError as exc:
        raise UsageError(f"{text}: {getattr(exc, 'message', exc)}") from None
    chosen: dict[str, VariantValue] = {}
    for item in variants:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"variant {item!r}: expected NAME=VALUE")
        chosen[key] = value
    return Requirement(name, spec, tuple(sorted(chosen.items())))


def resolve(requests: Iterable[Requirement], book: RecipeBook, platform: Platform) -> Resolution:
    """Choose one version and variant set per needed package, or raise
    ResolutionError with the chains of requirements that collide."""
    requests = list(requests)
    provider = _Provider(book, platform)
    for req in requests:
        provider.required_by.setdefault(req.name, []).append((req, None))
    try:
        reporter: BaseReporter[Requirement, Candidate, str] = BaseReporter()
        result = Resolver(provider, reporter).resolve(requests, max_rounds=2000)
    except ResolutionImpossible as exc:
        raise ResolutionError(provider.explain(list(exc.causes))) from None
    except ResolutionTooDeep:
        raise ResolutionError("gave up: the requirements need too much backtracking") from None
    nodes: dict[str, Resolved] = {}
    for name, cand in result.mapping.items():
        recipe = book.get(name)
        variants = dict(cand.variants)
        deps = recipe.applicable(platform, variants)
        nodes[name] = Resolved(
            recipe=recipe,
            version=cand.version,
            variants=variants,
            build_deps=tuple(sorted({d.name for d in deps if d.kind == "build"})),
            run_deps=tuple(sorted({d.name for d in deps if d.kind == "run"})),
        )
    return Resolution(nodes, tuple(dict.fromkeys(r.name for r in requests)))


class _Provider(AbstractProvider[Requirement, Candidate, str]):
    """The resolvelib provider protocol, over a RecipeBook."""

    def __init__(self, book: RecipeBook, platform: Platform) -> None:
        self.book = book
        self.platform = platform
        self.required_by: dict[str, list[tuple[Requirement, Candidate | None]]] = {}

    def identify(self, requirement_or_candidate: Requirement | Candidate) -> str:
        return requirement_or_candidate.name

    def get_preference(
        self,
        identifier: str,
        resolutions: Mapping[str, Candidate],
        candidates: Mapping[str, Iterator[Candidate]],
        information: Mapping[str, Iterator[RequirementInformation[Requirement, Candidate]]],
        backtrack_causes: Sequence[RequirementInformation[Requirement, Candidate]],
    ) -> str:
        return identifier  # deterministic: by name

    def find_matches(
        self,
        identifier: str,
        requirements: Mapping[str, Iterator[Requirement]],
        incompatibilities: Mapping[str, Iterator[Candidate]],
    ) -> list[Candidate]:
        recipe = self.book.get(identifier)
        reqs = list(requirements[identifier])
        excluded = {c.version for c in incompatibilities[identifier]}
        variants = recipe.default_variants()
        asked: dict[str, VariantValue] = {}
        for req in reqs:
            for key, raw in req.variants:
                if key not in recipe.variants:
                    known = ", ".join(sorted(recipe.variants)) or "none"
                    raise ResolutionError(f"{identifier} has no variant '{key}' (known: {known})")
                try:
                    value = recipe.variants[key].convert(raw)
                except ValueError as exc:
                    raise ResolutionError(f"{identifier}: {exc}") from None
                if asked.setdefault(key, value) != value:
                    return []  # two requirements disagree: explained by explain()
        variants.update(asked)
        frozen = tuple(sorted(variants.items()))
        return [
            Candidate(identifier, v, frozen)
            for v in recipe.sorted_versions()
            if v not in excluded and all(r.spec.contains(v, prereleases=True) for r in reqs)
        ]

    def is_satisfied_by(self, requirement: Requirement, candidate: Candidate) -> bool:
        if not requirement.spec.contains(candidate.version, prereleases=True):
            return False
        chosen = dict(candidate.variants)
        recipe = self.book.get(candidate.name)
        for key, raw in requirement.variants:
            try:
                if key not in recipe.variants or chosen.get(key) != recipe.variants[key].convert(
                    raw
                ):
                    return False
            except ValueError:
                return False
        return True

    def get_dependencies(self, candidate: Candidate) -> list[Requirement]:
        recipe = self.book.get(candidate.name)
        out: list[Requirement] = []
        for dep in recipe.applicable(self.platform, dict(candidate.variants)):
            req = Requirement(dep.name, dep.spec, tuple(sorted(dep.variants.items())))
            try:
                self.book.get(dep.name)
            except RecipeError:
                raise ResolutionError(
                    f"{candidate.describe()} needs {dep.name}, and there is no recipe for it"
                ) from None
            entries = self.required_by.setdefault(dep.name, [])
            if (req, candidate) not in entries:
                entries.append((req, candidate))
            out.append(req)
        return out

    # -- the plain-words story -------------------------------------------------

    def explain(self, causes: Sequence[RequirementInformation[Requirement, Candidate]]) -> str:
        names = list(dict.fromkeys(c.requirement.name for c in causes))
        lines = [
            f"cannot choose a version of {' or '.join(names)} that satisfies every requirement:"
        ]
        for cause in causes:
            wanted = cause.requirement.describe()
            if cause.parent is None:
                lines.append(f"  you asked for {wanted}")
            else:
                lines.append(
                    "  " + " → ".join(self._chain(cause.parent, set())) + f" needs {wanted}"
                )
        for name in names:
            try:
                recipe = self.book.get(name)
            except RecipeError:
                continue
            versions = ", ".join(str(v) for v in recipe.sorted_versions())
            lines.append(f"  ({name} has versions: {versions})")
        return "\n".join(lines)

    def _chain(self, parent: Candidate, seen: set[str]) -> list[str]:
        """From what was asked for down to ``parent``: ["you asked for app",
        "app 1.0 needs lib", "lib 1.0"]."""
        if parent.name in seen:
            return [parent.describe()]
        seen.add(parent.name)
        for req, grand in self.required_by.get(parent.name, []):
            if self.is_satisfied_by(req, parent):
                if grand is None:
                    return [f"you asked for {req.describe()}", parent.describe()]
                head = self._chain(grand, seen)
                return [*head[:-1], f"{head[-1]} needs {req.describe()}", parent.describe()]
        return [parent.describe()]
