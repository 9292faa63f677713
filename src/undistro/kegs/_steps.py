"""Build steps: the templates of the common build systems, filled in.

A recipe names a ``system`` and adds arguments, or gives explicit commands.
Placeholders (``{prefix}``, ``{destdir}``, ``{jobs}``, ``{name}``,
``{version}``, ``{variants.NAME}``, ``{deps.NAME.prefix}``,
``{deps.NAME.version}``) are replaced by values that never need shell
quoting (store paths and variant values are checked for that), so a recipe
can write ``CFLAGS="-I{deps.zlib.prefix}/include"`` naturally.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping, Sequence

from undistro.errors import BuildError
from undistro.kegs._platform import Platform
from undistro.kegs._recipe import PLACEHOLDER_RE, BuildSpec, Step, VariantValue

# Each template: (phase, command); {args:KEY} takes the recipe's list KEY.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "autotools": (
        "./configure --prefix={prefix} {args:configure_args}",
        "make -j{jobs} {args:make_args}",
        "make install DESTDIR={destdir} {args:install_args}",
    ),
    "cmake": (
        "cmake -S . -B _build -DCMAKE_INSTALL_PREFIX={prefix} -DCMAKE_BUILD_TYPE=Release"
        " -DCMAKE_INSTALL_RPATH={prefix}/lib -DCMAKE_INSTALL_RPATH_USE_LINK_PATH=ON"
        " {args:configure_args}",
        "cmake --build _build -j {jobs} {args:make_args}",
        "DESTDIR={destdir} cmake --install _build {args:install_args}",
    ),
    "meson": (
        "meson setup _build --prefix={prefix} --buildtype=release {args:configure_args}",
        "meson compile -C _build -j {jobs} {args:make_args}",
        "DESTDIR={destdir} meson install -C _build {args:install_args}",
    ),
    "make": (
        "make -j{jobs} PREFIX={prefix} {args:make_args}",
        "make install PREFIX={prefix} DESTDIR={destdir} {args:install_args}",
    ),
    "commands": ("{args:commands}",),
}


def substitute(text: str, values: Mapping[str, str], where: str) -> str:
    """Replace ``{placeholder}``s; ``{{`` and ``}}`` are literal braces."""

    def one(match: object) -> str:
        key: str = match.group(1)  # type: ignore[attr-defined]
        if key not in values:
            raise BuildError(
                f"{where}: {{{key}}} has no value here (a dependency skipped by when?)"
            )
        return values[key]

    parts = text.split("{{")
    out = []
    for part in parts:
        pieces = part.split("}}")
        out.append("}".join(PLACEHOLDER_RE.sub(one, p) for p in pieces))
    return "{".join(out)


def render(
    build: BuildSpec,
    values: Mapping[str, str],
    platform: Platform,
    variants: Mapping[str, VariantValue],
    where: str,
) -> list[str]:
    """The shell commands of a build, in order."""

    def kept(steps: Sequence[Step]) -> list[str]:
        return [
            substitute(s.text, values, where) for s in steps if s.when.holds(platform, variants)
        ]

    commands: list[str] = []
    for template in TEMPLATES[build.system]:
        if template == "{args:commands}":
            commands.extend(kept(build.commands))
            continue
        head, _, rest = template.partition("{args:")
        key, _, tail = rest.partition("}")
        args = " ".join(shlex.quote(a) for a in kept(getattr(build, key)))
        line = substitute(head, values, where) + args + substitute(tail, values, where)
        commands.append(line.rstrip())
    commands.extend(kept(build.post_install))
    return commands
