"""Compile the policy into its cache in a child process.

    python -m undistro.agent._compile '{"policy_dir": ..., "root": ..., ...}'

The agent compiles a changed policy beside its passes, so other threads are
running when it starts the compile. A ``fork()`` of the agent would copy the
locks those threads hold (stderr's buffer, a module being imported) into a
child that may then wait on them for ever. The child is therefore forked by
the agent's zygote (``_zygote``: forked while the agent had one thread, with
undistro already imported — ~0.015 CPU-s for a small policy instead of
~0.08 for a fresh interpreter), or, without one, a fork+exec of this module.
It prints the problems as one JSON list (empty: the compiled policy is in
the cache for the agent to load) and caps its own memory first, so a
template bomb ends as a MemoryError there, not in the agent.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

from undistro.agent import _zygote
from undistro.errors import ApplyError


class ChildTimeout(ApplyError, TimeoutError):
    """The compile ran past its deadline and was killed."""


def compile_policy(
    policy_dir: str,
    *,
    root: str,
    state_dir: str,
    node_config: str | None,
    tags: Sequence[str],
    deadline: float,
    memory: int,
    started: Callable[[int], None],
    ended: Callable[[int], None],
) -> list[str]:
    """The policy's problems (empty: compiled into the cache of ``state_dir``).

    Raises ChildTimeout past ``deadline`` seconds (the child is killed), and
    ApplyError if the child died. ``started``/``ended`` are told its pid, so
    that the agent may kill it on SIGTERM.
    """
    spec = {
        "policy_dir": policy_dir,
        "root": root,
        "state_dir": state_dir,
        "node_config": node_config,
        "tags": list(tags),
        "memory": memory,
        "deadline": deadline,
        "parent": os.getpid(),
    }
    try:
        done = _zygote.run_module(
            "undistro.agent._compile",
            [json.dumps(spec)],
            name="compile-policy",
            timeout=deadline,
            started=started,
            ended=ended,
        )
    except TimeoutError:
        raise ChildTimeout(f"compiling the policy took more than {deadline:g} s (killed)") from None
    if done.status != 0:
        last = done.err.decode(errors="replace").strip().splitlines()[-1:] or ["no message"]
        raise ApplyError(f"policy compile died (exit status {done.status}): {last[0]}")
    problems: Any = json.loads(done.out)
    return [str(p) for p in problems]


def main() -> int:
    spec = json.loads(sys.argv[1])
    if not _zygote.in_worker():  # a worker dies with the zygote, which dies with the agent
        _zygote.die_with(spec["parent"])
    # The parent kills us at the deadline; if it was killed itself, this does.
    signal.alarm(int(spec["deadline"]) + 5)
    limit_memory(spec["memory"])
    from undistro.errors import PolicyError
    from undistro.policy import load_node, load_policy

    try:
        node = load_node(spec["root"], spec["node_config"], spec["tags"])
        load_policy(spec["policy_dir"], node, node.facts(), cache_dir=spec["state_dir"])
        problems: list[str] = []
    except PolicyError as exc:
        problems = exc.problems
    except Exception as exc:  # MemoryError, RecursionError, a bug: still one line
        text = " ".join(str(exc).split())[:200]
        name = type(exc).__name__
        problems = [
            f"{spec['policy_dir']}: {name}: {text}" if text else f"{spec['policy_dir']}: {name}"
        ]
    sys.stdout.write(json.dumps(problems))
    return 0


def limit_memory(extra: int) -> None:
    """Cap the address space at what the child maps now plus ``extra``."""
    import resource

    with open("/proc/self/statm", "rb") as f:
        mapped = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    limit = mapped + extra
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


if __name__ == "__main__":
    raise SystemExit(main())
