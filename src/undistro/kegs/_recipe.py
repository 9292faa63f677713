"""Recipes: one TOML file per package, read and validated all at once.

A recipe says where the source is (with its SHA-256), which variants exist,
what it needs to build and to run (each with a version constraint and an
optional ``when`` on platform facts and variants) and how to build it, as a
template for a common build system or as explicit commands. Everything is
checked when the file is read, so a bad recipe fails with one line naming the
file and the field, before anything is fetched or built. See docs/kegs.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

from undistro.errors import RecipeError
from undistro.kegs._platform import Platform

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9+._-]*$")
SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
# Values substituted into shell commands must never need quoting.
SAFE_VALUE_RE = re.compile(r"^[A-Za-z0-9._+=/,:@%-]*$")
PLACEHOLDER_RE = re.compile(r"\{([a-z_][a-z0-9_.+-]*)\}")
SYSTEMS = ("autotools", "cmake", "meson", "make", "commands")
VariantValue = bool | str


@dataclass(frozen=True, slots=True)
class When:
    """All given facts must match; a list means any of its values."""

    facts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    variants: Mapping[str, VariantValue] = field(default_factory=dict)

    def holds(self, platform: Platform, variants: Mapping[str, VariantValue]) -> bool:
        known = platform.as_dict()
        if any(known.get(fact) not in allowed for fact, allowed in self.facts.items()):
            return False
        return all(variants.get(k) == v for k, v in self.variants.items())

    def possible(self, platform: Platform) -> bool:
        """Whether this can hold on ``platform`` for some choice of variants."""
        known = platform.as_dict()
        return all(known.get(fact) in allowed for fact, allowed in self.facts.items())

    def describe(self) -> str:
        parts = [f"{k} in {'/'.join(v)}" for k, v in self.facts.items()]
        parts += [f"variant {k}={show_value(v)}" for k, v in self.variants.items()]
        return " and ".join(parts)


ALWAYS = When()


@dataclass(frozen=True, slots=True)
class Dependency:
    name: str
    spec: SpecifierSet
    kind: str  # "build" (only while building) or "run" (also at run time)
    when: When = ALWAYS
    variants: Mapping[str, VariantValue] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    default: VariantValue
    values: tuple[str, ...] = ()  # the allowed strings; empty for a boolean
    description: str = ""

    def convert(self, raw: str | VariantValue) -> VariantValue:
        """Check a requested value (``"true"`` from a command line is a bool)."""
        if isinstance(self.default, bool):
            if isinstance(raw, bool):
                return raw
            text = str(raw).lower()
            if text in ("true", "yes", "on", "1"):
                return True
            if text in ("false", "no", "off", "0"):
                return False
            raise ValueError(f"variant '{self.name}' is true or false, got {raw!r}")
        if isinstance(raw, bool) or raw not in self.values:
            raise ValueError(
                f"variant '{self.name}' is one of {', '.join(self.values)}, got {show_value(raw)}"
            )
        return raw


@dataclass(frozen=True, slots=True)
class Source:
    urls: tuple[str, ...]
    sha256: str

    @property
    def filename(self) -> str:
        return self.urls[0].rstrip("/").rsplit("/", 1)[-1]


@dataclass(frozen=True, slots=True)
class Step:
    """One argument or command, kept only when its condition holds."""

    text: str
    when: When = ALWAYS


@dataclass(frozen=True, slots=True)
class BuildSpec:
    system: str
    configure_args: tuple[Step, ...] = ()
    make_args: tuple[Step, ...] = ()
    install_args: tuple[Step, ...] = ()
    commands: tuple[Step, ...] = ()
    post_install: tuple[Step, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    subdir: str = ""


@dataclass(frozen=True, slots=True)
class Recipe:
    name: str
    description: str
    license: str
    homepage: str
    versions: Mapping[str, Source]  # canonical version string -> source
    variants: Mapping[str, Variant]
    dependencies: tuple[Dependency, ...]
    build: BuildSpec
    path: str
    data: Mapping[str, Any]  # the parsed TOML, for hashing

    def sorted_versions(self) -> list[Version]:
        """Newest first: the resolver prefers the newest version that fits."""
        return sorted((Version(v) for v in self.versions), reverse=True)

    def source(self, version: Version | str) -> Source:
        return self.versions[str(version)]

    def default_variants(self) -> dict[str, VariantValue]:
        return {name: v.default for name, v in self.variants.items()}

    def applicable(
        self, platform: Platform, variants: Mapping[str, VariantValue]
    ) -> list[Dependency]:
        """The dependencies whose ``when`` holds here: what a Debian machine
        never needs is never resolved, fetched or built on one."""
        return [d for d in self.dependencies if d.when.holds(platform, variants)]

    def recipe_hash(self, version: Version | str) -> str:
        """SHA-256 of what defines the build of ``version``: the source, the
        variants, dependencies and build steps — not the description, and not
        the other versions, so adding a version rebuilds nothing."""
        data = {k: v for k, v in self.data.items() if k not in _METADATA}
        data["versions"] = {str(version): self.data["versions"][_raw_key(self, version)]}
        blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


_METADATA = ("description", "license", "homepage")


def _raw_key(recipe: Recipe, version: Version | str) -> str:
    wanted = Version(str(version))
    for key in recipe.data["versions"]:
        if Version(key) == wanted:
            return str(key)
    raise KeyError(str(version))


# -- loading -----------------------------------------------------------------


def load_recipe(path: str) -> Recipe:
    """Read and validate one recipe file; RecipeError names file and field."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"{path}: not valid TOML: {exc}") from None
    try:
        return _parse(data, path)
    except _FieldError as exc:
        raise RecipeError(f"{path}: {exc.field}: {exc.message}") from None


