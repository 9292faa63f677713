"""What resolving paths inside the root costs the no-op fast path.

A no-op run is one lstat per managed file. This compares, in-process and in
CPU time (robust on a shared machine), the old ``os.lstat(ROOT + path)``
with ``RootFS.lstat(path)`` (a fresh RootFS each round, so that every
directory is resolved once, as in a run); then what resolving one directory
costs, RootFS's walk against one ``openat2(RESOLVE_IN_ROOT)`` call:

    PYTHONPATH=src python -m bench.rootfs --files 10000 --dirs 100 --rounds 9
"""

from __future__ import annotations

import argparse
import contextlib
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
        walk_vs_openat2(root, paths, args.rounds)
    finally:
        shutil.rmtree(root)


def walk_vs_openat2(root: str, paths: list[str], rounds: int) -> None:
    import ctypes

    class OpenHow(ctypes.Structure):
        _fields_ = [
            ("flags", ctypes.c_uint64),
            ("mode", ctypes.c_uint64),
            ("resolve", ctypes.c_uint64),
        ]

    libc = ctypes.CDLL(None, use_errno=True)
    resolve_in_root, no_magiclinks, sys_openat2 = 0x10, 0x02, 437  # x86_64
    how = OpenHow(os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC, 0, resolve_in_root | no_magiclinks)
    dirs = sorted({p.rpartition("/")[0] for p in paths})
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    walk, kernel = [], []
    try:
        for _ in range(rounds):
            fs = RootFS(root)
            start = time.process_time()
            for d in dirs:
                with contextlib.suppress(FileNotFoundError):
                    fs.lstat(f"{d}/none")  # resolves d, then one fstatat in it
                fs.changed_tree()  # forget: every directory resolved from the root
            walk.append(time.process_time() - start)
            fs.close()
            start = time.process_time()
            for d in dirs:
                fd = libc.syscall(
                    sys_openat2, rootfd, d.lstrip("/").encode(), ctypes.byref(how), 24
                )
                if fd < 0:
                    raise OSError(ctypes.get_errno(), "openat2")
                with contextlib.suppress(FileNotFoundError):
                    os.stat("none", dir_fd=fd, follow_symlinks=False)
                os.close(fd)
            kernel.append(time.process_time() - start)
    finally:
        os.close(rootfd)
    depth = dirs[0].count("/")
    for label, xs in (("RootFS walk + fstatat", walk), ("openat2 + fstatat", kernel)):
        per = min(xs) / len(dirs) * 1e6
        print(f"{label:24} per directory {depth} deep: {per:.1f} µs CPU (best of {rounds})")


if __name__ == "__main__":
    main()
