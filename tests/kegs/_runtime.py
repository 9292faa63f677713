"""The agent's runtime kegs, built once per checkout and reused.

The store lives under ``.cache/runtime-root`` (kegs built for their final
``/opt/undistro/store`` paths, like an image's): it is input-addressed, so
a second test — or a second run — finds every keg present and builds
nothing; only an edit of undistro's own tree rebuilds the small undistro
keg. The CPython build (~4-8 min on 2 cores) is paid by the first test of a
run that asks for it. tests/image/ uses the same helper.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.kegs._fetch import fetch_sources
from undistro.kegs import Builder, RecipeBook, SourceCache, Store, detect, parse_request, resolve
from undistro.kegs._closure import closure

REPO = Path(__file__).resolve().parents[2]
RUNTIME_RECIPES = REPO / "examples" / "runtime"
RUNTIME_ROOT = REPO / ".cache" / "runtime-root"
STORE = "/opt/undistro/store"


@dataclass(frozen=True)
class Runtime:
    root: Path  # the store is physically at root/opt/undistro/store
    entry: str  # the final path of bin/undistro
    kegs: dict[str, str]  # package name -> final store path
    closure: frozenset[str]  # base names of the runtime closure of the undistro keg
    seconds: float  # spent building in this process (0 when all were present)

    def physical(self, path: str) -> Path:
        return self.root / path.lstrip("/")


def build_runtime(tmp: Path) -> Runtime:
    """Fetch the runtime's sources, write undistro's own recipe and build
    the ``undistro`` keg with its whole closure into RUNTIME_ROOT."""
    cache = REPO / ".cache" / "sources"
    recipes = tmp / "self-recipes"
    fetch_sources(
        [str(REPO / "scripts" / "fetch-runtime-sources"), str(cache), str(recipes)],
        needed_by="the runtime build",
        timeout=900,
    )
    store = Store(STORE, root=str(RUNTIME_ROOT))
    builder = Builder(store, SourceCache(str(cache)), detect(), log_dir=str(tmp / "logs"))
    book = RecipeBook([str(RUNTIME_RECIPES), str(recipes)])
    resolution = resolve([parse_request("undistro")], book, detect())
    built = builder.build(resolution)
    kegs = {name: keg.path for name, keg in built.items()}
    physical_store = store.physical(STORE)
    found = closure(physical_store, [os.path.basename(kegs["undistro"])])
    return Runtime(
        RUNTIME_ROOT,
        f"{kegs['undistro']}/bin/undistro",
        kegs,
        frozenset(found),
        sum(k.seconds for k in built.values()),
    )


def closure_root(runtime: Runtime, dest: Path) -> Path:
    """A directory holding nothing but the runtime closure at its final
    paths: what an image's root has of the agent."""
    store = dest / STORE.lstrip("/")
    store.mkdir(parents=True)
    for name in sorted(runtime.closure):
        shutil.copytree(runtime.physical(f"{STORE}/{name}"), store / name, symlinks=True)
    return dest


def chroot_argv(root: Path, argv: list[str]) -> list[str]:
    """``argv`` chrooted into ``root`` with an empty environment, in its own
    mount and PID namespaces (a private /proc and /dev/null inside); the whole
    namespace dies with the returned command's process (--kill-child)."""
    (root / "proc").mkdir(exist_ok=True)
    (root / "dev").mkdir(exist_ok=True)
    (root / "dev/null").touch()
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"  # env -i has no PATH to find it
    # /proc and /dev/null as an image's PID 1 mounts them (the agent's
    # children get /dev/null as stdin); nothing else of the host.
    script = (
        'mount -t proc proc "$2/proc" && mount --bind /dev/null "$2/dev/null" && exec env -i "$@"'
    )
    unshare = ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--"]
    return [*unshare, "/bin/sh", "-c", script, "sh", chroot, str(root), *argv]


def in_chroot(
    root: Path, argv: list[str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` as :func:`chroot_argv` says and wait for it."""
    return subprocess.run(
        chroot_argv(root, argv),
        env={},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
