"""What validation costs: a cold compile of a large policy, and how long
each hostile policy takes to be refused.

    PYTHONPATH=src python -m bench.policy_compile --resources 10000 --repeat 5

A cold compile (no cache) of N files in N/100 directories, CPU seconds
(process time: the machine is shared, wall time is noise), minimum of
--repeat runs; then the CPU and wall time of refusing a template bomb, a
spinning template (the 5 s limit), a 900-level nested array and a FIFO as a
policy file. Prints markdown.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from undistro.errors import PolicyError
from undistro.policy import load_node
from undistro.policy._loader import compile_policy


def _policy(top: Path, n: int) -> None:
    (top / "policy").mkdir(parents=True)
    (top / "templates").mkdir()
    (top / "undistro.toml").write_text('name = "bench"\n')
    out = []
    for d in range(max(1, n // 100)):
        out.append(f'[[directory]]\npath = "/srv/d{d}"\n')
        out += [
            f'[[file]]\npath = "/srv/d{d}/f{f}.conf"\ncontent = "x{f}"\nmode = "0644"\n'
            for f in range(100)
        ]
    (top / "policy/a.toml").write_text("".join(out))


HOSTILE = {
    "template `'a' * 10**12`": ("templates/t.j2", "{{ 'a' * 10**12 }}"),
    "spinning template (nested ranges)": (
        "templates/t.j2",
        "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    ),
    "900-level nested array": ("policy/a.toml", "x = " + "[" * 900 + "]" * 900),
    "FIFO as a policy file": ("policy/a.toml", None),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resources", type=int, default=10000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        node = load_node(tmp)
        facts = node.facts()
        big = Path(tmp) / "big"
        _policy(big, args.resources)
        cpu = []
        for _ in range(args.repeat):
            t = time.process_time()
            policy = compile_policy(str(big), node, facts)
            cpu.append(time.process_time() - t)
        print(f"| cold compile, {len(policy.resources)} resources | {min(cpu):.3f} s CPU | |")
        for i, (what, (rel, text)) in enumerate(HOSTILE.items()):
            top = Path(tmp) / f"h{i}"
            top.mkdir()
            (top / "undistro.toml").write_text('name = "h"\n')
            (top / "policy").mkdir()
            (top / "templates").mkdir()
            (top / "policy/a.toml").write_text('[[file]]\npath = "/t"\ntemplate = "t.j2"\n')
            if text is None:
                (top / rel).unlink()
                os.mkfifo(top / rel)
            else:
                (top / rel).write_text(text)
            t, w = time.process_time(), time.monotonic()
            try:
                compile_policy(str(top), node, facts)
                said = "loaded (!)"
            except PolicyError as exc:
                said = str(exc).splitlines()[0]
            c, w = time.process_time() - t, time.monotonic() - w
            print(f"| {what} | {c:.3f} s CPU, {w:.2f} s wall | `{said}` |")


if __name__ == "__main__":
    main()
