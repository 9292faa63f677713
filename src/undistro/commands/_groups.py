"""Sub-command groups (``undistro keg build``, ``undistro keg pack``) that
several command modules add verbs to: the first module to ask creates the
group, the others extend it, so no module owns another's verbs."""

from __future__ import annotations

import argparse
from typing import Any


def command_group(sub: Any, name: str, help: str, description: str) -> Any:
    """The sub-parsers action of the ``name`` group, created on first use."""
    parser: argparse.ArgumentParser | None = sub.choices.get(name)
    if parser is None:
        parser = sub.add_parser(
            name,
            help=help,
            description=description,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        group = parser.add_subparsers(dest=f"{name}_verb", metavar="VERB")
        usage = parser

        def show_help(_args: argparse.Namespace) -> int:
            usage.print_help()
            return 2

        parser.set_defaults(func=show_help)
        return group
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    raise RuntimeError(f"'{name}' is a command, not a command group")
