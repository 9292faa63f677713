"""What resolving paths inside the root costs the no-op fast path.

A no-op run is one lstat per managed file. This compares, in-process and in
CPU time (robust on a shared machine), the old ``os.lstat(ROOT + path)``
with ``RootFS.lstat(path)`` (a fresh RootFS each round, so that every
directory is resolved once, as in a run):

    PYTHONPATH=src python -m bench.rootfs --files 10000 --dirs 100 --rounds 9
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

from undistro._rootfs import RootFS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10000)
    parser.add_argument("--dirs", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-rootfs-")
    try:
        paths = [f"/data/d{i % args.dirs:03d}/f{i:05d}" for i in range(args.files)]
        for path in paths:
            os.makedirs(os.path.dirname(root + path), exist_ok=True)
            with open(root + path, "w") as f:
                f.write("x")
        full = [root + p for p in paths]
        plain, confined = [], []
        for _ in range(args.rounds):
            start = time.process_time()
            for p in full:
                os.lstat(p)
            plain.append(time.process_time() - start)
            fs = RootFS(root)
            start = time.process_time()
            for p in paths:
                fs.lstat(p)
            confined.append(time.process_time() - start)
            fs.close()
        for label, xs in (("os.lstat(ROOT + path)", plain), ("RootFS.lstat(path)", confined)):
            print(
                f"{label:24} {args.files} files in {args.dirs} dirs: "
                f"median {statistics.median(xs) * 1000:.1f} ms CPU, min {min(xs) * 1000:.1f} ms"
            )
    finally:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
