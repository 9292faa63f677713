"""Build time per example recipe, and store size against Debian's packages.

    PYTHONPATH=src python bench/kegs_build.py --runs 3

Each run builds every example into a fresh store (from the verified source
cache that scripts/fetch-example-sources fills), so a dependency (zlib for
pngcheck) is built again inside pngcheck's run, as a user would see it. Sizes
are the bytes of the keg's files (``du --apparent-size``-style) next to the
``Installed-Size`` dpkg records for the Debian packages that ship the same
software, runtime only and runtime + development files (a keg carries both).
Prints a Markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from undistro.kegs import (
    Builder,
    RecipeBook,
    SourceCache,
    Store,
    detect,
    make_writable,
    parse_request,
    resolve,
)

REPO = Path(__file__).resolve().parents[1]
# request -> (Debian runtime packages, Debian development packages)
EXAMPLES = {
    "hello": (["hello"], []),
    "zlib": (["zlib1g"], ["zlib1g-dev"]),
    "lua@5.3": (["lua5.3", "liblua5.3-0"], ["liblua5.3-dev"]),
    "lua@5.4": (["lua5.4", "liblua5.4-0"], ["liblua5.4-dev"]),
    "pngcheck": (["pngcheck", "zlib1g"], ["zlib1g-dev"]),
}


def tree_bytes(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def installed_kib(packages: list[str]) -> int:
    out = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(
        int(line.split()[1]) for line in out.splitlines() if line.startswith("Installed-Size:")
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--cache", default=str(REPO / ".cache" / "sources"))
    args = parser.parse_args()
    platform = detect()
    book = RecipeBook([str(REPO / "examples" / "recipes")])
    times: dict[str, list[float]] = {r: [] for r in EXAMPLES}
    sizes: dict[str, int] = {}
    noop: list[float] = []
    for _ in range(args.runs):
        base = tempfile.mkdtemp(prefix="undistro-bench-")
        try:
            store = Store(f"{base}/store")
            builder = Builder(store, SourceCache(args.cache), platform, log_dir=f"{base}/logs")
            for request in EXAMPLES:
                # a fresh store per request: each figure includes its dependencies
                for entry in store.entries():
                    make_writable(store.physical(entry))
                    shutil.rmtree(store.physical(entry))
                resolution = resolve([parse_request(request)], book, platform)
                started = time.perf_counter()
                built = builder.build(resolution)
                times[request].append(time.perf_counter() - started)
                root = built[resolution.roots[0]]
                sizes[request] = sum(tree_bytes(store.physical(k.path)) for k in built.values())
                started = time.perf_counter()
                resolution = resolve([parse_request(request)], book, platform)
                again = builder.build(resolution)
                noop.append(time.perf_counter() - started)
                assert not any(k.built for k in again.values()), root
        finally:
            make_writable(base)
            shutil.rmtree(base)
    print(f"runs: {args.runs}, cores: {os.cpu_count()}, jobs: {os.cpu_count()}\n")
    print("| example | build (median s) | keg files | Debian runtime | Debian runtime + dev |")
    print("|---|---:|---:|---:|---:|")
    for request, (runtime, dev) in EXAMPLES.items():
        keg_kib = sizes[request] / 1024
        deb = installed_kib(runtime)
        deb_dev = installed_kib(runtime + dev)
        print(
            f"| {request} | {statistics.median(times[request]):.1f} | {keg_kib:.0f} KiB | "
            f"{deb} KiB ({keg_kib / deb:.2f}x) | {deb_dev} KiB ({keg_kib / deb_dev:.2f}x) |"
        )
    noop_ms = statistics.median(noop) * 1000
    print(f"\nalready built (resolve + hash + store check): median {noop_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
