"""Unpacking a source tarball: the project's extractor against tarfile's own.

    PYTHONPATH=src .venv/bin/python bench/kegs_unpack.py --runs 5

Best of N for each example tarball in .cache/sources/debian (filled by
scripts/fetch-example-sources): ``extract_source`` (every member checked,
modes made sane, mtimes kept) and ``TarFile.extractall`` with no filter (what
Debian 12's python3 3.11.2 offers: no checks at all). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil
import tarfile
import tempfile
import time
from collections.abc import Callable

from undistro.kegs._tarsafe import extract_source


def best(runs: int, unpack: Callable[[str], None]) -> float:
    times = []
    for _ in range(runs):
        work = tempfile.mkdtemp()
        try:
            started = time.perf_counter()
            unpack(os.path.join(work, "src"))
            times.append(time.perf_counter() - started)
        finally:
            shutil.rmtree(work)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", default=".cache/sources/debian")
    args = parser.parse_args()
    print("| tarball | members | extract_source | tarfile.extractall |")
    print("| --- | --- | --- | --- |")
    for path in sorted(glob.glob(os.path.join(args.dir, "*.orig.tar.*"))):
        with tarfile.open(path) as tar:
            members = len(tar.getmembers())

        def plain(dest: str, path: str = path) -> None:
            with tarfile.open(path) as tar:
                tar.extractall(dest)  # the unchecked baseline

        def checked(dest: str, path: str = path) -> None:
            extract_source(path, dest, path)

        ours = best(args.runs, checked)
        theirs = best(args.runs, plain)
        name = os.path.basename(path)
        print(f"| {name} | {members} | {ours * 1000:.0f} ms | {theirs * 1000:.0f} ms |")


if __name__ == "__main__":
    main()