class RecipeBook:
    """Every recipe of a directory, by name. Loads lazily, validates fully."""

    def __init__(self, directories: Iterable[str]) -> None:
        self.directories = tuple(directories)
        self._cache: dict[str, Recipe] = {}

    def names(self) -> list[str]:
        found: set[str] = set()
        for directory in self.directories:
            try:
                entries = os.listdir(directory)
            except OSError as exc:
                raise RecipeError(f"{directory}: cannot list recipes: {exc.strerror}") from None
            found.update(e[:-5] for e in entries if e.endswith(".toml") and not e.startswith("."))
        return sorted(found)

    def get(self, name: str) -> Recipe:
        if name in self._cache:
            return self._cache[name]
        for directory in self.directories:
            path = os.path.join(directory, f"{name}.toml")
            if os.path.exists(path):
                recipe = self._cache[name] = load_recipe(path)
                return recipe
        raise RecipeError(f"no recipe named '{name}' in {', '.join(self.directories)}")

    def check_all(self, platform: Platform | None = None) -> tuple[list[Recipe], list[str]]:
        """Load every recipe; return the good ones and one line per bad one.

        A dependency needs a recipe only where its ``when`` can hold: on
        ``platform`` (this machine's, if given) for some variant choice. A
        Red Hat-only dependency is no problem on a Debian machine, which
        never resolves it; without ``platform`` every dependency needs one."""
        good: list[Recipe] = []
        problems: list[str] = []
        for name in self.names():
            try:
                good.append(self.get(name))
            except RecipeError as exc:
                problems.append(str(exc))
        available = set(self.names())
        for recipe in good:
            for dep in recipe.dependencies:
                if platform is not None and not dep.when.possible(platform):
                    continue
                if dep.name not in available:
                    problems.append(
                        f"{recipe.path}: dependencies.{dep.kind}.{dep.name}: "
                        f"no recipe named '{dep.name}'"
                    )
        return good, problems


# -- parsing -----------------------------------------------------------------


class _FieldError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


_TOP = {
    "name",
    "description",
    "license",
    "homepage",
    "versions",
    "variants",
    "dependencies",
    "build",
}


