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
undistro converges a machine on a declarative policy: files, directories,
links, users, groups and commands (and, as they land, services and kegs).

  undistro plan  examples/demo --root /tmp/r    show what would change
  undistro apply examples/demo --root /tmp/r    make it so, atomically
  undistro log   --root /tmp/r                  who changed what, when, why
  undistro why   /etc/motd --root /tmp/r        which resource owns a path

Run 'undistro COMMAND --help' for each command's options and examples.
Exit status: 0 all promises kept or repaired, 1 a promise failed,
2 the policy or the command line is invalid (nothing was changed).
"""


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser for ``command`` only, or for every command (``--help``).

    Building a sub-parser costs argparse several gettext look-ups, each a
    handful of failing ``stat`` calls: building all of them made up a third
    of a no-op apply's start-up syscalls. A run builds only its own.
    """
    parser = argparse.ArgumentParser(
        prog="undistro",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    modules = [import_module(name) for name in COMMAND_MODULES]
    chosen = [m for m in modules if command in m.COMMANDS] or modules
    for module in chosen:
        module.register(sub)
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
