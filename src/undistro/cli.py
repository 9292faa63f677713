"""The ``undistro`` command line: parses, calls, prints.

Each area registers its sub-commands from a small module listed in
``COMMAND_MODULES``; those modules import their heavy machinery only inside
the command functions, so ``undistro --help`` and a no-op ``apply`` stay cheap.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib import import_module

from undistro.errors import UndistroError

COMMAND_MODULES = [
    "undistro.commands.core",
    "undistro.commands.agent",
    "undistro.commands.kegs",
    "undistro.commands.gen",
    "undistro.commands.services",
    "undistro.commands.fleet",
]

DESCRIPTION = """\
undistro is one lean agent per machine: its configuration manager, its
service supervisor and its packager. A policy -- a directory of TOML
resources (files, users, services, kegs, ...) and templates -- says what must
be true; undistro validates all of it, changes only what differs, writes
atomically, journals who changed what and why, and with 'undistro agent'
keeps it true by repairing drift as events report it. The commands that
touch a machine take --root DIR to work on a scratch root instead.
"""

EPILOG = """\
examples:
  undistro plan  examples/demo --root /tmp/r   show what would change, with diffs
  undistro agent examples/demo --root /tmp/r   converge, then repair every drift as it happens

Run 'undistro COMMAND --help' for each command's options and examples.
Exit status: 0 all promises kept or repaired, 1 a promise failed,
2 the policy or the command line is invalid (nothing was changed).
"""

# The headings of the top-level help, by the module that registers the
# commands. A module not named here lands under "more commands".
TITLES = {
    "undistro.commands.core": "converge a machine on a policy",
    "undistro.commands.agent": "keep it converged",
    "undistro.commands.services": "services",
    "undistro.commands.kegs": "software: kegs and generations",
    "undistro.commands.gen": "software: kegs and generations",
    "undistro.commands.fleet": "the fleet: machines that gossip, no control node",
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` only, or for every command (``--help``).

    Building a sub-parser costs argparse several gettext look-ups, each a
    handful of failing ``stat`` calls: building all of them made up a third
    of a no-op apply's start-up syscalls. A run builds only its own.
    """
    parser = argparse.ArgumentParser(
        prog="undistro",
        usage="undistro [--version] COMMAND [ARGS...]",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    # The flat list argparse would print is replaced by the grouped one.
    sub = parser.add_subparsers(
        prog="undistro", dest="command", metavar="COMMAND", help=argparse.SUPPRESS
    )
    modules = [import_module(name) for name in COMMAND_MODULES]
    chosen = [m for m in modules if command in m.COMMANDS] or modules
    groups: dict[str, list[tuple[str, str]]] = {}
    for module in chosen:
        before = len(sub._choices_actions)
        module.register(sub)
        title = TITLES.get(module.__name__, "more commands")
        for action in sub._choices_actions[before:]:
            groups.setdefault(title, []).append((action.dest, action.help or ""))
    width = max((len(name) for commands in groups.values() for name, _ in commands), default=0)
    parser.description = DESCRIPTION + "".join(
        f"\n{title}:\n" + "".join(f"  {name:<{width}}  {text}\n" for name, text in commands)
        for title, commands in groups.items()
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv and not argv[0].startswith("-") else None)
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help()
        return 2
    try:
        code: int = func(args)
    except UndistroError as exc:
        for line in str(exc).splitlines() or [type(exc).__name__]:
            print(f"undistro: {line}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("undistro: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 141
    return code


def _version() -> str:
    from undistro import __version__

    return f"undistro {__version__}"


if __name__ == "__main__":
    sys.exit(main())