def _parse(data: Mapping[str, Any], path: str) -> Recipe:
    _known_keys(data, _TOP, "")
    name = _string(data, "name", "name", required=True)
    if not NAME_RE.match(name):
        raise _FieldError("name", f"lower-case letters, digits and + . _ - only, got {name!r}")
    stem = os.path.basename(path)[:-5] if path.endswith(".toml") else None
    if stem is not None and stem != name:
        raise _FieldError("name", f"is {name!r} but the file is named {stem}.toml")
    variants = _variants(data.get("variants", {}))
    deps = _dependencies(data.get("dependencies", {}), variants)
    build = _build(data.get("build"), variants)
    recipe = Recipe(
        name=name,
        description=_string(data, "description", "description"),
        license=_string(data, "license", "license"),
        homepage=_string(data, "homepage", "homepage"),
        versions=_versions(data.get("versions")),
        variants=variants,
        dependencies=deps,
        build=build,
        path=path,
        data=data,
    )
    _check_placeholders(recipe)
    return recipe


def _versions(raw: Any) -> dict[str, Source]:
    if not isinstance(raw, Mapping) or not raw:
        raise _FieldError("versions", 'needs at least one [versions."X.Y"] table')
    out: dict[str, Source] = {}
    for key, table in raw.items():
        where = f'versions."{key}"'
        try:
            version = Version(key)
        except InvalidVersion:
            raise _FieldError(where, "is not a version (like 1.2.13 or 5.4)") from None
        if not isinstance(table, Mapping):
            raise _FieldError(where, "must be a table with url and sha256")
        _known_keys(table, {"url", "urls", "sha256"}, where)
        urls: list[str] = []
        if "url" in table:
            urls.append(_string(table, "url", f"{where}.url", required=True))
        if "urls" in table:
            urls.extend(_string_list(table["urls"], f"{where}.urls"))
        if not urls:
            raise _FieldError(f"{where}.url", "is required")
        for url in urls:
            if url.rstrip("/").rsplit("/", 1)[-1] in ("", ".", ".."):
                raise _FieldError(f"{where}.url", f"does not end in a file name: {url!r}")
        sha = _string(table, "sha256", f"{where}.sha256", required=True).lower()
        if not SHA256_RE.match(sha):
            raise _FieldError(f"{where}.sha256", "must be 64 hexadecimal digits")
        if str(version) in out:
            raise _FieldError(where, f"is the same version as {version} listed before")
        out[str(version)] = Source(tuple(urls), sha)
    return out


def _variants(raw: Any) -> dict[str, Variant]:
    if not isinstance(raw, Mapping):
        raise _FieldError("variants", "must be a table")
    out: dict[str, Variant] = {}
    for name, spec in raw.items():
        where = f"variants.{name}"
        if not NAME_RE.match(name):
            raise _FieldError(where, "variant names are lower-case letters, digits, _ -")
        if isinstance(spec, bool):
            out[name] = Variant(name, spec)
            continue
        if not isinstance(spec, Mapping):
            raise _FieldError(where, "is a boolean default or a table {default, values}")
        _known_keys(spec, {"default", "values", "description"}, where)
        default = spec.get("default")
        description = _string(spec, "description", f"{where}.description")
        if isinstance(default, bool):
            if "values" in spec:
                raise _FieldError(f"{where}.values", "a boolean variant takes no values")
            out[name] = Variant(name, default, (), description)
            continue
        values = tuple(_string_list(spec.get("values"), f"{where}.values"))
        if not values:
            raise _FieldError(f"{where}.values", "a string variant lists its allowed values")
        for value in values:
            if not SAFE_VALUE_RE.match(value):
                raise _FieldError(f"{where}.values", f"{value!r} has characters a shell would see")
        if not isinstance(default, str) or default not in values:
            raise _FieldError(f"{where}.default", f"must be true/false or one of {list(values)}")
        out[name] = Variant(name, default, values, description)
    return out


