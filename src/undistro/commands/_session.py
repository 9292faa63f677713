"""What plan, apply, log and why share: the node, the root, the state, the policy."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from undistro.errors import UsageError

if TYPE_CHECKING:
    from undistro.engine import Engine
    from undistro.policy import Node, Policy
    from undistro.resources import ServiceControl
    from undistro.state import StateStore


def add_root_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--root",
        metavar="DIR",
        default="/",
        help="rebase every managed path, the node config and the state directory under DIR",
    )
    parser.add_argument(
        "--node-config",
        metavar="FILE",
        help="node config to read (default: ROOT/etc/undistro/node.toml, optional)",
    )
    parser.add_argument(
        "--state-dir",
        metavar="DIR",
        help="state directory (default: ROOT/var/lib/undistro, or the node config's state_dir)",
    )


def add_policy_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "policy_dir",
        nargs="?",
        metavar="POLICY_DIR",
        help="the policy directory (default: 'policy' from the node config)",
    )
    parser.add_argument(
        "--tag",
        action="append",
        default=[],
        metavar="TAG",
        help="add a node tag for this run (repeatable); selects [[apply]] rules",
    )
    add_root_options(parser)


class Session:
    def __init__(self, node: Node, root: str, state_dir: str, facts: dict[str, Any]) -> None:
        self.node = node
        self.root = root
        self.state_dir = state_dir
        self.facts = facts
        self._holds_run_lock = False

    def store(self) -> StateStore:
        from undistro.state import StateStore

        return StateStore(self.state_dir)

    def policy(self, policy_dir: str | None) -> Policy:
        from undistro.policy import load_policy

        chosen = policy_dir or self.node.policy
        if chosen is None:
            raise UsageError(
                "no POLICY_DIR given and the node config names none (set 'policy' in "
                f"{os.path.join(self.root, 'etc/undistro/node.toml')})"
            )
        policy = load_policy(chosen, self.node, self.facts, cache_dir=self.state_dir)
        # Here, before any supervisor is hosted or anything waits: a policy
        # that manages undistro's own state is invalid (exit 2, nothing done).
        # The engine checks it again for runs that do not come through here.
        from undistro.engine import check_reserved

        check_reserved(policy, self.root, self.state_dir)
        return policy

    def engine(self, policy: Policy, services: ServiceControl | None = None) -> Engine:
        from undistro.engine import Engine

        return Engine(
            policy,
            root=self.root,
            state=self.store(),
            facts=self.facts,
            services=services,
            take_run_lock=not self._holds_run_lock,
        )

    @contextlib.contextmanager
    def changing(self, *, wait: bool = True) -> Iterator[None]:
        """Hold the state directory's run lock for a run that changes the
        machine (engines made meanwhile do not take it again). If another
        process holds it, say once on stderr for whom this one waits, or,
        without ``wait``, raise RunLockedError naming it."""
        from undistro._runlock import run_lock

        def say(line: str) -> None:
            print(f"undistro: {line}", file=sys.stderr, flush=True)

        with run_lock(self.state_dir, wait=wait, on_wait=say):
            self._holds_run_lock = True
            try:
                yield
            finally:
                self._holds_run_lock = False


def open_session(args: argparse.Namespace) -> Session:
    from undistro.policy import load_node

    root = os.path.abspath(args.root)
    if not os.path.isdir(root):
        raise UsageError(f"--root {args.root}: not a directory")
    from undistro._rootfs import PathRefused, confined

    default_config = os.path.join(root, "etc/undistro/node.toml")
    if args.node_config is None and os.path.lexists(default_config):
        try:
            confined(root, default_config)  # never read through a link out of the root
        except PathRefused as exc:
            raise UsageError(f"node config: {exc}") from None
    node = load_node(root, args.node_config, getattr(args, "tag", ()))
    if args.state_dir:
        state_dir = os.path.abspath(args.state_dir)  # the caller's choice, wherever it is
    else:
        # A symlink such as ROOT/var -> /elsewhere must not put the store,
        # the run lock and the policy cache on the host: refused.
        try:
            state_dir = confined(root, os.path.join(root, node.state_dir.lstrip("/")))
        except PathRefused as exc:  # the --root given is unusable: a usage error
            raise UsageError(f"state directory: {exc}") from None
    return Session(node, root, os.path.abspath(state_dir), node.facts())
