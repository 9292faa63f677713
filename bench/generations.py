"""Generations and artifacts: how long a switch, a rollback, a pack and an
install take.

    PYTHONPATH=src python bench/generations.py [--runs 200] [--rounds 5]

Synthetic kegs (so the figures do not depend on a compiler): 20 kegs, each
with bin/, lib/, include/, share/man/man1/ and share/doc/<name>/, so the
profile tree has both merged directories and collapsed ones, as real kegs
give. The artifact keg holds ~4 MB: 1 MB of random bytes and 3 MB of text.
Everything runs in a fresh temp directory used as --root. Each figure is
the median of --runs timings (pack and install: of 5); the whole is
repeated --rounds times and the median and range of those are printed,
because wall time on a shared 2-core VM swings with its load.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from undistro.kegs.artifacts import generate_keypair, install, load_public_key, pack
from undistro.kegs.generations import DEFAULT_PROFILE, Profile, store_of

STORE = "/opt/undistro/store"


def make_keg(
    root: str, name: str, version: str, files: dict[str, bytes], *, record: bool = True
) -> str:
    import base64
    import hashlib

    h = base64.b32encode(hashlib.sha256(f"{name}-{version}".encode()).digest()).decode()
    h = h.lower()[:32]
    path = os.path.join(store_of(root), f"{h}-{name}-{version}")
    for rel, data in files.items():
        full = os.path.join(path, rel)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "wb") as f:
            f.write(data)
    meta = {"name": name, "version": version, "hash": h, "recipe_hash": "", "run_deps": []}
    if record:
        meta["references"] = []
    with open(os.path.join(path, ".keg.json"), "w") as f:
        json.dump(meta, f)
    return path


def typical_files(name: str) -> dict[str, bytes]:
    files = {f"bin/{name}{i}": b"\x7fELF" + os.urandom(2000) for i in range(3)}
    files.update({f"lib/lib{name}{i}.so": os.urandom(4000) for i in range(5)})
    files.update({f"include/{name}/{i}.h": b"int x;\n" * 50 for i in range(3)})
    files[f"share/man/man1/{name}.1"] = b".TH X 1\n" * 100
    files[f"share/doc/{name}/README"] = b"read me\n" * 100
    return files


def median_ms(
    fn: Callable[[], object], runs: int, before: Callable[[], object] = lambda: None
) -> tuple[float, float]:
    """Median wall and CPU (user + system) milliseconds of ``fn``; CPU time
    shows what the work costs when other jobs share the cores."""
    wall, cpu = [], []
    for _ in range(runs):
        before()
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t) * 1000)
        cpu.append((time.process_time() - c) * 1000)
    return statistics.median(wall), statistics.median(cpu)


def bench_generations(
    root: str, runs: int, *, record: bool = True
) -> dict[str, tuple[float, float]]:
    names = [f"pkg{i:02d}" for i in range(20)]
    kegs = [make_keg(root, n, "1.0", typical_files(n), record=record) for n in names]
    alt = make_keg(root, "pkg00", "1.1", typical_files("pkg00"), record=record)
    set_a, set_b = kegs, [alt, *kegs[1:]]
    profile = Profile(os.path.join(root, DEFAULT_PROFILE.lstrip("/")), root=root)
    profile.build_and_switch(set_a)
    profile.build_and_switch(set_b)
    flip = [set_a, set_b]

    def build() -> None:
        flip.reverse()
        profile.build_and_switch(flip[0])

    results = {"build_and_switch": median_ms(build, max(runs // 4, 20))}
    latest = max(profile.numbers())
    results["switch"] = median_ms(
        lambda: profile.switch(latest - 1), runs, lambda: profile.switch(latest)
    )
    results["rollback"] = median_ms(profile.rollback, runs, lambda: profile.switch(latest))
    return results


def bench_artifacts(base: str) -> dict[str, float]:
    src = os.path.join(base, "src-root")
    text = b"".join(b"line %d of a man page or a header file\n" % i for i in range(80000))
    keg = make_keg(src, "big", "1.0", {"lib/libbig.so": os.urandom(1 << 20), "share/big.txt": text})
    key = os.path.join(base, "bench.key")
    generate_keypair(key)
    trusted = {load_public_key(f"{key}.pub")}
    cache = os.path.join(base, "cache")
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(keg) for f in fs)
    packs = []
    for _ in range(5):
        t = time.perf_counter()
        packed = pack([keg], key, cache)[0]
        packs.append((time.perf_counter() - t) * 1000)
    installs = []
    for i in range(5):
        store = store_of(os.path.join(base, f"dst{i}"))
        t = time.perf_counter()
        install("big", cache, store, trusted)
        installs.append((time.perf_counter() - t) * 1000)
    return {
        "keg_mb": size / 1e6,
        "artifact_mb": packed.size / 1e6,
        "pack": statistics.median(packs),
        "install": statistics.median(installs),
    }


def one_round(runs: int) -> dict[str, tuple[float, float]]:
    """Every figure once, in a fresh temp root: label → (wall ms, CPU ms)."""
    base = tempfile.mkdtemp(prefix="undistro-bench-gen-")
    try:
        g = bench_generations(os.path.join(base, "root"), runs)
        scan = bench_generations(os.path.join(base, "scan"), runs, record=False)
        a = bench_artifacts(base)
    finally:
        for dirpath, dirnames, _ in os.walk(base):
            for d in dirnames:
                os.chmod(os.path.join(dirpath, d), 0o700)
        shutil.rmtree(base)
    return {
        "build generation N+1 aside + switch": g["build_and_switch"],
        "same, kegs without recorded references (scanned)": scan["build_and_switch"],
        "switch to an existing generation": g["switch"],
        "rollback": g["rollback"],
        f"pack {a['keg_mb']:.1f} MB keg -> {a['artifact_mb']:.2f} MB .tar.zst": (a["pack"], 0.0),
        "install it (verify, hash, extract, check, seal, rename)": (a["install"], 0.0),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per figure")
    parser.add_argument("--rounds", type=int, default=5, help="fresh repetitions of it all")
    args = parser.parse_args()
    loads, rounds = [], []
    for _ in range(args.rounds):
        rounds.append(one_round(args.runs))
        loads.append(os.getloadavg()[0])
    print(
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores, runs={args.runs},"
        f" rounds={args.rounds}, load average {min(loads):.1f}-{max(loads):.1f}"
    )
    print("| operation (generation of 20 kegs) | wall: median of rounds (range) | CPU |")
    print("|---|---|---|")
    for label in rounds[0]:
        walls = [r[label][0] for r in rounds]
        cpus = [r[label][1] for r in rounds]
        cpu = f"{statistics.median(cpus):.2f} ms" if any(cpus) else "-"
        print(
            f"| {label} | {statistics.median(walls):.2f} ms"
            f" ({min(walls):.2f}-{max(walls):.2f}) | {cpu} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