def _when(raw: Any, where: str, variants: Mapping[str, Variant]) -> When:
    if not isinstance(raw, Mapping):
        raise _FieldError(where, "must be a table like { os_family = 'debian' }")
    _known_keys(raw, {"os", "os_family", "arch", "variants"}, where)
    facts: dict[str, tuple[str, ...]] = {}
    for fact in ("os", "os_family", "arch"):
        if fact in raw:
            value = raw[fact]
            values = [value] if isinstance(value, str) else value
            facts[fact] = tuple(_string_list(values, f"{where}.{fact}"))
    wanted: dict[str, VariantValue] = {}
    if "variants" in raw:
        wanted = _variant_values(raw["variants"], f"{where}.variants", variants)
    return When(facts, wanted)


def _variant_values(raw: Any, where: str, variants: Mapping[str, Variant]) -> dict[str, Any]:
    if not isinstance(raw, Mapping):
        raise _FieldError(where, "must be a table of variant = value")
    out: dict[str, VariantValue] = {}
    for key, value in raw.items():
        if key not in variants:
            raise _FieldError(f"{where}.{key}", f"no such variant (known: {_names(variants)})")
        try:
            out[key] = variants[key].convert(value)
        except ValueError as exc:
            raise _FieldError(f"{where}.{key}", str(exc)) from None
    return out


def _dependencies(raw: Any, variants: Mapping[str, Variant]) -> tuple[Dependency, ...]:
    if not isinstance(raw, Mapping):
        raise _FieldError("dependencies", "must be a table with build and run tables")
    _known_keys(raw, {"build", "run"}, "dependencies")
    out: list[Dependency] = []
    for kind in ("build", "run"):
        table = raw.get(kind, {})
        if not isinstance(table, Mapping):
            raise _FieldError(f"dependencies.{kind}", 'must be a table like { zlib = ">=1.2" }')
        for name, spec in table.items():
            where = f"dependencies.{kind}.{name}"
            if not NAME_RE.match(name):
                raise _FieldError(where, "is not a package name")
            if isinstance(spec, str):
                spec = {"version": spec}
            if not isinstance(spec, Mapping):
                raise _FieldError(where, "is a version constraint or a table {version, when}")
            _known_keys(spec, {"version", "when", "variants"}, where)
            when = _when(spec["when"], f"{where}.when", variants) if "when" in spec else ALWAYS
            dep_variants = spec.get("variants", {})
            if not isinstance(dep_variants, Mapping) or not all(
                isinstance(v, bool | str) for v in dep_variants.values()
            ):
                raise _FieldError(f"{where}.variants", "must be a table of variant = value")
            specifier = parse_specifier(
                _string(spec, "version", f"{where}.version") or "*", f"{where}.version"
            )
            out.append(Dependency(name, specifier, kind, when, dict(dep_variants)))
    return tuple(out)


def parse_specifier(text: str, where: str = "version") -> SpecifierSet:
    """``*`` or empty: any; ``5.4``: that series (``==5.4.*``); else PEP 440."""
    text = text.strip()
    if text in ("", "*"):
        return SpecifierSet()
    if text[0].isdigit():
        text = f"=={text}" if text.count(".") >= 2 or text.endswith("*") else f"=={text}.*"
    try:
        return SpecifierSet(text)
    except InvalidSpecifier:
        raise _FieldError(where, f"is not a version constraint (like >=1.2,<2): {text!r}") from None


