"""The agent's runtime kegs: build time, closure size, startup in the keg.

    PYTHONPATH=src python bench/image_runtime.py [--cold] [--runs 10]

Builds (or finds) the ``undistro`` keg and its closure in
``.cache/runtime-root`` (what tests/kegs/test_runtime.py uses); ``--cold``
builds everything again into a fresh temp root first and reports that time,
then the warm one (the same request against the filled store). Then copies
the closure alone into a temp root and, chrooted there (nothing else in the
root), times the keg python's ``-I -c pass``, ``-I -c 'import asyncio'`` and
``bin/undistro --version`` (medians of ``--runs``, timed by the keg python
itself, with the children's peak RSS). Prints Markdown for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO))

from tests.kegs import _runtime  # noqa: E402

from undistro.kegs import make_writable  # noqa: E402

# (stdout to a pipe: the closure-only root has no /dev/null)
_TIMER = """
import json, resource, statistics, subprocess, sys, time
runs = int(sys.argv[1]); out = {}
for label, argv in json.loads(sys.argv[2]).items():
    times = []
    for _ in range(runs):
        t = time.perf_counter(); subprocess.run(argv, check=True, stdout=subprocess.PIPE)
        times.append(time.perf_counter() - t)
    out[label] = [statistics.median(times) * 1000,
                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024]
print(json.dumps(out))
"""


def closure_stats(root: Path) -> tuple[int, int, int]:
    """Bytes, files and executables (ELF or #! with an x bit) under root."""
    size = files = executables = 0
    for dirpath, _dirs, names in os.walk(root):
        for name in names:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode):
                continue
            size += st.st_size
            files += 1
            if st.st_mode & 0o111:
                with open(path, "rb") as f:
                    head = f.read(4)
                if head == b"\x7fELF" or head[:2] == b"#!":
                    executables += 1
    return size, files, executables


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cold", action="store_true", help="also time a build into a fresh root")
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-runtime-"))
    try:
        if args.cold:
            _runtime.RUNTIME_ROOT = tmp / "cold-root"
            started = time.monotonic()
            _runtime.build_runtime(tmp / "cold")
            print(f"cold build: {time.monotonic() - started:.0f} s")
            started = time.monotonic()
            _runtime.build_runtime(tmp / "warm")
            print(f"warm build (all present): {time.monotonic() - started:.1f} s")
        runtime = _runtime.build_runtime(tmp / "b")
        root = _runtime.closure_root(runtime, tmp / "root")
        size, files, executables = closure_stats(root)
        print(
            f"closure: {len(runtime.closure)} kegs, {size} bytes, {files} files, "
            f"{executables} executables"
        )
        for name in sorted(runtime.closure):
            keg_size, keg_files, _ = closure_stats(root / "opt/undistro/store" / name)
            print(f"  {name}: {keg_size / 1e6:.1f} MB, {keg_files} files")
        python = f"{runtime.kegs['python']}/bin/python3.11"
        argvs = {
            "python -I -c pass": [python, "-I", "-c", "pass"],
            "python -I -c 'import asyncio'": [python, "-I", "-c", "import asyncio"],
            "undistro --version": [runtime.entry, "--version"],
        }
        proc = _runtime.in_chroot(
            root, [python, "-I", "-c", _TIMER, str(args.runs), json.dumps(argvs)], timeout=600
        )
        if proc.returncode != 0:
            sys.exit(f"bench: the timer failed in the chroot: {proc.stderr.strip()}")
        for label, (ms, rss) in json.loads(proc.stdout).items():
            print(f"{label}: median {ms:.1f} ms (peak RSS so far {rss:.1f} MB)")
        # The same timer on the host's Debian python3, side by side (same load).
        host = {
            "Debian python3 -I -c pass": ["/usr/bin/python3", "-I", "-c", "pass"],
            "Debian python3 -I -c 'import asyncio'": [
                "/usr/bin/python3",
                "-I",
                "-c",
                "import asyncio",
            ],
        }
        proc = subprocess.run(
            ["/usr/bin/python3", "-I", "-c", _TIMER, str(args.runs), json.dumps(host)],
            capture_output=True,
            text=True,
            check=True,
        )
        for label, (ms, rss) in json.loads(proc.stdout).items():
            print(f"{label}: median {ms:.1f} ms (peak RSS so far {rss:.1f} MB)")
        print(f"load: {os.getloadavg()[0]:.2f}")
    finally:
        for path in tmp.rglob("opt"):
            make_writable(str(path))
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