def _build(raw: Any, variants: Mapping[str, Variant]) -> BuildSpec:
    if not isinstance(raw, Mapping):
        raise _FieldError("build", "is required: a table with system = " + " | ".join(SYSTEMS))
    lists = ("configure_args", "make_args", "install_args", "commands", "post_install")
    _known_keys(raw, {"system", "env", "subdir", *lists}, "build")
    system = _string(raw, "system", "build.system", required=True)
    if system not in SYSTEMS:
        raise _FieldError("build.system", f"must be one of {', '.join(SYSTEMS)}, got {system!r}")
    steps = {key: _steps(raw.get(key, []), f"build.{key}", variants) for key in lists}
    if system == "commands" and not steps["commands"]:
        raise _FieldError("build.commands", 'system = "commands" needs a list of commands')
    if system != "commands" and steps["commands"]:
        raise _FieldError("build.commands", f'only for system = "commands" (this is {system})')
    env = raw.get("env", {})
    if not isinstance(env, Mapping) or not all(isinstance(v, str) for v in env.values()):
        raise _FieldError("build.env", "must be a table of strings")
    subdir = _string(raw, "subdir", "build.subdir")
    if subdir.startswith("/") or ".." in subdir.split("/"):
        raise _FieldError("build.subdir", "must be a relative path inside the source")
    return BuildSpec(system=system, env=dict(env), subdir=subdir, **steps)


def _steps(raw: Any, where: str, variants: Mapping[str, Variant]) -> tuple[Step, ...]:
    if not isinstance(raw, list):
        raise _FieldError(where, "must be a list")
    out: list[Step] = []
    for i, item in enumerate(raw):
        here = f"{where}[{i}]"
        if isinstance(item, str):
            out.append(Step(item))
            continue
        if not isinstance(item, Mapping) or not isinstance(item.get("run"), str):
            raise _FieldError(here, "is a string or a table { run = '...', when = {...} }")
        _known_keys(item, {"run", "when"}, here)
        when = _when(item["when"], f"{here}.when", variants) if "when" in item else ALWAYS
        out.append(Step(item["run"], when))
    return tuple(out)


def _check_placeholders(recipe: Recipe) -> None:
    deps = {d.name for d in recipe.dependencies}
    fixed = {"prefix", "destdir", "jobs", "name", "version"}
    build = recipe.build
    groups: list[tuple[str, Iterable[str]]] = [
        (key, (s.text for s in getattr(build, key)))
        for key in ("configure_args", "make_args", "install_args", "commands", "post_install")
    ]
    groups.append(("env", build.env.values()))
    for key, texts in groups:
        for text in texts:
            for placeholder in PLACEHOLDER_RE.findall(text):
                parts = placeholder.split(".")
                ok = (
                    placeholder in fixed
                    or (parts[0] == "variants" and len(parts) == 2 and parts[1] in recipe.variants)
                    or (
                        parts[0] == "deps"
                        and len(parts) == 3
                        and parts[1] in deps
                        and parts[2] in ("prefix", "version")
                    )
                )
                if not ok:
                    raise _FieldError(
                        f"build.{key}",
                        f"unknown placeholder {{{placeholder}}} (known: prefix, destdir, jobs, "
                        "name, version, variants.NAME, deps.NAME.prefix, deps.NAME.version; "
                        "write {{ and }} for literal braces)",
                    )


# -- small checkers ------------------------------------------------------------


def _known_keys(table: Mapping[str, Any], known: set[str], where: str) -> None:
    for key in table:
        if key not in known:
            label = f"{where}.{key}" if where else str(key)
            raise _FieldError(label, f"unknown key (known: {', '.join(sorted(known))})")


def _string(table: Mapping[str, Any], key: str, where: str, *, required: bool = False) -> str:
    if key not in table:
        if required:
            raise _FieldError(where, "is required")
        return ""
    value = table[key]
    if not isinstance(value, str):
        raise _FieldError(where, f"expected a string, got {type(value).__name__}")
    if required and not value:
        raise _FieldError(where, "must not be empty")
    return value


def _string_list(raw: Any, where: str) -> list[str]:
    if not isinstance(raw, list) or not all(isinstance(x, str) and x for x in raw):
        raise _FieldError(where, "expected a list of non-empty strings")
    return list(raw)


def _names(mapping: Mapping[str, Any]) -> str:
    return ", ".join(sorted(mapping)) or "none"


def show_value(value: object) -> str:
    """A variant value as recipes and command lines write it (``true``, ``O2``)."""
    return str(value).lower() if isinstance(value, bool) else str(value)
